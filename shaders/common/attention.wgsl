// The parameters both attention kernels take (attn_scores.wgsl, attn_pv.wgsl); `scale` matters only to
// the scores.
struct Params {
    tokens: u32,
    kv_len: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos0: u32,
    scale: f32,
    _pad0: u32,
}
