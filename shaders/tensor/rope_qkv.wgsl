// The attention block's glue in one launch: RoPE on the queries (into q_out[token][head][dim]), RoPE on the
// keys written straight into the key cache, and the values copied into the value cache, both at the step's
// positions. It replaces two RoPE launches and two cache copies per layer; on software adapters every
// launch costs tens of microseconds whatever its size.
//
// q, k and v are read through a row stride and an offset, so they may be three views of one fused QKV
// projection output [token][q | k | v] (the same buffer bound three times, read-only) or three separate
// tensors. Each invocation handles one pair of dimensions of one head of one token: the n_heads query heads,
// then the n_kv_heads key heads, then the n_kv_heads value heads.
#import invocation
#import rope

struct Params {
    head_dim: u32,
    n_heads: u32,
    n_kv_heads: u32,
    n_dims: u32,
    total_pairs: u32,
    // Floats before the first token's entry in each cache (the first new position times n_kv_heads * head_dim).
    cache_off: u32,
    theta_scale: f32,
    freq_scale: f32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<i32>;
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let idx = linear_workgroup(inv) * WG + inv.lid;
    if (idx >= params.total_pairs) {
        return;
    }
    let hd = params.head_dim;
    let p = idx % (hd / 2u);
    let slot = idx / (hd / 2u);
    let heads = params.n_heads + 2u * params.n_kv_heads;
    let token = slot / heads;
    let h = slot % heads;
    let kv = params.n_kv_heads * hd;
    let d = rope_dims(p, params.n_dims);
    if (h < params.n_heads) {
        let src = token * params.q_stride + params.q_off + h * hd;
        let dst = (token * params.n_heads + h) * hd;
        let r = rope_values(vec2<f32>(q[src + d.x], q[src + d.y]), pos[token], p, params.n_dims, params.theta_scale, params.freq_scale);
        q_out[dst + d.x] = r.x;
        q_out[dst + d.y] = r.y;
    } else if (h < params.n_heads + params.n_kv_heads) {
        let kh = h - params.n_heads;
        let src = token * params.k_stride + params.k_off + kh * hd;
        let dst = params.cache_off + token * kv + kh * hd;
        let r = rope_values(vec2<f32>(k[src + d.x], k[src + d.y]), pos[token], p, params.n_dims, params.theta_scale, params.freq_scale);
        k_cache[dst + d.x] = r.x;
        k_cache[dst + d.y] = r.y;
    } else {
        let vh = h - params.n_heads - params.n_kv_heads;
        let src = token * params.v_stride + params.v_off + vh * hd + 2u * p;
        let dst = params.cache_off + token * kv + vh * hd + 2u * p;
        v_cache[dst] = v[src];
        v_cache[dst + 1u] = v[src + 1u];
    }
}
