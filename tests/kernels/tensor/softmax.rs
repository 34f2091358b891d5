//! `softmax` of each row of `x * scale`. Budget: NMSE 1e-8 (the device's exp is allowed a few ulp); large
//! logits check the max subtraction.

use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::Softmax;
use wring::kernels::tensor::softmax;
use wring::kernels::{Choice, DType, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn softmax_case(
    v: &'static Variant,
    rows: usize,
    n: usize,
    scale: f32,
    seed: u64,
) -> Case<'static> {
    let mut rng = Rng::new(seed);
    // Large logits: without the max subtraction exp would overflow.
    let x = rng.vec(rows * n, -80.0, 120.0);
    let mut y = vec![0.0; rows * n];
    softmax::cpu(&x, &mut y, n, scale, v.define_u32("WG") as usize);
    Case {
        name: format!(
            "softmax variant={} rows={rows} n={n} scale={scale} seed={seed}",
            v.name
        ),
        tol: Tolerance::Nmse(1e-8),
        out_dtype: DType::F32,
        out_shape: vec![rows, n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tx = ctx.upload(&[rows, n], &x)?;
            let y = out.reshape(&[rows, n]).expect("rows x n");
            step.run_with(
                &Softmax { n, rows, scale },
                Choice::Force(&v.name),
                &[("x", &tx), ("y", &y)],
            )
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
}

/// Rows below, at and past the workgroup, and a vocabulary-sized row.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("softmax") {
        for (i, &(rows, n)) in [
            (1, 1),
            (2, 3),
            (3, 255),
            (1, 256),
            (4, 257),
            (2, 1000),
            (1, 49_152),
        ]
        .iter()
        .enumerate()
        {
            out.push(planned(v, move || {
                softmax_case(v, rows, n, 0.125 + i as f32, i as u64)
            }));
        }
    }
    out
}

#[test]
fn softmax_rows_sum_to_one_on_the_device() {
    // An independent property, not the twin: every row of the device result sums to 1.
    let ctx = crate::harness::ctx();
    let (rows, n) = (3, 777);
    let x = Rng::new(3).vec(rows * n, -50.0, 50.0);
    let tx = ctx.upload(&[rows, n], &x).unwrap();
    let ty = ctx.empty(&[rows, n], DType::F32).unwrap();
    let mut s = ctx.step("softmax sum");
    s.run(
        &Softmax {
            n,
            rows,
            scale: 1.0,
        },
        &[("x", &tx), ("y", &ty)],
    )
    .unwrap();
    s.submit().unwrap();
    let y: Vec<f32> = ctx.read(&ty).unwrap();
    for r in y.chunks(n) {
        let sum: f32 = r.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
    }
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_softmax(rows in 1usize..6, n in 1usize..1100, vi in 0usize..3, seed in any::<u64>()) {
        let r = softmax_case(crate::kernels::pick(&variants("softmax"), vi), rows, n, 0.5, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
