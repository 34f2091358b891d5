//! `binary`: elementwise add and multiply with a broadcast right operand. Budgets: f32 exact bits (one
//! rounding, the same in both); f16 NMSE 1e-8 (f16 arithmetic may round once where the twin rounds via f32).

use half::f16;
use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::binary;
use wring::kernels::tensor::{Binary, BinaryOp};
use wring::kernels::{Choice, DType, Kernel as _, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn binary_case(v: &'static Variant, n: usize, nb: usize, seed: u64) -> Case<'static> {
    let op = if v.name.starts_with("add") {
        BinaryOp::Add
    } else {
        BinaryOp::Mul
    };
    let mut rng = Rng::new(seed);
    let a = rng.vec(n, -4.0, 4.0);
    let b = rng.vec(nb, -4.0, 4.0);
    let name = format!("binary variant={} n={n} nb={nb} seed={seed}", v.name);
    if v.define("ELEM") == Some("f16") {
        let a: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
        let b: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        let mut c = vec![f16::ZERO; n];
        binary::cpu(op, &a, &b, &mut c);
        Case {
            name,
            tol: Tolerance::Nmse(1e-8),
            out_dtype: DType::F16,
            out_shape: vec![n],
            expected: c.iter().map(|x| x.to_f32()).collect(),
            record: Box::new(move |ctx, step, out| {
                let (ta, tb) = (ctx.upload(&[n], &a)?, ctx.upload(&[nb], &b)?);
                step.run_with(
                    &Binary {
                        op,
                        dtype: DType::F16,
                        n,
                        nb,
                    },
                    Choice::Force(&v.name),
                    &[("a", &ta), ("b", &tb), ("c", out)],
                )
            }),
            needs_f16: true,
            needs_subgroup: false,
        }
    } else {
        let mut c = vec![0.0f32; n];
        binary::cpu(op, &a, &b, &mut c);
        Case {
            name,
            tol: Tolerance::Exact,
            out_dtype: DType::F32,
            out_shape: vec![n],
            expected: c,
            record: Box::new(move |ctx, step, out| {
                let (ta, tb) = (ctx.upload(&[n], &a)?, ctx.upload(&[nb], &b)?);
                step.run_with(
                    &Binary {
                        op,
                        dtype: DType::F32,
                        n,
                        nb,
                    },
                    Choice::Force(&v.name),
                    &[("a", &ta), ("b", &tb), ("c", out)],
                )
            }),
            needs_f16: false,
            needs_subgroup: false,
        }
    }
}

/// Lengths around the workgroup's reach, and broadcasts of b over a.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("binary") {
        for (n, nb) in [
            (1, 1),
            (7, 7),
            (1023, 1023),
            (1025, 1025),
            (4096, 64),
            (3 * 577, 577),
            (9, 1),
        ] {
            out.push(planned(v, move || {
                binary_case(v, n, nb, (n * 31 + nb) as u64)
            }));
        }
    }
    out
}

#[test]
fn binary_rejects_a_broadcast_that_does_not_divide() {
    let add = Binary {
        op: BinaryOp::Add,
        dtype: DType::F32,
        n: 10,
        nb: 3,
    };
    let e = add
        .plan(&wring::kernels::Caps::BASELINE, Choice::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("must divide"), "{e}");
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_binary(n in 1usize..5000, nb_div in 1usize..4, vi in 0usize..4, seed in any::<u64>()) {
        let nb = if n % nb_div == 0 { n / nb_div } else { n };
        let r = binary_case(crate::kernels::pick(&variants("binary"), vi), n, nb, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
