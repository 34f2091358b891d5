//! `silu_mul`: `y = silu(a) * b`. Budget: NMSE 1e-8 (the device's exp is allowed a few ulp).

use wring::kernels::Strided;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::SiluMul;
use wring::kernels::tensor::silu_mul;
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// Dense tensors, and the two halves of one fused gate/up output read in place; values out to where
/// exp(-x) overflows.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("silu_mul") {
        // (rows, cols, halves): dense tensors, and the two halves of one fused gate/up output read in place.
        for (rows, cols, halves) in [
            (1usize, 1usize, false),
            (1, 5, false),
            (4, 1024, false),
            (1, 4099, false),
            (1, 1536, true),
            (5, 37, true),
        ] {
            out.push(planned(v, move || {
                let n = rows * cols;
                let mut rng = Rng::new(n as u64);
                // The range reaches where exp(-x) overflows, to cover the -0 limit.
                let mut a = rng.vec(if halves { 2 * n } else { n }, -30.0, 30.0);
                if n > 2 {
                    a[0] = -100.0;
                    a[1] = 100.0;
                }
                let b = rng.vec(n, -2.0, 2.0);
                let (sa, sb) = if halves {
                    (
                        Strided {
                            stride: 2 * cols,
                            offset: 0,
                        },
                        Strided {
                            stride: 2 * cols,
                            offset: cols,
                        },
                    )
                } else {
                    (
                        Strided {
                            stride: cols,
                            offset: 0,
                        },
                        Strided {
                            stride: cols,
                            offset: 0,
                        },
                    )
                };
                let mut y = vec![0.0; n];
                if halves {
                    silu_mul::cpu(cols, &a, sa, &a, sb, &mut y);
                } else {
                    silu_mul::cpu(cols, &a, sa, &b, sb, &mut y);
                }
                Case {
                    name: format!(
                        "silu_mul variant={} rows={rows} cols={cols} halves={halves}",
                        v.name
                    ),
                    tol: Tolerance::Nmse(1e-8),
                    out_dtype: DType::F32,
                    out_shape: vec![rows, cols],
                    expected: y,
                    record: Box::new(move |ctx, step, out| {
                        let force = Choice::Force(&v.name);
                        if halves {
                            let gu = ctx.upload(&[rows, 2 * cols], &a)?;
                            step.run_with(
                                &SiluMul::halves(cols, rows),
                                force,
                                &[("a", &gu), ("b", &gu), ("y", out)],
                            )
                        } else {
                            let (ta, tb) = (
                                ctx.upload(&[rows, cols], &a)?,
                                ctx.upload(&[rows, cols], &b)?,
                            );
                            step.run_with(
                                &SiluMul::dense(cols, rows),
                                force,
                                &[("a", &ta), ("b", &tb), ("y", out)],
                            )
                        }
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
