// o[t][h] = softmax_j(scale * q[t][h] . k[j][h / group], j <= pos0 + t) v[j][h / group] in one launch, with
// no scores tensor: each invocation owns one (query token, head) and walks its keys once with an online
// softmax (the running maximum m, the running sum l of exp(s - m), and the output accumulated with the
// same rescaling), as flash attention does per row. Grouped-query attention: query head h reads key/value
// head h / (n_heads / n_kv_heads). The query and the accumulator live in private arrays of MAX_D4 vec4s,
// so head_dim is at most 4 * MAX_D4.
//
// TILED (head size HD fixed at build time, for CPU adapters): one workgroup of WG lanes owns QR query rows
// that share a key/value head (consecutive (token, head-in-group) pairs) and walks the keys in blocks of WG,
// one key per lane. Each lane scores its key against all QR rows (one key load serves QR rows); the block's
// per-row maximum and sum come from subgroup operations (the 8-lane workgroup is one subgroup, so the
// planner requires subgroups at least that wide), and the online softmax steps by blocks rather than keys;
// then each lane accumulates its HD / WG output columns of every row from the value rows, which the lanes
// read side by side, taking each key's probability from its lane by a shuffle. Every loop but the one over
// key blocks has a constant trip count, so the compiler unrolls them and the QR rows' scores, maxima, sums
// and accumulators stay in registers: where the per-row form keeps a query and an accumulator of head_dim
// floats per lane in private memory and reads each key once per row, this one reads each key and value
// once per QR rows. Workgroup memory and two barriers per block in place of the subgroup operations took
// 122 ms against 35 for a 512-token prefill of SmolLM2's heads on lavapipe, where a barrier is costly.
//
// Scores go through `score` (the scale, and Gemma 2's soft-capping where asked), and a sliding-window
// layer's query sees only its last `window` keys (`window_start`): the row form starts its walk there, the
// tiled form masks each row's keys before it, giving them a probability of exactly 0.
//
// This replaces attn_scores + softmax + attn_pv (three launches and two [tokens][heads][kv_len] scratch
// tensors, quadratic in a prompt's length) wherever nothing else needs the probabilities.
//
// The Q8OUT variants write o as 8-bit activation units (wring_kernels_core::q8) for the output
// projection's qmatvec_q8 instead of floats: the quantize_q8 launch folded in (head_dim a multiple of 32,
// so a head holds whole units). The values quantized are the f32 variants' o, and the units equal
// q8_unit's bit for bit: a unit's maximum and code sum are exact whatever the order they are taken in.
#import invocation
#import attention
#import score
#ifdef Q8OUT
#import q8
#endif

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
#ifdef Q8OUT
@group(0) @binding(4) var<storage, read_write> oq: array<u32>;
#else
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;
#endif

const NEG_MAX_F32: f32 = -3.40282347e+38;

