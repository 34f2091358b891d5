//! `vq_norms`: squared norms of rows of f32 or f16 matrices, over a column range of strided rows.
//! Budget: NMSE 1e-12 (a sum of squares in index order, as the twin).

use wring::kernels::check::Tolerance;
use wring::kernels::vq::{Norms, vq};
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// (rows, columns summed, row stride, first column).
const SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 1, 0),
    (7, 3, 3, 0),
    (65, 37, 40, 2),
    (300, 16, 32, 16),
    (1000, 8, 8, 0),
];

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("vq_norms") {
        let f16 = v.define("ELEM") == Some("f16");
        for (i, (rows, d, stride, offset)) in SHAPES.into_iter().enumerate() {
            out.push(planned(v, move || {
                let mut x = Rng::new(i as u64).vec(rows * stride, -2.0, 2.0);
                if f16 {
                    x.iter_mut()
                        .for_each(|c| *c = half::f16::from_f32(*c).to_f32());
                }
                let want: Vec<f32> = (0..rows)
                    .map(|r| vq::norm2(&x[r * stride + offset..][..d]))
                    .collect();
                let dtype = if f16 { DType::F16 } else { DType::F32 };
                Case {
                    name: format!(
                        "vq_norms variant={} rows={rows} d={d} stride={stride} offset={offset}",
                        v.name
                    ),
                    tol: Tolerance::Nmse(1e-12),
                    out_dtype: DType::F32,
                    out_shape: vec![rows],
                    expected: want,
                    record: Box::new(move |ctx, step, out| {
                        let t = if f16 {
                            let h: Vec<half::f16> =
                                x.iter().map(|&v| half::f16::from_f32(v)).collect();
                            ctx.upload(&[rows, stride], &h)?
                        } else {
                            ctx.upload(&[rows, stride], &x)?
                        };
                        let unit = Norms {
                            rows,
                            d,
                            stride,
                            offset,
                            dtype,
                        };
                        step.run_with(&unit, Choice::Force(&v.name), &[("x", &t), ("out", out)])
                    }),
                    needs_f16: f16,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
