//! `silu_mul`: `y = silu(a) * b`, and with the GELU gate `y = gelu(a) * b` (Gemma's GeGLU; every shape
//! runs with both). Budget: NMSE 1e-8 (the device's exp and tanh are allowed a few ulp). The `q8`
//! variant writes y as 8-bit activation units: compared as units (each consistent, their values within
//! NMSE 1e-5 of the twin's units, room for a code or two that a few-ulp exp moves across a half step; one
//! such move in a unit costs about 6e-6 of that unit's energy, a wrong scale of 1 % costs 1e-4).

use wring::kernels::Strided;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::silu_mul::{self, Gate};
use wring::kernels::tensor::{SiluMul, SiluMulQ8};
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// Dense tensors, and the two halves of one fused gate/up output read in place; values out to where
/// exp(-x) overflows.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("silu_mul") {
        let units = v.define("Q8OUT").is_some();
        // (rows, cols, halves): dense tensors, and the two halves of one fused gate/up output read in place;
        // rows of whole 32-value units for the variant writing them.
        let shapes: &[(usize, usize, bool)] = if units {
            &[
                (1, 32, false),
                (2, 96, false),
                (4, 1024, false),
                (1, 1536, true),
                (3, 64, true),
            ]
        } else {
            &[
                (1, 1, false),
                (1, 5, false),
                (4, 1024, false),
                (1, 4099, false),
                (1, 1536, true),
                (5, 37, true),
            ]
        };
        for (&(rows, cols, halves), gate) in shapes
            .iter()
            .flat_map(|s| [(s, Gate::Silu), (s, Gate::Gelu)])
        {
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
                    silu_mul::cpu_gate(gate, cols, &a, sa, &a, sb, &mut y);
                } else {
                    silu_mul::cpu_gate(gate, cols, &a, sa, &b, sb, &mut y);
                }
                let (tol, out_dtype, out_shape, expected) = if units {
                    let units = crate::kernels::expected_units(&y);
                    (
                        Tolerance::Q8Units(1e-5),
                        DType::U32,
                        vec![units.len()],
                        units,
                    )
                } else {
                    (Tolerance::Nmse(1e-8), DType::F32, vec![rows, cols], y)
                };
                Case {
                    name: format!(
                        "silu_mul variant={} rows={rows} cols={cols} halves={halves} gate={gate:?}",
                        v.name
                    ),
                    tol,
                    out_dtype,
                    out_shape,
                    expected,
                    record: Box::new(move |ctx, step, out| {
                        let force = Choice::Force(&v.name);
                        let unit = if halves {
                            SiluMul::halves(cols, rows)
                        } else {
                            SiluMul::dense(cols, rows)
                        }
                        .with_gate(gate);
                        let gu;
                        let (ta, tb) = if halves {
                            gu = ctx.upload(&[rows, 2 * cols], &a)?;
                            (gu.clone(), gu)
                        } else {
                            (
                                ctx.upload(&[rows, cols], &a)?,
                                ctx.upload(&[rows, cols], &b)?,
                            )
                        };
                        if units {
                            let ops = [("a", &ta), ("b", &tb), ("q", out)];
                            step.run_with(&SiluMulQ8(unit), force, &ops)
                        } else {
                            let ops = [("a", &ta), ("b", &tb), ("y", out)];
                            step.run_with(&unit, force, &ops)
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

/// The GELU twin is ggml's `ggml_gelu_f32` (the tanh form, before ggml's CPU back end rounds it through an
/// f16 table), checked against values computed in f64.
#[test]
fn gelu_gate_is_ggml_gelu() {
    for x in [-12.0f32, -3.0, -0.5, 0.0, 0.25, 1.0, 2.5, 9.0] {
        let xf = f64::from(x);
        let want = 0.5
            * xf
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xf + 0.044715 * xf.powi(3))).tanh());
        let got = f64::from(Gate::Gelu.of(x));
        assert!(
            (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "gelu({x}) = {got}, want {want}"
        );
    }
}
