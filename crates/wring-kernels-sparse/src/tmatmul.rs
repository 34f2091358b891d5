//! `shaders/sparse/tmatmul.wgsl`: the prefill product with trellis-coded weights on GPUs: one row tile
//! (16 weight rows) by 64 activation rows per workgroup, each tile's 256 weights decoded once into shared
//! memory per 64 activation rows.

use wring_quant::group::GroupMatrix;
use wring_quant::trellis;

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

use crate::tmatvec::{Params, Tmatvec};

/// Activation rows one workgroup takes.
pub const BM: usize = 64;

/// `c[batch][rows] = W[rows][cols] a[batch][cols]` for a trellis-coded W: [`Tmatvec`]'s product, tiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tmatmul(pub Tmatvec);

impl Kernel for Tmatmul {
    fn kernel(&self) -> &'static str {
        "tmatmul"
    }

    fn operands(&self) -> Vec<Operand> {
        let l = &self.0.layout;
        let mut ops = self.0.weight_operands();
        ops.extend([
            Operand::read("a", DType::F32, 0).shape(&[self.0.batch, l.cols]),
            Operand::write("c", DType::F32, 0).shape(&[self.0.batch, l.rows]),
        ]);
        ops
    }

    /// One workgroup per (row tile, 64 activation rows); the width is the variant's constant.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let params: Params = self.0.checked_params("tmatmul")?;
        let l = self.0.layout;
        let v = crate::select(
            "tmatmul",
            &format!("tile64_w{}", l.bits),
            "it is the one variant for this width",
            caps,
            choice,
        )?;
        crate::tmatvec::ensure_width("tmatmul", v, l.bits)?;
        let workgroups = plan::grid_2d(
            "tmatmul",
            l.rows,
            self.0.batch,
            trellis::TILE as u64,
            BM as u64,
            caps,
        )?;
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// CPU twin: each output in the shader's order: over the column tiles in order, the tile's 16 products
/// as four `dot`s of four added up, then the row's scale, then its outliers in order.
pub fn cpu(m: &GroupMatrix, a: &[f32], c: &mut [f32], batch: usize) {
    crate::tmatvec::cpu(m, a, c, batch, 1);
}
