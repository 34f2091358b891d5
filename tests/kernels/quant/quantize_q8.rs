//! `quantize_q8`: activations to 8-bit codes, d and s per 32-value unit. Budget: exact (the twin computes
//! amax, the two divisions and the rounding as the shader does, each correctly rounded in f32; an adapter
//! whose division is not correctly rounded could move a code by one step at an exact tie, and this case
//! would report it). Shapes: one unit, several rows, SmolLM2's widths, a grid of more than one workgroup,
//! an all-zero unit (d = 0, no division by zero) and values that round to ±127 exactly.

use wring::kernels::check::Tolerance;
use wring::kernels::quant::{QuantizeQ8, quantize_q8};
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn case(rows: usize, k: usize, seed: u64) -> Case<'static> {
    let mut x = Rng::new(seed).vec(rows * k, -3.0, 3.0);
    // The first unit all zeros; the second's extremes exactly at ±amax.
    if x.len() >= 64 {
        x[..32].fill(0.0);
        x[32] = 2.5;
        x[33] = -2.5;
    }
    let unit = QuantizeQ8 { k, rows };
    let mut q = vec![0u32; unit.words()];
    quantize_q8::cpu(&x, &mut q);
    Case {
        name: format!("quantize_q8 rows={rows} k={k} seed={seed}"),
        tol: Tolerance::Exact,
        out_dtype: DType::U32,
        out_shape: vec![unit.words()],
        expected: q.iter().map(|&w| f32::from_bits(w)).collect(),
        record: Box::new(move |ctx, step, out| {
            let tx = ctx.upload(&[rows, k], &x)?;
            step.run_with(&unit, Choice::Auto, &[("x", &tx), ("q", out)])
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("quantize_q8") {
        for (rows, k) in [(1, 32), (3, 64), (1, 576), (1, 1536), (5, 1536)] {
            out.push(planned(v, move || {
                case(rows, k, (rows * 10_000 + k) as u64)
            }));
        }
    }
    out
}
