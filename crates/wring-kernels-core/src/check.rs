//! How GPU results are judged against CPU twins: finiteness first, then a normalised error.

/// An error budget for comparing a device result `a` with its CPU twin `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Normalised mean squared error, `NMSE = sum((a - b)^2) / sum(b^2)`, must not exceed the value.
    /// This is ggml test-backend-ops' metric: scale-free, and meaningful for any tensor that is not all
    /// zeros. When `b` is all zeros, `a` must be all zeros too.
    Nmse(f64),
    /// Every element bit-identical (copies, fills, integer results).
    Exact,
    /// 8-bit activation units ([`crate::q8`], their words as f32 bits): each unit consistent (s = d *
    /// sum of its codes, padding zero), and the values they stand for within the NMSE budget of the twin's.
    /// A kernel that computes the values it quantizes (RMSNorm, SwiGLU) may round one the twin rounds at
    /// an exact half step the other way, which moves one code by one: bits alone would be too strict.
    Q8Units(f64),
}

/// Why a comparison failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// Lengths differ.
    #[error("length {got} differs from the expected {expected}")]
    Length {
        /// Elements the device wrote.
        got: usize,
        /// Elements the twin wrote.
        expected: usize,
    },
    /// A NaN or infinity where the twin has a finite value.
    #[error("element {index} is {value} where the reference is {expected}")]
    NonFinite {
        /// The element's index.
        index: usize,
        /// The device's value.
        value: f32,
        /// The twin's value.
        expected: f32,
    },
    /// The error budget is exceeded.
    #[error(
        "NMSE {nmse:.3e} exceeds the budget {budget:.1e} (first differing element {index}: {got} vs {expected})"
    )]
    Nmse {
        /// The measured normalised mean squared error.
        nmse: f64,
        /// The kernel's budget.
        budget: f64,
        /// The first element that differs.
        index: usize,
        /// The device's value there.
        got: f32,
        /// The twin's value there.
        expected: f32,
    },
    /// Bits differ where the budget is exact.
    #[error("element {index} is {got:#010x}, expected {expected:#010x}")]
    Bits {
        /// The element's index.
        index: usize,
        /// The device's bits.
        got: u32,
        /// The twin's bits.
        expected: u32,
    },
}

/// `sum((a - b)^2) / sum(b^2)` in f64; 0 when both are all zeros, infinite when only `b` is.
pub fn nmse(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        num += d * d;
        den += f64::from(y) * f64::from(y);
    }
    if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        num / den
    }
}

