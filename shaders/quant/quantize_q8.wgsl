// Activations quantized to 8 bits per 32-value unit, as llama.cpp's quantize_row_q8_1 does before its
// integer-dot matrix-vector products: d = amax / 127, q = round(x * 127 / amax) (WGSL's round, ties to
// even), and s = d * sum(q), the term the formats with an offset or a zero point need. Each unit takes 12
// words, three vec4s: the 32 codes as 8 words of 4 signed bytes (values 0-15, then 16-31), then d and s as
// f32 bits and two zero words, so that qmatvec_q8 reads a unit in three aligned 16-byte loads.
//
// One invocation per unit; x is [rows][k] with k a multiple of 32, so unit i is values 32i .. 32i + 31
// whatever the row.
#import invocation

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
    var amax = vec4<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
        v[j] = x[8u * i + j];
        amax = max(amax, abs(v[j]));
    }
    let m = max(max(amax.x, amax.y), max(amax.z, amax.w));
    // An all-zero unit gets d = 0 and codes 0 (no division by zero).
    let d = m / 127.0;
    let id = select(0.0, 127.0 / m, m > 0.0);
    var codes: array<u32, 8>;
    var total = vec4<i32>(0);
    for (var j = 0u; j < 8u; j++) {
        let c = vec4<i32>(round(v[j] * id));
        total += c;
        codes[j] = pack4xI8(c);
    }
    let s = d * f32(total.x + total.y + total.z + total.w);
    q[3u * i] = vec4<u32>(codes[0], codes[1], codes[2], codes[3]);
    q[3u * i + 1u] = vec4<u32>(codes[4], codes[5], codes[6], codes[7]);
    q[3u * i + 2u] = vec4<u32>(bitcast<u32>(d), bitcast<u32>(s), 0u, 0u);
}
