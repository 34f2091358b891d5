//! `shaders/softmax.wgsl`: numerically stable `softmax(x * scale)` per row.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan, RowReduction};
use wring_kernels_core::reduce::{NEG_MAX_F32, tree_max, tree_sum};
use wring_kernels_core::{DType, Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Row length.
    pub n: u32,
    /// Rows.
    pub rows: u32,
    /// Applied to x before the exponential (1/sqrt(head_dim) in attention).
    pub scale: f32,
    /// Uniform padding to 16 bytes.
    pub pad: u32,
}

/// Softmax of each of `rows` rows of `n` f32 values of `x * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Softmax {
    /// Row length.
    pub n: usize,
    /// Rows.
    pub rows: usize,
    /// Applied to x before the exponential.
    pub scale: f32,
}

impl Kernel for Softmax {
    fn kernel(&self) -> &'static str {
        "softmax"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("x", DType::F32, 0).shape(&[self.rows, self.n]),
            Operand::write("y", DType::F32, 0).shape(&[self.rows, self.n]),
        ]
    }

    /// Plans softmax over `rows` rows of `n` f32 values.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Softmax { n, rows, scale } = *self;
        let (kind, why) = plan::row_reduction(caps);
        let auto = match kind {
            RowReduction::Narrow => &crate::catalogue::softmax::NARROW,
            RowReduction::Shared => &crate::catalogue::softmax::SHARED,
            RowReduction::Subgroup => &crate::catalogue::softmax::SUBGROUP,
        };
        let v = crate::choose(auto, why, caps, choice)?;
        plan::ensure(n > 0, "softmax", || "rows must not be empty".into())?;
        plan::index_u32("softmax", "rows * n", rows.saturating_mul(n))?;
        let params = Params {
            n: n as u32,
            rows: rows as u32,
            scale,
            pad: 0,
        };
        plan::linear("softmax", v, rows as u64, bytemuck::bytes_of(&params), caps)
    }
}

/// CPU twin of the shared-memory variant, with `wg` invocations per row.
pub fn cpu(x: &[f32], y: &mut [f32], n: usize, scale: f32, wg: usize) {
    let mut slots = vec![0.0f32; wg];
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        for (lid, slot) in slots.iter_mut().enumerate() {
            let mut m = NEG_MAX_F32;
            let mut i = lid;
            while i < n {
                m = m.max(xr[i] * scale);
                i += wg;
            }
            *slot = m;
        }
        let row_max = tree_max(&mut slots);
        for (lid, slot) in slots.iter_mut().enumerate() {
            let mut s = 0.0f32;
            let mut i = lid;
            while i < n {
                s += (xr[i] * scale - row_max).exp();
                i += wg;
            }
            *slot = s;
        }
        let inv_sum = 1.0 / tree_sum(&mut slots);
        for i in 0..n {
            yr[i] = (xr[i] * scale - row_max).exp() * inv_sum;
        }
    }
}
