// Reading GGUF blocks from a weight buffer bound as `w: array<u32>` (declared by the kernel), and
// dequantizing one 32-value unit of a block: a whole block of the legacy formats, one of the 8 sub-blocks
// of a K-quant super-block. Each format follows llama.cpp's dequantize_row_* (and wring-quant, its CPU
// twin) operation for operation. Blocks that are not a multiple of 4 bytes long (Q4_0's 18, Q6_K's 210)
// start at unaligned byte offsets, so loads go through u32_at, which joins two words when it must.

// The 4 bytes at byte offset `at`, little-endian, whatever its alignment.
fn u32_at(at: u32) -> u32 {
    let word = at >> 2u;
    let shift = (at & 3u) * 8u;
    let lo = w[word];
    if (shift == 0u) {
        return lo;
    }
    return (lo >> shift) | (w[word + 1u] << (32u - shift));
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

// Byte `i` (0..3) of a word.
fn byte_of(word: u32, i: u32) -> u32 {
    return (word >> (i * 8u)) & 0xFFu;
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

// Dequantizes 32 values: unit `sub` (0 for the legacy formats, 0..7 for the K-quants) of the block at byte
// offset `bb`.
fn dequant32(bb: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
#ifdef FMT_Q4_0
    let d = f16_at(bb);
    for (var i = 0u; i < 4u; i++) {
        let q = u32_at(bb + 2u + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            let b = byte_of(q, t);
            v[4u * i + t] = f32(i32(b & 0xFu) - 8) * d;
            v[4u * i + t + 16u] = f32(i32(b >> 4u) - 8) * d;
        }
    }
#endif
#ifdef FMT_Q4_1
    let d = f16_at(bb);
    let m = f16_at(bb + 2u);
    for (var i = 0u; i < 4u; i++) {
        let q = u32_at(bb + 4u + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            let b = byte_of(q, t);
            v[4u * i + t] = f32(b & 0xFu) * d + m;
            v[4u * i + t + 16u] = f32(b >> 4u) * d + m;
        }
    }
#endif
#ifdef FMT_Q5_0
    let d = f16_at(bb);
    let qh = u32_at(bb + 2u);
    for (var i = 0u; i < 4u; i++) {
        let q = u32_at(bb + 6u + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            let j = 4u * i + t;
            let b = byte_of(q, t);
            let xh0 = ((qh >> j) << 4u) & 0x10u;
            let xh1 = (qh >> (j + 12u)) & 0x10u;
            v[j] = f32(i32((b & 0xFu) | xh0) - 16) * d;
            v[j + 16u] = f32(i32((b >> 4u) | xh1) - 16) * d;
        }
    }
#endif
#ifdef FMT_Q5_1
    let d = f16_at(bb);
    let m = f16_at(bb + 2u);
    let qh = u32_at(bb + 4u);
    for (var i = 0u; i < 4u; i++) {
        let q = u32_at(bb + 8u + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            let j = 4u * i + t;
            let b = byte_of(q, t);
            let xh0 = ((qh >> j) << 4u) & 0x10u;
            let xh1 = (qh >> (j + 12u)) & 0x10u;
            v[j] = f32((b & 0xFu) | xh0) * d + m;
            v[j + 16u] = f32((b >> 4u) | xh1) * d + m;
        }
    }
#endif
#ifdef FMT_Q8_0
    let d = f16_at(bb);
    for (var i = 0u; i < 8u; i++) {
        let q = u32_at(bb + 2u + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            // Sign-extend the byte.
            v[4u * i + t] = f32(i32(q << (24u - 8u * t)) >> 24u) * d;
        }
    }
#endif
#ifdef FMT_Q4_K
    // d f16 | dmin f16 | scales[12] | qs[128]; sub-block s uses the low (even s) or high (odd s) nibbles of
    // the 32 bytes qs[32 * (s / 2) ..].
    let sm = scale_min_k4(bb + 4u, sub);
    let d1 = f16_at(bb) * f32(sm.x);
    let m1 = f16_at(bb + 2u) * f32(sm.y);
    let shift = (sub & 1u) * 4u;
    let qs = bb + 16u + 32u * (sub >> 1u);
    for (var i = 0u; i < 8u; i++) {
        let q = u32_at(qs + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            v[4u * i + t] = d1 * f32((byte_of(q, t) >> shift) & 0xFu) - m1;
        }
    }
#endif
#ifdef FMT_Q5_K
    // d f16 | dmin f16 | scales[12] | qh[32] | qs[128]; the fifth bit of value l of sub-block s is bit s of
    // qh[l].
    let sm = scale_min_k4(bb + 4u, sub);
    let d1 = f16_at(bb) * f32(sm.x);
    let m1 = f16_at(bb + 2u) * f32(sm.y);
    let shift = (sub & 1u) * 4u;
    let qs = bb + 48u + 32u * (sub >> 1u);
    for (var i = 0u; i < 8u; i++) {
        let q = u32_at(qs + 4u * i);
        let h = u32_at(bb + 16u + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            let hi = select(0u, 16u, ((byte_of(h, t) >> sub) & 1u) != 0u);
            v[4u * i + t] = d1 * f32(((byte_of(q, t) >> shift) & 0xFu) + hi) - m1;
        }
    }
#endif
#ifdef FMT_Q6_K
    // ql[128] | qh[64] | scales[16] (i8) | d f16. Unit s covers values 32 s .. 32 s + 31: half h = s / 4
    // of the block, quarter r = s % 4 within it.
    let d = f16_at(bb + 208u);
    let h = sub >> 2u;
    let r = sub & 3u;
    let ql = bb + 64u * h + 32u * (r & 1u);
    let qh = bb + 128u + 32u * h;
    let lo_shift = (r >> 1u) * 4u;
    let hi_shift = 2u * r;
    for (var i = 0u; i < 8u; i++) {
        let q = u32_at(ql + 4u * i);
        let hb = u32_at(qh + 4u * i);
        for (var t = 0u; t < 4u; t++) {
            let l = 4u * i + t;
            let sc = f32(i32(byte_at(bb + 192u + 8u * h + l / 16u + 2u * r) << 24u) >> 24u);
            let q6 = ((byte_of(q, t) >> lo_shift) & 0xFu) | (((byte_of(hb, t) >> hi_shift) & 3u) << 4u);
            v[l] = d * sc * f32(i32(q6) - 32);
        }
    }
#endif
    return v;
}
