//! Activations quantized to 8 bits per 32-value unit, as llama.cpp's CPU back end quantizes them to Q8_1
//! before its integer-dot products: the layout that `quantize_q8` and the `_q8` variants of `rmsnorm` and
//! `silu_mul` write and `qmatvec_q8` reads (`shaders/common/q8.wgsl`), and its CPU twin.

/// Words one quantized 32-value unit takes: 8 of codes, d, s and two of padding (three vec4s).
pub const UNIT_WORDS: usize = 12;

/// Words of `values` activations (a multiple of 32) in units.
pub fn words(values: usize) -> usize {
    values / 32 * UNIT_WORDS
}

/// A kernel's operands with its f32 output `from` replaced by 8-bit units of `values` values named `to`:
/// the declaration of a `_q8` variant, whose other operands are its float form's.
pub fn units_output(
    ops: Vec<crate::Operand>,
    from: &str,
    to: &'static str,
    values: usize,
) -> Vec<crate::Operand> {
    ops.into_iter()
        .map(|o| {
            if o.name == from {
                crate::Operand::write(to, crate::DType::U32, words(values))
            } else {
                o
            }
        })
        .collect()
}

/// CPU twin of `q8_unit`, operation for operation: amax over the unit, d = amax / 127, the codes
/// round(x * (127 / amax)) with ties to even (WGSL's `round`), s = d * (sum of codes). `x` is whole units.
pub fn quantize(x: &[f32], q: &mut [u32]) {
    for (unit, out) in x.chunks_exact(32).zip(q.chunks_exact_mut(UNIT_WORDS)) {
        let m = unit.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = m / 127.0;
        let id = if m > 0.0 { 127.0 / m } else { 0.0 };
        let codes: Vec<i32> = unit
            .iter()
            .map(|v| (v * id).round_ties_even() as i32)
            .collect();
        let total: i32 = codes.iter().sum();
        for (w, c) in out[..8].iter_mut().zip(codes.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
        }
        out[8] = d.to_bits();
        out[9] = (d * total as f32).to_bits();
        out[10] = 0;
        out[11] = 0;
    }
}

/// The values units stand for (code * d), 32 per unit.
pub fn dequantize(q: &[u32]) -> Vec<f32> {
    q.chunks_exact(UNIT_WORDS)
        .flat_map(|unit| {
            let d = f32::from_bits(unit[8]);
            unit[..8]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(move |b| f32::from(b as i8) * d)
        })
        .collect()
}

/// The first word of `q` that breaks a unit's own consistency: s not equal to d * (sum of its codes) as
/// the shader computes it, or a padding word not zero.
pub fn inconsistent(q: &[u32]) -> Option<usize> {
    q.chunks_exact(UNIT_WORDS)
        .enumerate()
        .find_map(|(u, unit)| {
            let total: i32 = unit[..8]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(|b| i32::from(b as i8))
                .sum();
            let s = f32::from_bits(unit[8]) * total as f32;
            if unit[9] != s.to_bits() {
                Some(u * UNIT_WORDS + 9)
            } else if unit[10] != 0 || unit[11] != 0 {
                Some(u * UNIT_WORDS + 10)
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut q = vec![0u32; words(x.len())];
        quantize(&x, &mut q);
        assert_eq!(inconsistent(&q), None);
        let back = dequantize(&q);
        for (unit, got) in x.chunks(32).zip(back.chunks(32)) {
            let d = unit.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            for (a, b) in unit.iter().zip(got) {
                assert!((a - b).abs() <= 0.5 * d * 1.0001, "{a} vs {b}");
            }
        }
        q[9] ^= 1;
        assert_eq!(inconsistent(&q), Some(9));
    }
}
