// Recomputes the L2 distance of each chosen (query, codeword) pair directly, sum((x - c)^2), in place of
// the expansion |x|^2 + |c|^2 - 2 x.c that ranked them: the expansion loses digits to cancellation when a
// distance is small next to the norms (a close match of a bright image patch), the direct sum does not.
// One invocation per (query, rank); a codebook in chunks is refined chunk by chunk, each launch taking
// the ids in its range.
#import invocation

struct Params {
    nq: u32,
    k: u32,
    d: u32,
    x_stride: u32,
    x_offset: u32,
    code_base: u32,
    n_codes: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<ELEM>;
@group(0) @binding(3) var<storage, read> idx: array<u32>;
@group(0) @binding(4) var<storage, read_write> dist: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let e = linear_workgroup(inv) * WG + inv.lid;
    if (e >= params.nq * params.k) {
        return;
    }
    let id = idx[e];
    if (id < params.code_base || id - params.code_base >= params.n_codes) {
        return;
    }
    let row = (e / params.k) * params.x_stride + params.x_offset;
    let code = (id - params.code_base) * params.d;
    var s = 0.0;
    for (var i = 0u; i < params.d; i++) {
        let t = x[row + i] - f32(codes[code + i]);
        s += t * t;
    }
    dist[e] = s;
}
