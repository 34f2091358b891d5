//! `qmatvec_q8`: the decode product with 8-bit activations and integer dot products. Budget against its
//! twin: NMSE 1e-10 (the 32 products of a unit are summed exactly in i32 on both sides; only the scaling
//! and the sums over units are f32). The twin's own error against the f32-activation product (the
//! activations' 8-bit rounding) is bounded separately below: NMSE under 2e-4 on unit-scale inputs, the
//! order of ggml test-backend-ops' 5e-4 for its Q8_1 matrix products. Shapes: one block, three, SmolLM2's
//! 576 and 1536; 1 row and 67 (two workgroups of the lanes variants, ending inside a lane).

use wring::kernels::check::Tolerance;
use wring::kernels::quant::{QmatvecQ8, qmatvec, qmatvec_q8, quantize_q8};
use wring::kernels::{Choice, DType, Variant};
use wring::quant::BlockFormat;

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variant_format, variants};

fn inputs(f: BlockFormat, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let w = f
        .quantize_to_vec(&rng.vec(n * k, -0.08, 0.08))
        .expect("whole blocks");
    let x = rng.vec(k, -1.0, 1.0);
    let mut xq = vec![0u32; k / 32 * quantize_q8::UNIT_WORDS];
    quantize_q8::cpu(&x, &mut xq);
    (w, x, xq)
}

fn case(v: &'static Variant, n: usize, k: usize, seed: u64) -> Case<'static> {
    let f = variant_format(v);
    let (w, _, xq) = inputs(f, n, k, seed);
    let lanes = if v.define("ROW_PER_LANE").is_some() {
        1
    } else {
        v.define_u32("WG") as usize
    };
    let mut y = vec![0f32; n];
    qmatvec_q8::cpu(f, &w, &xq, &mut y, n, k, lanes);
    Case {
        name: format!("qmatvec_q8 variant={} n={n} k={k} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-10),
        out_dtype: DType::F32,
        out_shape: vec![n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tw = ctx.upload_blocks(&[n, k], f, &w)?;
            let tx = ctx.upload(&[xq.len()], &xq)?;
            step.run_with(
                &QmatvecQ8 { format: f, n, k },
                Choice::Force(&v.name),
                &[("w", &tw), ("x", &tx), ("y", out)],
            )
        }),
        needs_f16: v.requires.f16,
        needs_subgroup: v.requires.subgroup,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("qmatvec_q8") {
        let bl = variant_format(v).block_len();
        for (i, k) in [bl, 3 * bl, 576, 1536].into_iter().enumerate() {
            for n in [1, 67] {
                out.push(planned(v, move || case(v, n, k, (i * 100 + n) as u64)));
            }
        }
    }
    out
}

/// The price of 8-bit activations: the integer-dot twin against the f32-activation twin on the same
/// weights, for each format, at SmolLM2's widths.
#[test]
fn q8_activations_stay_within_their_budget() {
    for f in qmatvec_q8::FORMATS {
        for k in [576, 1536] {
            let n = 64;
            let (w, x, xq) = inputs(f, n, k, k as u64);
            let (mut exact, mut q8) = (vec![0f32; n], vec![0f32; n]);
            qmatvec::cpu(f, &w, &x, &mut exact, n, k, 1, 1);
            qmatvec_q8::cpu(f, &w, &xq, &mut q8, n, k, 1);
            let num: f64 = exact
                .iter()
                .zip(&q8)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let den: f64 = exact.iter().map(|a| f64::from(*a).powi(2)).sum();
            let nmse = num / den;
            assert!(
                nmse < 2e-4 && nmse > 0.0,
                "{f} k={k}: NMSE {nmse:e} of 8-bit activations"
            );
        }
    }
}

#[test]
fn qmatvec_q8_refuses_other_formats() {
    use wring::kernels::Kernel as _;
    let e = QmatvecQ8 {
        format: BlockFormat::Q4_K,
        n: 4,
        k: 256,
    }
    .plan(&wring::kernels::Caps::BASELINE, Choice::Auto)
    .unwrap_err();
    assert!(e.to_string().contains("no integer-dot product"), "{e}");
}
