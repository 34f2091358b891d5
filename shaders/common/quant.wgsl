// Reading GGUF blocks from a weight buffer bound as `w: array<u32>` (declared by the kernel), and
// dequantizing them four values at a time. A *unit* is 32 consecutive values: a whole block of the legacy
// formats, one of the 8 sub-blocks of a K-quant super-block; a *quad* is 4 consecutive values of a unit
// (quad j holds values 4j .. 4j + 3). `unit_head` reads what a unit's quads share (scales, the high-bit
// word, where its quants start) once; `quad` then unpacks four values with vector operations. Each format
// follows llama.cpp's dequantize_row_* (and wring-quant, its CPU twin) operation for operation. Blocks that
// are not a multiple of 4 bytes long (Q4_0's 18, Q6_K's 210) start at unaligned byte offsets, so loads go
// through u32_at, which joins two words without branching.

// The bit offsets of the four bytes of a word.
const BYTE_SHIFTS: vec4<u32> = vec4<u32>(0u, 8u, 16u, 24u);

// The 4 bytes at byte offset `at`, little-endian, whatever its alignment. Formats whose blocks are a
// multiple of 4 bytes (ALIGNED) only ever ask for aligned words and take the one-load path.
fn u32_at(at: u32) -> u32 {
#ifdef ALIGNED
    return w[at >> 2u];
#endif
    let word = at >> 2u;
    let shift = (at & 3u) * 8u;
    let lo = w[word] >> shift;
    // WGSL shifts by the amount modulo 32, so the aligned case must not take the second word.
    let hi = select(0u, w[word + 1u] << (32u - shift), shift != 0u);
    return lo | hi;
}

fn byte_at(at: u32) -> u32 {
    return (w[at >> 2u] >> ((at & 3u) * 8u)) & 0xFFu;
}

// The f16 at byte offset `at` (always even in GGUF blocks), widened to f32.
fn f16_at(at: u32) -> f32 {
    let word = w[at >> 2u];
    let half_word = select(word & 0xFFFFu, word >> 16u, (at & 2u) != 0u);
    return unpack2x16float(half_word).x;
}

// The two f16 at byte offset `at` (a multiple of 4: the scale and minimum that open Q4_1, Q5_1, Q4_K and
// Q5_K blocks, all whole words long) and `at + 2`, widened to f32, from one load: software adapters pay
// for every load lane by lane, and the two halves share a word.
fn f16_pair_at(at: u32) -> vec2<f32> {
    return unpack2x16float(w[at >> 2u]);
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block whose 12 scale bytes start at `at`
// (llama.cpp's get_scale_min_k4).
fn scale_min_k4(at: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(byte_at(at + j) & 63u, byte_at(at + j + 4u) & 63u);
    }
    let sc = (byte_at(at + j + 4u) & 0xFu) | ((byte_at(at + j - 4u) >> 6u) << 4u);
    let m = (byte_at(at + j + 4u) >> 4u) | ((byte_at(at + j) >> 6u) << 4u);
    return vec2<u32>(sc, m);
}

// What the quads of one unit share.
struct Head {
    // Scale and offset (their meaning per format below).
    d: f32,
    m: f32,
    // Byte offset of the unit's low quant bits.
    base: u32,
    // Format-specific: Q5's high-bit word, K-quants' nibble shift or high-bit offset.
    aux: u32,
    aux2: u32,
    aux3: u32,
}

fn unit_head(bb: u32, sub: u32) -> Head {
    var h: Head;
#ifdef FMT_Q4_0
    h.d = f16_at(bb);
    h.base = bb + 2u;
#endif
#ifdef FMT_Q4_1
    let dm = f16_pair_at(bb);
    h.d = dm.x;
    h.m = dm.y;
    h.base = bb + 4u;
#endif
#ifdef FMT_Q5_0
    h.d = f16_at(bb);
    h.aux = u32_at(bb + 2u);
    h.base = bb + 6u;
#endif
#ifdef FMT_Q5_1
    let dm = f16_pair_at(bb);
    h.d = dm.x;
    h.m = dm.y;
    h.aux = u32_at(bb + 4u);
    h.base = bb + 8u;
#endif
#ifdef FMT_Q8_0
    h.d = f16_at(bb);
    h.base = bb + 2u;
#endif
#ifdef FMT_Q4_K
    // d f16 | dmin f16 | scales[12] | qs[128]: sub-block s takes the low (even s) or high (odd s)
    // nibbles of qs[32 * (s / 2) ..]; d is d * sc, m is dmin * min, as llama.cpp's d1 and m1.
    let sm = scale_min_k4(bb + 4u, sub);
    let dm = f16_pair_at(bb);
    h.d = dm.x * f32(sm.x);
    h.m = dm.y * f32(sm.y);
    h.base = bb + 16u + 32u * (sub >> 1u);
    h.aux = (sub & 1u) * 4u;
#endif
#ifdef FMT_Q5_K
    // As Q4_K, after qh[32] at byte 16: the fifth bit of value l of sub-block s is bit s of qh[l].
    let sm = scale_min_k4(bb + 4u, sub);
    let dm = f16_pair_at(bb);
    h.d = dm.x * f32(sm.x);
    h.m = dm.y * f32(sm.y);
    h.base = bb + 48u + 32u * (sub >> 1u);
    h.aux = (sub & 1u) * 4u;
    h.aux2 = sub;
#endif
#ifdef FMT_Q6_K
    // ql[128] | qh[64] | scales[16] (i8) | d f16. Unit s covers values 32 s .. 32 s + 31: half hf = s / 4
    // of the block, quarter r = s % 4 within it. aux packs the low-nibble shift (bits 0..7) and the
    // high-bits shift (bits 8..15); aux2 is where the high bits start, aux3 where the unit's scales are.
    let hf = sub >> 2u;
    let r = sub & 3u;
    h.d = f16_at(bb + 208u);
    h.base = bb + 64u * hf + 32u * (r & 1u);
    h.aux = ((r >> 1u) * 4u) | ((2u * r) << 8u);
    h.aux2 = bb + 128u + 32u * hf;
    h.aux3 = bb + 192u + 8u * hf + 2u * r;
#endif
    return h;
}

