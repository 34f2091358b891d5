// The KV cache's quantizer at BITS bits (8, 4 or 2), shared by the contiguous cache (kv.wgsl) and the paged
// one (kv_paged_store.wgsl, attn_paged.wgsl): asymmetric min/max groups whose scale and minimum are stored
// as an f16 pair, codes CPW to a word with the first in the low bits. Needs f16.wgsl.

// Codes per word.
const CPW: u32 = 32u / BITS;
const MASK: u32 = (1u << (BITS % 32u)) - 1u;
const LEVELS: f32 = f32((1u << (BITS % 32u)) - 1u);

// A group's (scale, minimum) as they are stored: the minimum rounded to f16 first, then the scale that
// spans the group from that minimum, so that the rounded minimum is what the codes count from. Both are
// clamped into f16's finite range (a value past it would store an infinity and decode to NaN).
fn stat_of(mn: f32, mx: f32) -> vec2<f32> {
    let m = f16_round(clamp(mn, -F16_MAX, F16_MAX));
    let d = f16_round(clamp((mx - m) / LEVELS, 0.0, F16_MAX));
    return vec2<f32>(d, m);
}

// Round to nearest (halves up, the same on every adapter and in the CPU twin, unlike WGSL's round()).
fn code_of(x: f32, s: vec2<f32>) -> u32 {
    if (s.x <= 0.0) {
        return 0u;
    }
    return u32(clamp(floor((x - s.y) / s.x + 0.5), 0.0, LEVELS));
}
