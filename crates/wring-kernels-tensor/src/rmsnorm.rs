//! `shaders/rmsnorm.wgsl`: `y = x / sqrt(mean(x^2) + eps) * w` per row.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan, RowReduction};
use wring_kernels_core::reduce::tree_sum;
use wring_kernels_core::{DType, Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Row length.
    pub n: u32,
    /// Rows.
    pub rows: u32,
    /// Added to the mean square before the square root.
    pub eps: f32,
    /// Uniform padding to 16 bytes.
    pub pad: u32,
}

/// RMSNorm of `rows` rows of `n` f32 values, `y = x / sqrt(mean(x^2) + eps) * w`; with `residual`, of
/// `s = x + r`, also writing `s` (the `_add` variants: the residual add fused into the norm after it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rmsnorm {
    /// Row length.
    pub n: usize,
    /// Rows.
    pub rows: usize,
    /// Added to the mean square before the square root.
    pub eps: f32,
    /// Whether a residual `r` is added first (and the sum written to `s`).
    pub residual: bool,
}

impl Kernel for Rmsnorm {
    fn kernel(&self) -> &'static str {
        "rmsnorm"
    }

    fn operands(&self) -> Vec<Operand> {
        let shape = [self.rows, self.n];
        let mut ops = vec![
            Operand::read("x", DType::F32, 0).shape(&shape),
            Operand::read("w", DType::F32, self.n),
            Operand::write("y", DType::F32, 0).shape(&shape),
        ];
        if self.residual {
            ops.push(Operand::read("r", DType::F32, 0).shape(&shape));
            ops.push(Operand::write("s", DType::F32, 0).shape(&shape));
        }
        ops
    }

    /// Plans RMSNorm over `rows` rows of `n` f32 values; with `residual`, of `x + r`, also writing that sum
    /// (the `_add` variants).
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Rmsnorm {
            n,
            rows,
            eps,
            residual,
        } = *self;
        use crate::catalogue::rmsnorm as r;
        let (kind, why) = plan::row_reduction(caps);
        let auto = match (kind, residual) {
            (RowReduction::Narrow, false) => &r::NARROW,
            (RowReduction::Narrow, true) => &r::NARROW_ADD,
            (RowReduction::Shared, false) => &r::SHARED,
            (RowReduction::Shared, true) => &r::SHARED_ADD,
            (RowReduction::Subgroup, false) => &r::SUBGROUP,
            (RowReduction::Subgroup, true) => &r::SUBGROUP_ADD,
        };
        let v = crate::choose(auto, why, caps, choice)?;
        plan::ensure(
            v.define("RESIDUAL").is_some() == residual,
            "rmsnorm",
            || format!("variant {} does not match residual = {residual}", v.id()),
        )?;
        plan::ensure(n > 0, "rmsnorm", || "rows must not be empty".into())?;
        plan::index_u32("rmsnorm", "rows * n", rows.saturating_mul(n))?;
        let params = Params {
            n: n as u32,
            rows: rows as u32,
            eps,
            pad: 0,
        };
        plan::linear("rmsnorm", v, rows as u64, bytemuck::bytes_of(&params), caps)
    }
}

/// CPU twin of the shared-memory variant, with `wg` invocations per row.
pub fn cpu(x: &[f32], w: &[f32], y: &mut [f32], n: usize, eps: f32, wg: usize) {
    let mut slots = vec![0.0f32; wg];
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        for (lid, slot) in slots.iter_mut().enumerate() {
            let mut ss = 0.0f32;
            let mut i = lid;
            while i < n {
                ss += xr[i] * xr[i];
                i += wg;
            }
            *slot = ss;
        }
        let total = tree_sum(&mut slots);
        let scale = 1.0 / (total / n as f32 + eps).sqrt();
        for i in 0..n {
            yr[i] = xr[i] * scale * w[i];
        }
    }
}

/// CPU twin of the `_add` variants: `s = x + r`, then [`cpu`] on `s` (the shader recomputes the same sum).
#[allow(
    clippy::too_many_arguments,
    reason = "two inputs, two outputs and the norm's shape"
)]
pub fn cpu_add(
    x: &[f32],
    r: &[f32],
    w: &[f32],
    y: &mut [f32],
    s: &mut [f32],
    n: usize,
    eps: f32,
    wg: usize,
) {
    for ((si, &a), &b) in s.iter_mut().zip(x).zip(r) {
        *si = a + b;
    }
    cpu(s, w, y, n, eps, wg);
}
