// Squared L2 norm of each row of a [rows][d] matrix read with a row stride and a column offset (a whole
// codebook, or one subspace of it for product quantization), summed in f32 in index order.
#import invocation

struct Params {
    rows: u32,
    d: u32,
    stride: u32,
    offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<ELEM>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let r = linear_workgroup(inv) * WG + inv.lid;
    if (r >= params.rows) {
        return;
    }
    let row = r * params.stride + params.offset;
    var s = 0.0;
    for (var i = 0u; i < params.d; i++) {
        let v = f32(x[row + i]);
        s += v * v;
    }
    out[r] = s;
}
