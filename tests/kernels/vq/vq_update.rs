//! `vq_update`: the k-means centroid update, centroids becoming the means of their points (read through a
//! row stride and column offset) grouped by the host's counting sort; empty clusters keep their values.
//! Budget: exact bits (the same f32 sums in the same order, and one division).

use wring::kernels::check::Tolerance;
use wring::kernels::vq::{Update, vq};
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng, copy_into};
use crate::kernels::{Planned, planned, variants};

/// (points, centroids, dimensions, row stride, first column).
const SHAPES: [(usize, usize, usize, usize, usize); 4] = [
    (1, 1, 1, 1, 0),
    (10, 4, 3, 5, 2),
    (500, 37, 16, 16, 0),
    (2000, 300, 8, 24, 8),
];

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("vq_update") {
        for (i, (points, k, d, x_stride, x_offset)) in SHAPES.into_iter().enumerate() {
            out.push(planned(v, move || {
                let mut rng = Rng::new(i as u64);
                let x = rng.vec(points * x_stride, -3.0, 3.0);
                // Assignments over k + 2 values: some points are assigned past k (ignored), some clusters
                // get none (left unchanged).
                let assign: Vec<u32> = (0..points)
                    .map(|_| (rng.next_u64() % (k as u64 + 2)) as u32)
                    .collect();
                let (order, offsets) = vq::group_by_cluster(&assign, k);
                let init = rng.vec(k * d, -1.0, 1.0);
                let up = Update {
                    k,
                    d,
                    x_stride,
                    x_offset,
                    points: order.len(),
                };
                let mut want = init.clone();
                vq::cpu_update(&up, &x, &order, &offsets, &mut want);
                Case {
                    name: format!("vq_update variant={} {up:?}", v.name),
                    tol: Tolerance::Exact,
                    out_dtype: DType::F32,
                    out_shape: vec![k * d],
                    expected: want,
                    record: Box::new(move |ctx, step, out| {
                        let tx = ctx.upload(&[points, x_stride], &x)?;
                        // An empty order still binds one word.
                        let order = if order.is_empty() {
                            vec![0]
                        } else {
                            order.clone()
                        };
                        let to = ctx.upload(&[order.len()], &order)?;
                        let toff = ctx.upload(&[k + 1], &offsets)?;
                        let t0 = ctx.upload(&[k * d], &init)?;
                        copy_into(step, &t0, out, 0)?;
                        let operands = [
                            ("x", &tx),
                            ("order", &to),
                            ("offsets", &toff),
                            ("centroids", out),
                        ];
                        step.run_with(&up, Choice::Force(&v.name), &operands)
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
