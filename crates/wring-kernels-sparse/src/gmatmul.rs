//! `shaders/sparse/gmatmul.wgsl`: `c = a Wᵀ` with W in `wring_quant::group`'s layout, decoded into
//! shared-memory tiles: the prefill product on GPUs (gmatvec's 8-row tiles serve CPU adapters).

use wring_quant::group::GroupMatrix;

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

use crate::gmatvec::Gmatvec;

/// `c[m][rows] = W[rows][cols] a[m][cols]` for a group-quantized W, tiled over m: [`Gmatvec`]'s operands
/// (a and c in place of x and y) with `batch` the activation rows m.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gmatmul(pub Gmatvec);

impl Gmatmul {
    /// The product for `w`'s layout with `m` activation rows.
    pub fn of(w: &GroupMatrix, m: usize) -> Gmatmul {
        Gmatmul(Gmatvec::of(w, m))
    }
}

impl Kernel for Gmatmul {
    fn kernel(&self) -> &'static str {
        "gmatmul"
    }

    fn operands(&self) -> Vec<Operand> {
        self.0.weight_operands("a", "c")
    }

    /// Plans the tiled product: one 16 x 16 workgroup per (16 TM) x (16 TN) tile of y.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let (stats, params) = self.0.checked_params("gmatmul")?;
        let v = crate::select(
            "gmatmul",
            &format!("{stats}_4x4"),
            "it is the variant for this statistics form",
            caps,
            choice,
        )?;
        plan::ensure(self.0.reads(v), "gmatmul", || {
            format!("variant {} does not read {stats} statistics", v.id())
        })?;
        let (bm, bn) = (
            16 * u64::from(v.define_u32("TM")),
            16 * u64::from(v.define_u32("TN")),
        );
        let workgroups = plan::grid_2d("gmatmul", self.0.layout.rows, self.0.batch, bn, bm, caps)?;
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// CPU twin: each output accumulates its row's dense weights over the stored columns in increasing order
/// (as each invocation does across its 16-deep tiles; pruned weights add 0), then the row's outliers in
/// order.
pub fn cpu(w: &GroupMatrix, x: &[f32], y: &mut [f32], m: usize) {
    let l = &w.layout;
    for (row, at) in w.row_starts().iter().enumerate() {
        let dense: Vec<(f32, usize)> = (0..l.cols)
            .map(|j| {
                let g = j / l.group;
                let v = w
                    .slot(row, g)
                    .map_or(0.0, |slot| w.decode(row, at, slot, g, j % l.group));
                (v, w.perm[j] as usize)
            })
            .collect();
        let (a, b) = (w.outliers[row] as usize, w.outliers[row + 1] as usize);
        for t in 0..m {
            let xs = &x[t * l.cols..][..l.cols];
            let mut acc = 0f32;
            for &(v, c) in &dense {
                acc += v * xs[c];
            }
            for &e in &w.outliers[a..b] {
                let v = half::f16::from_bits((e >> 16) as u16).to_f32();
                acc += v * xs[w.perm[(e & 0xFFFF) as usize] as usize];
            }
            y[t * l.rows + row] = acc;
        }
    }
}
