// c[m][n] = sum_k a[m][k] * b[n][k]: a is M x K and b is N x K, both row-major with K contiguous, which is
// ggml's mul_mat convention (b holds one weight row per output feature). The 16 x 16 workgroup computes a
// (16*TM) x (16*TN) tile of c, each invocation a TM x TN block held in registers; K advances in steps of BK
// through shared-memory tiles, stored k-major so the inner loop reads consecutive addresses. Tiles are
// converted to f32 on load, so accumulation is in f32 whatever ELEM is.
#import invocation

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<ELEM>;
@group(0) @binding(2) var<storage, read> b: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TX: u32 = 16u;
const TY: u32 = 16u;
const BK: u32 = 16u;
const BM: u32 = TY * TM;
const BN: u32 = TX * TN;

var<workgroup> a_tile: array<f32, BK * BM>;
var<workgroup> b_tile: array<f32, BK * BN>;

@compute @workgroup_size(TX, TY)
fn main(inv: Invocation) {
    let tx = inv.lid % TX;
    let ty = inv.lid / TX;
    let m0 = inv.wid.y * BM;
    let n0 = inv.wid.x * BN;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        // BM * BK = 256 * TM elements of a, so each of the 256 invocations loads TM of them (and TN of b).
        for (var l = 0u; l < TM; l++) {
            let idx = l * (TX * TY) + inv.lid;
            let r = idx / BK;
            let kk = idx % BK;
            var v = 0.0;
            if (m0 + r < params.m && k0 + kk < params.k) {
                v = f32(a[(m0 + r) * params.k + k0 + kk]);
            }
            a_tile[kk * BM + r] = v;
        }
        for (var l = 0u; l < TN; l++) {
            let idx = l * (TX * TY) + inv.lid;
            let r = idx / BK;
            let kk = idx % BK;
            var v = 0.0;
            if (n0 + r < params.n && k0 + kk < params.k) {
                v = f32(b[(n0 + r) * params.k + k0 + kk]);
            }
            b_tile[kk * BN + r] = v;
        }
        workgroupBarrier();
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
                    acc[i * TN + j] += av[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let m = m0 + ty * TM + i;
        for (var j = 0u; j < TN; j++) {
            let n = n0 + tx * TN + j;
            if (m < params.m && n < params.n) {
                c[m * params.n + n] = acc[i * TN + j];
            }
        }
    }
}
