// EMS evict-then-merge state (kv_ems_score.wgsl, kv_ems_compact.wgsl; `wring_kernels_kv::ems` on the
// host): one u32 buffer per layer of arrays [kv head][slot] of `capacity` words each, at the word offsets
// below: acc, seen and obs (f32 bits: accumulated attention, query heads that saw the slot, the recent
// window's moving average), and the compaction's scratch: dest (each slot's new index, or ZERO_CLASS),
// the kept slots that are merge centers, the slots to be merged, and each of those's center.
struct EmsParams {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    tokens: u32,
    // The step's first slot, and the slots filled after it (cache_pos + tokens).
    cache_pos: u32,
    n: u32,
    budget: u32,
    window: u32,
    capacity: u32,
    acc: u32,
    seen: u32,
    obs: u32,
    dest: u32,
    centers: u32,
    merges: u32,
    route: u32,
    decay: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The class of evicted slots: routed nowhere and dropped.
const ZERO_CLASS: u32 = 0xffffffffu;

// A slot's score: normalized accumulated attention plus the recent window's.
fn ems_score(acc: f32, seen: f32, obs: f32) -> f32 {
    return acc / max(seen, 1.0) + obs;
}

// A unique selection key for slot j (below 8192): the score's top 19 bits (scores are not negative, so
// their bits order like their values; 10 bits of mantissa), then the lower slot first.
fn ems_key(score: f32, j: u32) -> u32 {
    return ((bitcast<u32>(max(score, 0.0)) >> 12u) << 13u) | (8191u - j);
}
