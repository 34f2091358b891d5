// c[m][n] = sum_k a[m][k] * W[n][k] with a in f32 and W kept in its packed GGUF block format: the prefill
// product for GPUs. As matmul.wgsl's tiled variant, a 16 x 16 workgroup computes a (16*TM) x (16*TN) tile
// of c from shared-memory tiles, here BK = 32 deep so that one k-step is one 32-value unit of every weight
// row. The weight tile is dequantized as it is loaded, four values (a quad) per load, so dequantized
// weights exist only in shared memory, one tile at a time. CPU adapters use qmatvec's 8-row tiles instead,
// which need no shared memory and no barriers.
#import invocation
#import quant
#import tile

struct Params {
    m: u32,
    n: u32,
    k: u32,
    row_bytes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const BK: u32 = 32u;

@compute @workgroup_size(TX, TY)
fn main(inv: Invocation) {
    let tx = inv.lid % TX;
    let ty = inv.lid / TX;
    let m0 = inv.wid.y * BM;
    let n0 = inv.wid.x * BN;
    let units_per_block = BLOCK_LEN / 32u;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        let u = k0 / 32u;
        // BM * BK activations, TM * 4 per invocation.
        for (var l = 0u; l < (BM * BK) / (TX * TY); l++) {
            let idx = l * (TX * TY) + inv.lid;
            let r = idx / BK;
            let kk = idx % BK;
            var v = 0.0;
            if (m0 + r < params.m) {
                v = a[(m0 + r) * params.k + k0 + kk];
            }
            a_tile[kk * BM + r] = v;
        }
        // BN weight rows of 8 quads each; rows past the edge are clamped (their outputs are not stored).
        for (var l = 0u; l < (BN * 8u + TX * TY - 1u) / (TX * TY); l++) {
            let qi = l * (TX * TY) + inv.lid;
            if (qi < BN * 8u) {
                let r = qi / 8u;
                let j = qi % 8u;
                let row = min(n0 + r, params.n - 1u);
                let h = unit_head(row * params.row_bytes + (u / units_per_block) * BLOCK_BYTES, u % units_per_block);
                let q = quad(h, j);
                b_tile[(4u * j) * BN + r] = q.x;
                b_tile[(4u * j + 1u) * BN + r] = q.y;
                b_tile[(4u * j + 2u) * BN + r] = q.z;
                b_tile[(4u * j + 3u) * BN + r] = q.w;
            }
        }
        workgroupBarrier();
        tile_accumulate(&acc, tx, ty);
        workgroupBarrier();
    }
    tile_store(acc, m0, n0, tx, ty, params.m, params.n);
}
