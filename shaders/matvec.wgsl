// y[row] = sum_k w[row][k] * x[k] for a row-major w of n rows by k columns (ggml's weight layout: one row
// per output feature). One workgroup handles ROWS rows: every invocation accumulates a strided slice of k
// for each row, then the workgroup reduces (subgroup or shared memory, per variant). Accumulation is in f32
// whatever ELEM is.
#import reduce

struct Params {
    n: u32,
    k: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<ELEM>;
@group(0) @binding(2) var<storage, read> x: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = linear_workgroup(inv) * ROWS;
    var sums: array<f32, ROWS>;
    for (var k = inv.lid; k < params.k; k += WG) {
        let xv = f32(x[k]);
        for (var r = 0u; r < ROWS; r++) {
            let row = row0 + r;
            if (row < params.n) {
                sums[r] += f32(w[row * params.k + k]) * xv;
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let total = reduce_sum(sums[r], inv);
        if (inv.lid == 0u && row0 + r < params.n) {
            y[row0 + r] = total;
        }
    }
}
