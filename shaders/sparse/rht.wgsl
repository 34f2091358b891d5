// y[row] = V x[row] for V = (H_a ⊗ C_b) S, the incoherence transform of wring_quant::rht: S the sign bits
// `signs` (a set bit negates a column), C_b the orthonormal DCT-II matrix `dct` [b][b] (from the host, so
// this kernel and the CPU use the same values), H_a the Walsh-Hadamard matrix scaled by 1/sqrt(a).
// Element i of a row is (i_a, i_b) with i = i_a b + i_b.
//
// One workgroup per (i_b, row): it mixes each of the a blocks of b columns into entry i_b of the block
// (C_b's row i_b, summed in order j_b), then runs the Walsh-Hadamard butterflies over those a values in
// workgroup memory (strides 1, 2, 4, ...), and writes them, scaled, to the row's entries (i_a, i_b).
#import invocation
#import fwht

struct Params {
    n: u32,
    a: u32,
    b: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> signs: array<u32>;
@group(0) @binding(3) var<storage, read> dct: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> fwht_buf: array<f32, MAX_A>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let ib = inv.wid.x;
    let row = inv.wid.y;
    let a = params.a;
    let b = params.b;
    let base = row * params.n;
    for (var ja = inv.lid; ja < a; ja += WG) {
        var s = 0.0;
        for (var jb = 0u; jb < b; jb++) {
            let j = ja * b + jb;
            let neg = ((signs[j / 32u] >> (j % 32u)) & 1u) == 1u;
            s += dct[ib * b + jb] * select(x[base + j], -x[base + j], neg);
        }
        fwht_buf[ja] = s;
    }
    workgroupBarrier();
    fwht_workgroup(a, inv.lid);
    let scale = 1.0 / sqrt(f32(a));
    for (var ia = inv.lid; ia < a; ia += WG) {
        y[base + ia * b + ib] = fwht_buf[ia] * scale;
    }
}