#ifdef TILED
// Output columns (vec4) each lane owns per row: lane i holds columns i, i + WG, ...
const C: u32 = HD / (4u * WG);
const D4: u32 = HD / 4u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let group = params.n_heads / params.n_kv_heads;
    // Query rows per key/value head, ordered (token, head in the group).
    let rows = params.tokens * group;
    let tiles = (rows + QR - 1u) / QR;
    let wg = linear_workgroup(inv);
    let hk = wg / tiles;
    // A grid that spilled into y may hold workgroups past the last tile; they leave together, before any
    // barrier.
    if (hk >= params.n_kv_heads) {
        return;
    }
    let u0 = (wg % tiles) * QR;
    let lane = inv.sg_lane;
    // Rows past the last are clamped onto it, so every load stays in bounds; they are not stored.
    var qbase: array<u32, QR>;
    var first: array<u32, QR>;
    var limit: array<u32, QR>;
    var m: array<f32, QR>;
    var l: array<f32, QR>;
    var acc: array<vec4<f32>, QR * C>;
    for (var r = 0u; r < QR; r++) {
        let u = min(u0 + r, rows - 1u);
        let t = u / group;
        qbase[r] = (t * params.n_heads + hk * group + u % group) * D4;
        limit[r] = min(params.pos0 + t + 1u, params.kv_len);
        first[r] = window_start(params.pos0 + t);
        m[r] = NEG_MAX_F32;
        l[r] = 0.0;
        for (var c = 0u; c < C; c++) {
            acc[r * C + c] = vec4<f32>(0.0);
        }
    }
    // The last row sees the most keys.
    let seen = limit[QR - 1u];
    let kstride = params.n_kv_heads * D4;
    // The first row sees the earliest key; blocks before its block hold none any row sees.
    for (var j0 = first[0] / WG * WG; j0 < seen; j0 += WG) {
        let j = j0 + lane;
        // Keys past `seen` are clamped for the load and masked below.
        let kb = min(j, seen - 1u) * kstride + hk * D4;
        var s: array<f32, QR>;
        for (var r = 0u; r < QR; r++) {
            s[r] = 0.0;
        }
        for (var i = 0u; i < D4; i++) {
            let kv = k[kb + i];
            for (var r = 0u; r < QR; r++) {
                s[r] += dot(q[qbase[r] + i], kv);
            }
        }
        // The block's per-row maximum and sum come from the subgroup (the workgroup is one subgroup), so
        // no barrier is needed. A masked key's probability is set to 0 outright: with a window, a row may
        // see no key of a block, and its maximum may still be NEG_MAX there.
        var p: array<f32, QR>;
        for (var r = 0u; r < QR; r++) {
            let seen_r = j < limit[r] && j >= first[r];
            let sr = select(NEG_MAX_F32, score(s[r]), seen_r);
            let mx = max(m[r], subgroupMax(sr));
            p[r] = select(0.0, exp(sr - mx), seen_r);
            let corr = exp(m[r] - mx);
            m[r] = mx;
            l[r] = l[r] * corr + subgroupAdd(p[r]);
            for (var c = 0u; c < C; c++) {
                acc[r * C + c] *= corr;
            }
        }
        for (var jj = 0u; jj < WG; jj++) {
            // A masked key's probability is 0, so its clamped value row adds nothing.
            let vb = min(j0 + jj, seen - 1u) * kstride + hk * D4 + lane;
            for (var c = 0u; c < C; c++) {
                let vv = v[vb + c * WG];
                for (var r = 0u; r < QR; r++) {
                    acc[r * C + c] += subgroupShuffle(p[r], jj) * vv;
                }
            }
        }
    }
    for (var r = 0u; r < QR; r++) {
        for (var c = 0u; c < C; c++) {
            let val = acc[r * C + c] / l[r];
#ifdef Q8OUT
            // Lane i's columns c * WG + i are values 32c + 4i .. 32c + 4i + 3 of the row: code word i of the
            // row's unit c (WG = 8). The unit's maximum and code sum come from the subgroup, outside the
            // store's branch so that every lane takes part.
            let a = abs(val);
            let m = subgroupMax(max(max(a.x, a.y), max(a.z, a.w)));
            let d = q8_scale(m);
            let codes = q8_codes(val, d.y);
            let total = subgroupAdd(codes.x + codes.y + codes.z + codes.w);
            if (u0 + r < rows) {
                let at = 12u * (qbase[r] / 8u + c);
                oq[at + lane] = pack4xI8(codes);
                if (lane == 0u) {
                    oq[at + 8u] = bitcast<u32>(d.x);
                    oq[at + 9u] = bitcast<u32>(d.x * f32(total));
                    oq[at + 10u] = 0u;
                    oq[at + 11u] = 0u;
                }
            }
#else
            if (u0 + r < rows) {
                o[qbase[r] + lane + c * WG] = val;
            }
#endif
        }
    }
}
#else
const MAX_D4: u32 = 32u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let th = linear_workgroup(inv) * WG + inv.lid;
    if (th >= params.tokens * params.n_heads) {
        return;
    }
    let h = th % params.n_heads;
    let t = th / params.n_heads;
    let d4 = params.head_dim / 4u;
    let hk = h / (params.n_heads / params.n_kv_heads);
    var qv: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    for (var i = 0u; i < d4; i++) {
        qv[i] = q[th * d4 + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = NEG_MAX_F32;
    var l = 0.0;
    let seen = min(params.pos0 + t + 1u, params.kv_len);
    for (var j = window_start(params.pos0 + t); j < seen; j++) {
        let kb = (j * params.n_kv_heads + hk) * d4;
        var dp = 0.0;
        for (var i = 0u; i < d4; i++) {
            dp += dot(qv[i], k[kb + i]);
        }
        let s = score(dp);
        // The first key sets m (exp(NEG_MAX - s) is exactly 0, so the empty accumulator stays 0).
        let m_new = max(m, s);
        let c = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * c + p;
        for (var i = 0u; i < d4; i++) {
            acc[i] = acc[i] * c + p * v[kb + i];
        }
        m = m_new;
    }
    // Every query sees at least its own key, so l >= 1.
#ifdef Q8OUT
    // The row's units, 8 columns (32 values) each.
    for (var u = 0u; u < d4 / 8u; u++) {
        var vals: array<vec4<f32>, 8>;
        for (var i = 0u; i < 8u; i++) {
            vals[i] = acc[8u * u + i] / l;
        }
        let unit = q8_unit(vals);
        let at = 12u * (th * d4 / 8u + u);
        for (var w = 0u; w < 12u; w++) {
            oq[at + w] = unit[w / 4u][w % 4u];
        }
    }
#else
    for (var i = 0u; i < d4; i++) {
        o[th * d4 + i] = acc[i] / l;
    }
#endif
}
#endif
