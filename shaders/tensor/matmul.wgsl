// c[m][n] = sum_k a[m][k] * b[n][k]: a is M x K and b is N x K, both row-major with K contiguous, which is
// ggml's mul_mat convention (b holds one weight row per output feature). Accumulation is in f32 whatever
// ELEM is. Two algorithms, chosen per adapter:
//
// - Tiled (default): the 16 x 16 workgroup computes a (16*TM) x (16*TN) tile of c, each invocation a TM x TN
//   block held in registers; K advances in steps of BK through shared-memory tiles, stored k-major so the
//   inner loop reads consecutive addresses. This is the layout GPUs with real shared memory want.
// - DIRECT: no shared memory and no barriers. Each invocation computes a TM x 4 block straight from global
//   memory with vec4 loads along K (so K must be a multiple of 4). On CPU adapters (lavapipe), where
//   "shared memory" is ordinary memory and every barrier is a context switch between lane groups, the
//   caches already do what the tiles would.
#import invocation

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
#ifdef DIRECT
@group(0) @binding(1) var<storage, read> a: array<vec4<ELEM>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<ELEM>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const WX: u32 = 8u;
const WY: u32 = 8u;

@compute @workgroup_size(WX, WY)
fn main(inv: Invocation) {
    let tx = inv.lid % WX;
    let ty = inv.lid / WX;
    let m0 = (inv.wid.y * WY + ty) * TM;
    let n0 = (inv.wid.x * WX + tx) * 4u;
    let k4 = params.k / 4u;
    // Rows past the edge are clamped to the last row, so every load stays in bounds; their results are
    // dropped at the store.
    var arow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        arow[i] = min(m0 + i, params.m - 1u) * k4;
    }
    let b0 = min(n0, params.n - 1u) * k4;
    let b1 = min(n0 + 1u, params.n - 1u) * k4;
    let b2 = min(n0 + 2u, params.n - 1u) * k4;
    let b3 = min(n0 + 3u, params.n - 1u) * k4;
    var acc: array<vec4<f32>, TM>;
    for (var kk = 0u; kk < k4; kk++) {
        let w0 = vec4<f32>(b[b0 + kk]);
        let w1 = vec4<f32>(b[b1 + kk]);
        let w2 = vec4<f32>(b[b2 + kk]);
        let w3 = vec4<f32>(b[b3 + kk]);
        for (var i = 0u; i < TM; i++) {
            let x = vec4<f32>(a[arow[i] + kk]);
            acc[i] += vec4<f32>(dot(x, w0), dot(x, w1), dot(x, w2), dot(x, w3));
        }
    }
    for (var i = 0u; i < TM; i++) {
        let m = m0 + i;
        for (var j = 0u; j < 4u; j++) {
            if (m < params.m && n0 + j < params.n) {
                c[m * params.n + n0 + j] = acc[i][j];
            }
        }
    }
}
#else
#import tile
@group(0) @binding(1) var<storage, read> a: array<ELEM>;
@group(0) @binding(2) var<storage, read> b: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const BK: u32 = 16u;

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
        tile_accumulate(&acc, tx, ty);
        workgroupBarrier();
    }
    tile_store(acc, m0, n0, tx, ty, params.m, params.n);
}
#endif
