//! `rht`: the incoherence transform y = V x of `wring_quant::rht` per row. Budget: NMSE 1e-12 (the twin
//! runs the shader's arithmetic in its order; only the driver's contraction of multiply-adds differs).
//! Widths: SmolLM2's 576 (64 x 9) and 1536 (512 x 3), a power of two alone (64, and 4096: the largest
//! factor the workgroup holds), an odd factor alone (9), a mixed small one (20 = 4 x 5) and the odd
//! factor's largest (64 x 63); one row and several; random signs and activations.

use wring::kernels::check::Tolerance;
use wring::kernels::sparse::{Rht, rht};
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("rht") {
        for (i, &(n, rows)) in [
            (576, 1),
            (576, 3),
            (1536, 2),
            (64, 1),
            (4096, 2),
            (9, 4),
            (20, 5),
            (64 * 63, 1),
        ]
        .iter()
        .enumerate()
        {
            out.push(planned(v, move || {
                let seed = i as u64 + 1;
                let mut rng = Rng::new(seed);
                let x = rng.vec(rows * n, -2.0, 2.0);
                let signs = wring::quant::rht::signs_from_seed(n, seed);
                let t = wring::quant::rht::Rht::new(n).expect("a width with a transform");
                let dct = t.dct();
                let mut y = vec![0f32; rows * n];
                rht::cpu(n, &signs, &x, &mut y);
                Case {
                    name: format!(
                        "rht variant={} n={n} ({} x {}) rows={rows}",
                        v.name, t.a, t.b
                    ),
                    tol: Tolerance::Nmse(1e-12),
                    out_dtype: DType::F32,
                    out_shape: vec![rows, n],
                    expected: y,
                    record: Box::new(move |ctx, step, out| {
                        let tx = ctx.upload(&[rows, n], &x)?;
                        let ts = ctx.upload(&[signs.len()], &signs)?;
                        let td = ctx.upload(&[t.b, t.b], &dct)?;
                        step.run_with(
                            &Rht { n, rows },
                            Choice::Force(&v.name),
                            &[("x", &tx), ("signs", &ts), ("dct", &td), ("y", out)],
                        )
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
