// f16 storage shared by every kernel that writes f16 values into a buffer of u32 words (the KV cache's
// ring and statistics, the paged cache's f16 pool).
const F16_MAX: f32 = 65504.0;

// x rounded to the nearest f16 (ties to even) in integer arithmetic on its bits, so that every adapter
// rounds alike (WGSL leaves pack2x16float's rounding to the implementation), with magnitudes below f16's
// smallest normal, 2^-14, flushed to zero (some adapters flush f16 subnormals). The caller keeps x within
// f16's range; the result packs exactly.
fn f16_round(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    if ((bits & 0x7fffffffu) < 0x38800000u) {
        return 0.0;
    }
    let up = bits + 0x0fffu + ((bits >> 13u) & 1u);
    return bitcast<f32>(up & 0xffffe000u);
}
