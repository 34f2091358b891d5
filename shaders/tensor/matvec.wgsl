// y[row] = sum_k w[row][k] * x[k] for a row-major w of n rows by k columns (ggml's weight layout: one row
// per output feature). One workgroup handles ROWS rows: every invocation accumulates a strided slice of k
// for each row, then the workgroup reduces (subgroup or shared memory, per variant). Accumulation is in f32
// whatever ELEM is. With VEC4 the slices are vec4 wide (k must be a multiple of 4): one 16-byte load per
// invocation and step instead of four scalar ones.
#import reduce

struct Params {
    n: u32,
    k: u32,
    _pad0: u32,
    _pad1: u32,
}

#ifdef VEC4
alias VECTOR = vec4<ELEM>;
alias ACC = vec4<f32>;
#else
alias VECTOR = ELEM;
alias ACC = f32;
#endif

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<VECTOR>;
@group(0) @binding(2) var<storage, read> x: array<VECTOR>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = linear_workgroup(inv) * ROWS;
#ifdef VEC4
    let kv = params.k / 4u;
#else
    let kv = params.k;
#endif
    var sums: array<ACC, ROWS>;
    for (var k = inv.lid; k < kv; k += WG) {
        let xv = ACC(x[k]);
        for (var r = 0u; r < ROWS; r++) {
            let row = row0 + r;
            if (row < params.n) {
                sums[r] += ACC(w[row * kv + k]) * xv;
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
#ifdef VEC4
        let partial = (sums[r].x + sums[r].y) + (sums[r].z + sums[r].w);
#else
        let partial = sums[r];
#endif
        let total = reduce_sum(partial, inv);
        if (inv.lid == 0u && row0 + r < params.n) {
            y[row0 + r] = total;
        }
    }
}
