// The register-blocked core shared by the tiled matrix products (matmul.wgsl, qmatmul.wgsl, gmatmul.wgsl):
// a 16 x 16 workgroup, shared-memory tiles of a (BK x BM, k-major) and b (BK x BN, k-major), and the
// per-invocation TM x TN accumulation and store. The including kernel declares BK (its tile depth), TM and
// TN (defines) and the output binding `c`, and fills the tiles between barriers.

const TX: u32 = 16u;
const TY: u32 = 16u;
const BM: u32 = TY * TM;
const BN: u32 = TX * TN;

var<workgroup> a_tile: array<f32, BK * BM>;
var<workgroup> b_tile: array<f32, BK * BN>;

// acc += the products of this invocation's TM rows of a_tile and TN columns of b_tile over the tile's BK.
fn tile_accumulate(acc: ptr<function, array<f32, TM * TN>>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < BK; kk++) {
        var av: array<f32, TM>;
        var bv: array<f32, TN>;
        for (var i = 0u; i < TM; i++) {
            av[i] = a_tile[kk * BM + ty * TM + i];
        }
        for (var j = 0u; j < TN; j++) {
            bv[j] = b_tile[kk * BN + tx * TN + j];
        }
        for (var i = 0u; i < TM; i++) {
            for (var j = 0u; j < TN; j++) {
                (*acc)[i * TN + j] += av[i] * bv[j];
            }
        }
    }
}

// Writes the invocation's TM x TN block of c (m rows by n columns), skipping what lies past the edges.
fn tile_store(acc: array<f32, TM * TN>, m0: u32, n0: u32, tx: u32, ty: u32, m: u32, n: u32) {
    for (var i = 0u; i < TM; i++) {
        let row = m0 + ty * TM + i;
        for (var j = 0u; j < TN; j++) {
            let col = n0 + tx * TN + j;
            if (row < m && col < n) {
                c[row * n + col] = acc[i * TN + j];
            }
        }
    }
}
