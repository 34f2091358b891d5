// The parameters the attention kernels take (attn_fused.wgsl, attn_scores.wgsl, attn_pv.wgsl); `scale`,
// `softcap` and `window` matter only where scores are made (attn_scores refuses the last two).
struct Params {
    tokens: u32,
    kv_len: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos0: u32,
    scale: f32,
    // Gemma 2's attention soft-capping: a score s becomes softcap * tanh(s / softcap); 0 for none.
    softcap: f32,
    // A sliding-window layer's keys: a query at position p sees keys p - window + 1 ..= p; 0 for all.
    window: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
