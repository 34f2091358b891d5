// c[t][row] = sum_j W[row][j] a[t][perm[j]] for W in wring's group layout (wring_quant::group), tiled for
// many activation rows: the prefill product for GPUs. As qmatmul.wgsl, a 16 x 16 workgroup computes a
// (16*TM) x (16*TN) tile of c from shared-memory tiles (tile.wgsl), BK = 16 stored columns deep; the
// weight tile is decoded as it is loaded (codes, statistics and mask through group.wgsl, as gmatvec
// reads them), so dequantized weights exist only in shared memory, one tile at a time, and each is decoded
// once per BM activation rows. The activation tile is gathered through the permutation. Each output then
// adds its row's outliers after the dense part, as gmatvec does. CPU adapters use gmatvec's 8-row tiles,
// which need no shared memory and no barriers.
#import invocation
#import group
#import tile

@group(0) @binding(6) var<storage, read> a: array<f32>;
@group(0) @binding(7) var<storage, read_write> c: array<f32>;

const BK: u32 = 16u;

@compute @workgroup_size(TX, TY)
fn main(inv: Invocation) {
    let tx = inv.lid % TX;
    let ty = inv.lid / TX;
    let m0 = inv.wid.y * BM;
    let n0 = inv.wid.x * BN;
    let m = params.batch;
    let k = params.cols;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < k; k0 += BK) {
        // BM x BK activations, gathered through the permutation.
        for (var l = 0u; l < (BM * BK) / (TX * TY); l++) {
            let idx = l * (TX * TY) + inv.lid;
            let r = idx / BK;
            let kk = idx % BK;
            var v = 0.0;
            if (m0 + r < m && k0 + kk < k) {
                v = a[(m0 + r) * k + perm[k0 + kk]];
            }
            a_tile[kk * BM + r] = v;
        }
        // BN x BK weights, decoded; rows past the edge are clamped (their outputs are not stored).
        for (var l = 0u; l < (BN * BK) / (TX * TY); l++) {
            let idx = l * (TX * TY) + inv.lid;
            let r = idx / BK;
            let kk = idx % BK;
            var v = 0.0;
            if (k0 + kk < k) {
                v = dense_weight(min(n0 + r, params.rows - 1u), k0 + kk);
            }
            b_tile[kk * BN + r] = v;
        }
        workgroupBarrier();
        tile_accumulate(&acc, tx, ty);
        workgroupBarrier();
    }
    // Each output's row's outliers, in order, after the dense part.
    for (var j = 0u; j < TN; j++) {
        let row = n0 + tx * TN + j;
        if (row >= params.rows) {
            continue;
        }
        for (var e = outliers[row]; e < outliers[row + 1u]; e++) {
            let word = outliers[e];
            let v = unpack2x16float(word).y;
            let col = perm[word & 0xFFFFu];
            for (var i = 0u; i < TM; i++) {
                let t = min(m0 + ty * TM + i, m - 1u);
                acc[i * TN + j] += v * a[t * k + col];
            }
        }
    }
    tile_store(acc, m0, n0, tx, ty, m, params.rows);
}
