// The attention block's glue in one launch: RoPE on the queries (into q_out[token][head][dim]), RoPE on the
// keys written straight into the key cache, and the values copied into the value cache, both at the step's
// positions. It replaces two RoPE launches and two cache copies per layer; on software adapters every
// launch costs tens of microseconds whatever its size.
//
// q, k and v are read through a row stride and an offset, so they may be three views of one fused QKV
// projection output [token][q | k | v] (the same buffer bound three times, read-only) or three separate
// tensors. Each invocation handles one pair of dimensions of one head of one token: the n_heads query heads,
// then the n_kv_heads key heads, then the n_kv_heads value heads.
//
// EXT (the families beside llama) reads one more vector, `extra`: the q, k and v biases (zeros where a
// file has none), the q and k heads' RMSNorm weights (Qwen3), and per-pair frequency factors (ones where
// none: Llama 3.1's rope_freqs, Phi-3's LongRoPE); the rotation is also scaled by `mscale`. A normalised
// head needs its sum of squares: each invocation of the head sums it again (head_dim reads), which costs
// less than a launch and a scratch tensor on the decode path this glue is for.
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
    norm_eps: f32,
    mscale: f32,
    // Bit 0: q and k heads are RMS-normalised before the rotation (EXT).
    flags: u32,
    // Where extra's parts begin (EXT): biases [q | k | v], q norm [head_dim], k norm [head_dim], factors
    // [n_dims / 2].
    bias_off: u32,
    q_norm_off: u32,
    k_norm_off: u32,
    factors_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<i32>;
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;
#ifdef EXT
@group(0) @binding(8) var<storage, read> extra: array<f32>;

// A head's pair after its bias (already added), its RMSNorm (sum of squares `ss`, weights at `norm_off`)
// where flags ask, and the rotation with its factor.
fn transform(x: vec2<f32>, ss: f32, d: vec2<u32>, norm_off: u32, pos: i32, p: u32) -> vec2<f32> {
    var y = x;
    if ((params.flags & 1u) != 0u) {
        let r = 1.0 / sqrt(ss / f32(params.head_dim) + params.norm_eps);
        y = y * r * vec2<f32>(extra[norm_off + d.x], extra[norm_off + d.y]);
    }
    let f = extra[params.factors_off + min(p, params.n_dims / 2u - 1u)];
    return rope_values_ext(y, pos, p, params.n_dims, params.theta_scale, params.freq_scale, f, params.mscale);
}
#endif

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
#ifdef EXT
        let b = params.bias_off + h * hd;
        var ss = 0.0;
        if ((params.flags & 1u) != 0u) {
            for (var i = 0u; i < hd; i++) {
                let y = q[src + i] + extra[b + i];
                ss += y * y;
            }
        }
        let x = vec2<f32>(q[src + d.x] + extra[b + d.x], q[src + d.y] + extra[b + d.y]);
        let r = transform(x, ss, d, params.q_norm_off, pos[token], p);
#else
        let r = rope_values(vec2<f32>(q[src + d.x], q[src + d.y]), pos[token], p, params.n_dims, params.theta_scale, params.freq_scale);
#endif
        q_out[dst + d.x] = r.x;
        q_out[dst + d.y] = r.y;
    } else if (h < params.n_heads + params.n_kv_heads) {
        let kh = h - params.n_heads;
        let src = token * params.k_stride + params.k_off + kh * hd;
        let dst = params.cache_off + token * kv + kh * hd;
#ifdef EXT
        let b = params.bias_off + params.n_heads * hd + kh * hd;
        var ss = 0.0;
        if ((params.flags & 1u) != 0u) {
            for (var i = 0u; i < hd; i++) {
                let y = k[src + i] + extra[b + i];
                ss += y * y;
            }
        }
        let x = vec2<f32>(k[src + d.x] + extra[b + d.x], k[src + d.y] + extra[b + d.y]);
        let r = transform(x, ss, d, params.k_norm_off, pos[token], p);
#else
        let r = rope_values(vec2<f32>(k[src + d.x], k[src + d.y]), pos[token], p, params.n_dims, params.theta_scale, params.freq_scale);
#endif
        k_cache[dst + d.x] = r.x;
        k_cache[dst + d.y] = r.y;
    } else {
        let vh = h - params.n_heads - params.n_kv_heads;
        let src = token * params.v_stride + params.v_off + vh * hd + 2u * p;
        let dst = params.cache_off + token * kv + vh * hd + 2u * p;
#ifdef EXT
        let b = params.bias_off + (params.n_heads + params.n_kv_heads) * hd + vh * hd + 2u * p;
        v_cache[dst] = v[src] + extra[b];
        v_cache[dst + 1u] = v[src + 1u] + extra[b + 1u];
#else
        v_cache[dst] = v[src];
        v_cache[dst + 1u] = v[src + 1u];
#endif
    }
}