/// Compares a device result with its reference: lengths, then NaN/Inf (a NaN must never pass because the
/// metric happens to swallow it), then the budget. Returns the NMSE seen.
pub fn compare(got: &[f32], expected: &[f32], tol: Tolerance) -> Result<f64, Mismatch> {
    if got.len() != expected.len() {
        return Err(Mismatch::Length {
            got: got.len(),
            expected: expected.len(),
        });
    }
    if let Tolerance::Q8Units(budget) = tol {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        let (g, e) = (bits(got), bits(expected));
        if let Some(index) = crate::q8::inconsistent(&g) {
            return Err(Mismatch::Bits {
                index,
                got: g[index],
                expected: e[index],
            });
        }
        return compare(
            &crate::q8::dequantize(&g),
            &crate::q8::dequantize(&e),
            Tolerance::Nmse(budget),
        );
    }
    if tol == Tolerance::Exact {
        if let Some(index) = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(Mismatch::Bits {
                index,
                got: got[index].to_bits(),
                expected: expected[index].to_bits(),
            });
        }
        return Ok(0.0);
    }
    for (index, (&g, &e)) in got.iter().zip(expected).enumerate() {
        // A non-finite value passes only where the reference has the same one (NaN with NaN, +inf with +inf).
        let same = g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan());
        if (!g.is_finite() || !e.is_finite()) && !same {
            return Err(Mismatch::NonFinite {
                index,
                value: g,
                expected: e,
            });
        }
    }
    let Tolerance::Nmse(budget) = tol else {
        unreachable!("Exact and Q8Units returned above")
    };
    let finite = |v: &[f32]| {
        v.iter()
            .map(|x| if x.is_finite() { *x } else { 0.0 })
            .collect::<Vec<_>>()
    };
    let (g, e) = (finite(got), finite(expected));
    let err = nmse(&g, &e);
    // Written so that a NaN error can never pass, whatever the budget.
    if !matches!(
        err.partial_cmp(&budget),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    ) {
        let index = g.iter().zip(&e).position(|(a, b)| a != b).unwrap_or(0);
        return Err(Mismatch::Nmse {
            nmse: err,
            budget,
            index,
            got: g[index],
            expected: e[index],
        });
    }
    Ok(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_units_pass_a_moved_code_and_fail_a_wrong_scale_or_sum() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.7).cos() * 2.0).collect();
        let mut q = vec![0u32; crate::q8::words(x.len())];
        crate::q8::quantize(&x, &mut q);
        let as_f32 = |q: &[u32]| q.iter().map(|&w| f32::from_bits(w)).collect::<Vec<_>>();
        let expected = as_f32(&q);
        let tol = Tolerance::Q8Units(1e-5);
        assert_eq!(compare(&expected, &expected, tol), Ok(0.0));
        // One code moved by one step (its s recomputed as the shader would): within the budget.
        let mut moved = q.clone();
        let code = moved[0] as u8 as i8;
        let step = if code < 127 { 1 } else { -1 };
        moved[0] = (moved[0] & !0xFF) | u32::from((code + step) as u8);
        // s as the shader computes it from a unit's d and codes.
        let resum = |unit: &mut [u32]| {
            let total: i32 = unit[..8]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(|b| i32::from(b as i8))
                .sum();
            unit[9] = (f32::from_bits(unit[8]) * total as f32).to_bits();
        };
        resum(&mut moved[..12]);
        assert!(compare(&as_f32(&moved), &expected, tol).is_ok());
        // The same code moved without s following it: inconsistent.
        let mut stale = moved.clone();
        stale[9] = q[9];
        assert!(matches!(
            compare(&as_f32(&stale), &expected, tol),
            Err(Mismatch::Bits { index: 9, .. })
        ));
        // Every unit's scale 1 % off (s following it): over the budget.
        let mut scaled = q.clone();
        for unit in scaled.chunks_exact_mut(crate::q8::UNIT_WORDS) {
            unit[8] = (f32::from_bits(unit[8]) * 1.01).to_bits();
            resum(unit);
        }
        assert!(matches!(
            compare(&as_f32(&scaled), &expected, tol),
            Err(Mismatch::Nmse { .. })
        ));
    }

    #[test]
    fn nan_never_passes() {
        assert!(matches!(
            compare(&[1.0, f32::NAN], &[1.0, 2.0], Tolerance::Nmse(1.0)),
            Err(Mismatch::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            compare(&[f32::INFINITY], &[1.0], Tolerance::Nmse(f64::MAX)),
            Err(Mismatch::NonFinite { .. })
        ));
        assert!(compare(&[f32::NAN], &[f32::NAN], Tolerance::Nmse(0.0)).is_ok());
        assert!(compare(&[f32::NEG_INFINITY], &[f32::INFINITY], Tolerance::Nmse(1.0)).is_err());
    }

    #[test]
    fn budget_bites() {
        assert!(compare(&[1.0, 2.0], &[1.0, 2.0], Tolerance::Nmse(0.0)).is_ok());
        let e = compare(&[1.0, 2.1], &[1.0, 2.0], Tolerance::Nmse(1e-4)).unwrap_err();
        assert!(matches!(e, Mismatch::Nmse { index: 1, .. }), "{e}");
        // 0.01 / 5 = 2e-3
        assert!((nmse(&[1.0, 2.1], &[1.0, 2.0]) - 2e-3).abs() < 1e-6);
        assert_eq!(nmse(&[1.0], &[0.0]), f64::INFINITY);
        assert!(compare(&[1.0], &[1.0, 2.0], Tolerance::Exact).is_err());
        assert!(compare(&[-0.0], &[0.0], Tolerance::Exact).is_err());
    }
}
