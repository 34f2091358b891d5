//! `rmsnorm`: `y = x / sqrt(mean(x^2) + eps) * w`, and with the residual add fused (`_add`: the output
//! checked is y followed by the sum s, and both are written through sentinel-guarded buffers). Budget:
//! NMSE 1e-9 (one square root and division). The `_q8` variants write y as 8-bit activation units:
//! compared as units against the twin's y quantized (each unit consistent, their values within NMSE 1e-5:
//! room for a code that a last-ulp difference in y moves across a half step, about 6e-6 of its unit's
//! energy; a wrong scale of 1 % costs 1e-4), and the `_add_q8` variants' sum s in a case of its own.

use proptest::prelude::*;
use wring::kernels::tensor::rmsnorm;
use wring::kernels::tensor::{Rmsnorm, RmsnormQ8, Softmax};

use crate::harness::{copy_into, guarded};
use wring::kernels::check::Tolerance;
use wring::kernels::{Choice, DType, Kernel as _, Variant, q8};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// A case's inputs and its twin's outputs.
struct Twin {
    x: Vec<f32>,
    r: Vec<f32>,
    w: Vec<f32>,
    y: Vec<f32>,
    s: Vec<f32>,
    eps: f32,
    residual: bool,
}

fn twin(v: &Variant, rows: usize, n: usize, seed: u64) -> Twin {
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * n, -3.0, 3.0);
    let r = rng.vec(rows * n, -1.0, 1.0);
    let w = rng.vec(n, 0.5, 1.5);
    let eps = 1e-5;
    let wg = v.define_u32("WG") as usize;
    let residual = v.define("RESIDUAL").is_some();
    let mut y = vec![0.0; rows * n];
    let mut s = vec![0.0; rows * n];
    if residual {
        rmsnorm::cpu_add(&x, &r, &w, &mut y, &mut s, n, eps, wg);
    } else {
        rmsnorm::cpu(&x, &w, &mut y, n, eps, wg);
    }
    Twin {
        x,
        r,
        w,
        y,
        s,
        eps,
        residual,
    }
}