// Values 4j .. 4j + 3 of the unit.
fn quad(h: Head, j: u32) -> vec4<f32> {
#ifdef FMT_Q4_0
    // Bytes 0..15 hold values 0..15 in their low nibbles and 16..31 in their high ones.
    let q = (vec4<u32>(u32_at(h.base + 4u * (j & 3u))) >> (BYTE_SHIFTS + (j >> 2u) * 4u)) & vec4<u32>(0xFu);
    return (vec4<f32>(q) - 8.0) * h.d;
#endif
#ifdef FMT_Q4_1
    let q = (vec4<u32>(u32_at(h.base + 4u * (j & 3u))) >> (BYTE_SHIFTS + (j >> 2u) * 4u)) & vec4<u32>(0xFu);
    return vec4<f32>(q) * h.d + h.m;
#endif
#ifdef FMT_Q5_0
    let lo = (vec4<u32>(u32_at(h.base + 4u * (j & 3u))) >> (BYTE_SHIFTS + (j >> 2u) * 4u)) & vec4<u32>(0xFu);
    let hi = (vec4<u32>(h.aux) >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * j)) & vec4<u32>(1u);
    return (vec4<f32>(lo | (hi << vec4<u32>(4u))) - 16.0) * h.d;
#endif
#ifdef FMT_Q5_1
    let lo = (vec4<u32>(u32_at(h.base + 4u * (j & 3u))) >> (BYTE_SHIFTS + (j >> 2u) * 4u)) & vec4<u32>(0xFu);
    let hi = (vec4<u32>(h.aux) >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * j)) & vec4<u32>(1u);
    return vec4<f32>(lo | (hi << vec4<u32>(4u))) * h.d + h.m;
#endif
#ifdef FMT_Q8_0
    // Sign-extend each byte: move it to the top, then shift back arithmetically.
    let q = bitcast<vec4<i32>>(vec4<u32>(u32_at(h.base + 4u * j)) << (vec4<u32>(24u) - BYTE_SHIFTS)) >> vec4<u32>(24u);
    return vec4<f32>(q) * h.d;
#endif
#ifdef FMT_Q4_K
    let q = (vec4<u32>(u32_at(h.base + 4u * j)) >> (BYTE_SHIFTS + h.aux)) & vec4<u32>(0xFu);
    return h.d * vec4<f32>(q) - h.m;
#endif
#ifdef FMT_Q5_K
    let lo = (vec4<u32>(u32_at(h.base + 4u * j)) >> (BYTE_SHIFTS + h.aux)) & vec4<u32>(0xFu);
    let hi = (vec4<u32>(u32_at(h.base - 32u * (h.aux2 >> 1u) - 32u + 4u * j)) >> (BYTE_SHIFTS + h.aux2)) & vec4<u32>(1u);
    return h.d * vec4<f32>(lo + hi * 16u) - h.m;
#endif
#ifdef FMT_Q6_K
    let lo = (vec4<u32>(u32_at(h.base + 4u * j)) >> (BYTE_SHIFTS + (h.aux & 0xFFu))) & vec4<u32>(0xFu);
    let hi = (vec4<u32>(u32_at(h.aux2 + 4u * j)) >> (BYTE_SHIFTS + (h.aux >> 8u))) & vec4<u32>(3u);
    // Values 0..15 of the unit use scale is = 0 of its pair, 16..31 scale is = 1.
    let sc = f32(i32(byte_at(h.aux3 + (j >> 2u)) << 24u) >> 24u);
    return h.d * sc * (vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0);
#endif
}
