// Exact nearest-codeword search, fused with the per-query top-k selection. Each workgroup takes WY * TM
// queries and one split of the codebook; each invocation computes TM queries against 4 codewords at a time
// (straight from global memory, as matmul's DIRECT variant: no shared memory and no barriers) and keeps its
// own sorted top-k list per query. Every invocation's lists go to a scratch [query][list][k] that
// `vq_merge` reduces, so no list ever needs more than KMAX private slots and the codebook can be split
// across workgroups (and across launches, for codebooks above the binding limit) with no atomics.
//
// Keys rank ascending: L2 ranks by |c|^2 - 2 x.c (|x|^2 is added by vq_merge), inner product by -x.c,
// cosine by -x.c / |c| (vq_merge divides by |x|). Within an invocation codewords arrive in increasing
// index order and enter a list only when strictly better, so equal keys keep the lowest index.
#import invocation

struct Params {
    nq: u32,
    d: u32,
    x_stride: u32,
    x_offset: u32,
    n_codes: u32,
    code_base: u32,
    split_len: u32,
    k: u32,
    metric: u32,
    lists: u32,
    list_base: u32,
    _pad0: u32,
}

const L2: u32 = 0u;
const IP: u32 = 1u;

@group(0) @binding(0) var<uniform> params: Params;
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> codes: array<vec4<ELEM>>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<ELEM>;
#endif
@group(0) @binding(3) var<storage, read> cnorm: array<f32>;
@group(0) @binding(4) var<storage, read_write> keys: array<f32>;
@group(0) @binding(5) var<storage, read_write> ids: array<u32>;

const WX: u32 = 8u;
const WY: u32 = 8u;
const NONE: u32 = 0xffffffffu;

var<private> kd: array<f32, TM * KMAX>;
var<private> ki: array<u32, TM * KMAX>;

// Inserts (key, id) into query slot q's sorted list if it beats the last entry. NaN never enters.
fn offer(q: u32, key: f32, id: u32) {
    let base = q * KMAX;
    let last = params.k - 1u;
    if (!(key < kd[base + last])) {
        return;
    }
    var j = last;
    while (j > 0u && kd[base + j - 1u] > key) {
        kd[base + j] = kd[base + j - 1u];
        ki[base + j] = ki[base + j - 1u];
        j--;
    }
    kd[base + j] = key;
    ki[base + j] = id;
}

@compute @workgroup_size(WX, WY)
fn main(inv: Invocation) {
    let tx = inv.lid % WX;
    let ty = inv.lid / WX;
    let q0 = (inv.wid.y * WY + ty) * TM;
    // Rows of invocations past the last query have nothing to do (there are no barriers to keep them for).
    if (q0 >= params.nq) {
        return;
    }
    let split = inv.wid.x;
    let inf = bitcast<f32>(0x7f800000u);
    for (var i = 0u; i < TM * KMAX; i++) {
        kd[i] = inf;
        ki[i] = NONE;
    }
#ifdef VEC4
    let dl = params.d / 4u;
    let xs = params.x_stride / 4u;
    let xo = params.x_offset / 4u;
#else
    let dl = params.d;
    let xs = params.x_stride;
    let xo = params.x_offset;
#endif
    // Queries past the end are clamped to the last one, so every load stays in bounds; their lists are
    // never written.
    var xrow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        xrow[i] = min(q0 + i, params.nq - 1u) * xs + xo;
    }
    let start = split * params.split_len;
    let end = min(start + params.split_len, params.n_codes);
    let last_code = params.n_codes - 1u;
    for (var c0 = start + tx * 4u; c0 < end; c0 += WX * 4u) {
        let b0 = min(c0, last_code) * dl;
        let b1 = min(c0 + 1u, last_code) * dl;
        let b2 = min(c0 + 2u, last_code) * dl;
        let b3 = min(c0 + 3u, last_code) * dl;
        var acc: array<vec4<f32>, TM>;
        for (var kk = 0u; kk < dl; kk++) {
#ifdef VEC4
            let w0 = vec4<f32>(codes[b0 + kk]);
            let w1 = vec4<f32>(codes[b1 + kk]);
            let w2 = vec4<f32>(codes[b2 + kk]);
            let w3 = vec4<f32>(codes[b3 + kk]);
            for (var i = 0u; i < TM; i++) {
                let xv = x[xrow[i] + kk];
                acc[i] += vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
            }
#else
            let w = vec4<f32>(f32(codes[b0 + kk]), f32(codes[b1 + kk]), f32(codes[b2 + kk]), f32(codes[b3 + kk]));
            for (var i = 0u; i < TM; i++) {
                acc[i] += x[xrow[i] + kk] * w;
            }
#endif
        }
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if (c < end) {
                let cn = cnorm[c];
                for (var i = 0u; i < TM; i++) {
                    let dotp = acc[i][j];
                    var key = -dotp;
                    if (params.metric == L2) {
                        key = cn - 2.0 * dotp;
                    } else if (params.metric != IP) {
                        key = -dotp / max(sqrt(cn), 1e-30);
                    }
                    offer(i, key, params.code_base + c);
                }
            }
        }
    }
    let list = params.list_base + split * WX + tx;
    for (var i = 0u; i < TM; i++) {
        let q = q0 + i;
        if (q < params.nq) {
            let at = (q * params.lists + list) * params.k;
            for (var j = 0u; j < params.k; j++) {
                keys[at + j] = kd[i * KMAX + j];
                ids[at + j] = ki[i * KMAX + j];
            }
        }
    }
}
