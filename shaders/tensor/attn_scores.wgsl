// s[t][h][j] = scale * q[t][h] . k[j][h / group] for key positions j the query may see, and the most
// negative f32 for those it may not: query t sits at position pos0 + t and sees keys 0 ..= pos0 + t (causal).
// Grouped-query attention: query head h reads key/value head h / (n_heads / n_kv_heads). The scores then go
// through softmax.wgsl (scale 1), whose exp turns the masked scores into exact zeros, and attn_pv.wgsl.
#import invocation
#import attention

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;

const NEG_MAX_F32: f32 = -3.40282347e+38;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let idx = linear_workgroup(inv) * WG + inv.lid;
    if (idx >= params.tokens * params.n_heads * params.kv_len) {
        return;
    }
    let j = idx % params.kv_len;
    let th = idx / params.kv_len;
    let h = th % params.n_heads;
    let t = th / params.n_heads;
    if (j > params.pos0 + t) {
        s[idx] = NEG_MAX_F32;
        return;
    }
    let d4 = params.head_dim / 4u;
    let hk = h / (params.n_heads / params.n_kv_heads);
    let qb = th * d4;
    let kb = (j * params.n_kv_heads + hk) * d4;
    var acc = 0.0;
    for (var i = 0u; i < d4; i++) {
        acc += dot(q[qb + i], k[kb + i]);
    }
    s[idx] = acc * params.scale;
}
