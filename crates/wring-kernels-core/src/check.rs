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
}

/// Why a comparison failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// Lengths differ.
    #[error("length {got} differs from the expected {expected}")]
    Length { got: usize, expected: usize },
    /// A NaN or infinity where the twin has a finite value.
    #[error("element {index} is {value} where the reference is {expected}")]
    NonFinite {
        index: usize,
        value: f32,
        expected: f32,
    },
    /// The error budget is exceeded.
    #[error(
        "NMSE {nmse:.3e} exceeds the budget {budget:.1e} (first differing element {index}: {got} vs {expected})"
    )]
    Nmse {
        nmse: f64,
        budget: f64,
        index: usize,
        got: f32,
        expected: f32,
    },
    /// Bits differ where the budget is exact.
    #[error("element {index} is {got:#010x}, expected {expected:#010x}")]
    Bits {
        index: usize,
        got: u32,
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
        unreachable!("Exact returned above")
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
