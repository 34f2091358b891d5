// o[t][h] = softmax_j(scale * q[t][h] . k[j][h / group], j <= pos0 + t) v[j][h / group] in one launch, with
// no scores tensor: each invocation owns one (query token, head) and walks its keys once with an online
// softmax (the running maximum m, the running sum l of exp(s - m), and the output accumulated with the
// same rescaling), as flash attention does per row. Grouped-query attention: query head h reads key/value
// head h / (n_heads / n_kv_heads). The query and the accumulator live in private arrays of MAX_D4 vec4s,
// so head_dim is at most 4 * MAX_D4.
//
// This replaces attn_scores + softmax + attn_pv (three launches and two [tokens][heads][kv_len] scratch
// tensors, quadratic in a prompt's length) wherever nothing else needs the probabilities.
#import invocation
#import attention

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;

const MAX_D4: u32 = 32u;
const NEG_MAX_F32: f32 = -3.40282347e+38;

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
    for (var j = 0u; j < seen; j++) {
        let kb = (j * params.n_kv_heads + hk) * d4;
        var s = 0.0;
        for (var i = 0u; i < d4; i++) {
            s += dot(qv[i], k[kb + i]);
        }
        s *= params.scale;
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
    for (var i = 0u; i < d4; i++) {
        o[th * d4 + i] = acc[i] / l;
    }
}
