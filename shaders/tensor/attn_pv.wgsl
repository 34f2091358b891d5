// o[t][h][:] = sum_j p[t][h][j] * v[j][h / group][:] over the key positions query t may see (0 ..= pos0 + t);
// p is the softmax of attn_scores.wgsl's output. One invocation per 4 output values.
#import invocation
#import attention

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> o: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let d4 = params.head_dim / 4u;
    let idx = linear_workgroup(inv) * WG + inv.lid;
    if (idx >= params.tokens * params.n_heads * d4) {
        return;
    }
    let c = idx % d4;
    let th = idx / d4;
    let h = th % params.n_heads;
    let t = th / params.n_heads;
    let hk = h / (params.n_heads / params.n_kv_heads);
    let seen = min(params.kv_len, params.pos0 + t + 1u);
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < seen; j++) {
        acc += p[th * params.kv_len + j] * v[(j * params.n_kv_heads + hk) * d4 + c];
    }
    o[idx] = acc;
}
