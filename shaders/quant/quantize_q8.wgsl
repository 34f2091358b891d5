// Activations quantized to 8 bits per 32-value unit (the layout and rounding are q8_unit's, in
// shaders/common/q8.wgsl), as llama.cpp's CPU back end quantizes them before its integer-dot
// matrix-vector products.
//
// One invocation per unit; x is [rows][k] with k a multiple of 32, so unit i is values 32i .. 32i + 31
// whatever the row.
#import invocation
#import q8

struct Params {
    units: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> q: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = linear_workgroup(inv) * WG + inv.lid;
    if (i >= params.units) {
        return;
    }
    var v: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        v[j] = x[8u * i + j];
    }
    let u = q8_unit(v);
    for (var j = 0u; j < 3u; j++) {
        q[3u * i + j] = u[j];
    }
}