/// RMSNorm cases; the `_add` variants' output is y followed by the sum s, both checked.
fn rmsnorm_case(v: &'static Variant, rows: usize, n: usize, seed: u64) -> Case<'static> {
    let Twin {
        x,
        r,
        w,
        mut y,
        s: sum,
        eps,
        residual,
    } = twin(v, rows, n, seed);
    if residual {
        y.extend_from_slice(&sum);
    }
    Case {
        name: format!("rmsnorm variant={} rows={rows} n={n} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![if residual { 2 * rows } else { rows }, n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let (tx, tw) = (ctx.upload(&[rows, n], &x)?, ctx.upload(&[n], &w)?);
            let unit = Rmsnorm {
                n,
                rows,
                eps,
                residual,
            };
            let force = Choice::Force(&v.name);
            if !residual {
                let y = out.reshape(&[rows, n]).expect("rows x n");
                return step.run_with(&unit, force, &[("x", &tx), ("w", &tw), ("y", &y)]);
            }
            let tr = ctx.upload(&[rows, n], &r)?;
            let (ty, ts) = (
                guarded(ctx, &[rows, n], DType::F32)?,
                guarded(ctx, &[rows, n], DType::F32)?,
            );
            let operands = [("x", &tx), ("r", &tr), ("w", &tw), ("y", &ty), ("s", &ts)];
            step.run_with(&unit, force, &operands)?;
            copy_into(step, &ty, out, 0)?;
            copy_into(step, &ts, out, rows * n)
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
}

/// A `_q8` variant's case: its units (`sum` false) or, for the `_add_q8` variants, the residual sum s.
fn rmsnorm_q8_case(
    v: &'static Variant,
    rows: usize,
    n: usize,
    seed: u64,
    sum: bool,
) -> Case<'static> {
    let Twin {
        x,
        r,
        w,
        y,
        s,
        eps,
        residual,
    } = twin(v, rows, n, seed);
    let words = q8::words(rows * n);
    let (tol, out_dtype, out_shape, expected) = if sum {
        (Tolerance::Nmse(1e-9), DType::F32, vec![rows, n], s)
    } else {
        let units = crate::kernels::expected_units(&y);
        (Tolerance::Q8Units(1e-5), DType::U32, vec![words], units)
    };
    Case {
        name: format!(
            "rmsnorm variant={} rows={rows} n={n} seed={seed} checks={}",
            v.name,
            if sum { "s" } else { "q" }
        ),
        tol,
        out_dtype,
        out_shape,
        expected,
        record: Box::new(move |ctx, step, out| {
            let (tx, tw) = (ctx.upload(&[rows, n], &x)?, ctx.upload(&[n], &w)?);
            let unit = RmsnormQ8(Rmsnorm {
                n,
                rows,
                eps,
                residual,
            });
            let force = Choice::Force(&v.name);
            if !residual {
                return step.run_with(&unit, force, &[("x", &tx), ("w", &tw), ("q", out)]);
            }
            let tr = ctx.upload(&[rows, n], &r)?;
            // The output not checked in this case is still written through a guarded buffer.
            let (tq, ts) = if sum {
                (guarded(ctx, &[words], DType::U32)?, out.clone())
            } else {
                (out.clone(), guarded(ctx, &[rows, n], DType::F32)?)
            };
            let operands = [("x", &tx), ("r", &tr), ("w", &tw), ("q", &tq), ("s", &ts)];
            step.run_with(&unit, force, &operands)
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
}

/// Rows of one value, below, at and past the 256-wide workgroup, SmolLM2's 576, and 70,000 rows, which
/// need more than 65,535 workgroups in x so the grid spills into y. The `_q8` variants: rows of whole
/// 32-value units, one unit, fewer units than the narrow workgroup's 8 lanes, SmolLM2's 576 and 1,536.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("rmsnorm") {
        if v.define("Q8OUT").is_some() {
            let residual = v.define("RESIDUAL").is_some();
            for (i, &(rows, n)) in [(1, 32), (2, 64), (5, 576), (2, 1536)].iter().enumerate() {
                out.push(planned(v, move || {
                    rmsnorm_q8_case(v, rows, n, i as u64, false)
                }));
                if residual {
                    out.push(planned(v, move || {
                        rmsnorm_q8_case(v, rows, n, i as u64, true)
                    }));
                }
            }
            continue;
        }
        for (i, &(rows, n)) in [(1, 1), (1, 255), (2, 256), (3, 257), (5, 576), (2, 1537)]
            .iter()
            .enumerate()
        {
            out.push(planned(v, move || rmsnorm_case(v, rows, n, i as u64)));
        }
    }
    let v = crate::kernels::variant("rmsnorm", "shared");
    out.push(planned(v, move || rmsnorm_case(v, 70_000, 2, 7)));
    out
}

#[test]
fn row_kernels_choose_narrow_workgroups_on_cpu_adapters() {
    let gpu = wring::kernels::Caps {
        subgroup: true,
        ..wring::kernels::Caps::BASELINE
    };
    let cpu = wring::kernels::Caps {
        software: true,
        ..gpu
    };
    assert_eq!(
        Rmsnorm {
            n: 576,
            rows: 4,
            eps: 1e-5,
            residual: false
        }
        .plan(&cpu, Choice::Auto)
        .unwrap()
        .variant
        .name,
        "narrow"
    );
    assert_eq!(
        Rmsnorm {
            n: 576,
            rows: 4,
            eps: 1e-5,
            residual: false
        }
        .plan(&gpu, Choice::Auto)
        .unwrap()
        .variant
        .name,
        "subgroup"
    );
    assert_eq!(
        Rmsnorm {
            n: 576,
            rows: 4,
            eps: 1e-5,
            residual: true
        }
        .plan(&cpu, Choice::Auto)
        .unwrap()
        .variant
        .name,
        "narrow_add"
    );
    let e = Rmsnorm {
        n: 576,
        rows: 4,
        eps: 1e-5,
        residual: true,
    }
    .plan(&cpu, Choice::Force("narrow"))
    .unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
    assert_eq!(
        Softmax {
            n: 576,
            rows: 4,
            scale: 1.0
        }
        .plan(&wring::kernels::Caps::BASELINE, Choice::Auto)
        .unwrap()
        .variant
        .name,
        "shared"
    );
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_rmsnorm(rows in 1usize..6, n in 1usize..1100, vi in 0usize..6, seed in any::<u64>()) {
        // The float variants (the `_q8` ones need rows of whole units; their cases are above).
        let floats: Vec<_> = variants("rmsnorm").into_iter().filter(|v| v.define("Q8OUT").is_none()).collect();
        let r = rmsnorm_case(crate::kernels::pick(&floats, vi), rows, n, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// The 8-bit-unit forms want rows of whole 32-value units, pick the `_q8` variant of the planner's
/// reduction, and are refused a float variant (and the float form a `_q8` one).
#[test]
fn unit_forms_plan_their_own_variants_and_refuse_partial_units() {
    use wring::kernels::tensor::{SiluMul, SiluMulQ8};
    let (lavapipe, gpu) = crate::kernels::planner_caps();
    let norm = |n| Rmsnorm {
        n,
        rows: 1,
        eps: 1e-5,
        residual: true,
    };
    let name = |caps| {
        RmsnormQ8(norm(576))
            .plan(caps, Choice::Auto)
            .unwrap()
            .variant
            .name
            .to_string()
    };
    assert_eq!(name(&lavapipe), "narrow_add_q8");
    assert_eq!(name(&gpu), "subgroup_add_q8");
    let e = RmsnormQ8(norm(100)).plan(&gpu, Choice::Auto).unwrap_err();
    assert!(e.to_string().contains("whole 32-value units"), "{e}");
    let e = RmsnormQ8(norm(576))
        .plan(&gpu, Choice::Force("shared_add"))
        .unwrap_err();
    assert!(e.to_string().contains("does not write 8-bit units"), "{e}");
    let e = norm(576)
        .plan(&gpu, Choice::Force("shared_add_q8"))
        .unwrap_err();
    assert!(e.to_string().contains("does not write floats"), "{e}");
    let e = SiluMulQ8(SiluMul::dense(100, 1))
        .plan(&gpu, Choice::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("whole 32-value units"), "{e}");
    assert_eq!(
        SiluMulQ8(SiluMul::halves(1536, 1))
            .plan(&lavapipe, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "q8"
    );
}
