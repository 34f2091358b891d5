//! `shaders/rmsnorm.wgsl`: `y = x / sqrt(mean(x^2) + eps) * w` per row.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan, RowReduction};
use wring_kernels_core::reduce::tree_sum;
use wring_kernels_core::{DType, Kernel, Operand, q8};

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
        self.plan_out(caps, choice, false)
    }
}

/// [`Rmsnorm`] writing `y` as 8-bit activation units (`q`, [`wring_kernels_core::q8`]) for `qmatvec_q8`
/// instead of floats: the `_q8` variants, the quantize_q8 launch folded into the norm. `n` must be a
/// multiple of 32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsnormQ8(pub Rmsnorm);

impl Kernel for RmsnormQ8 {
    fn kernel(&self) -> &'static str {
        "rmsnorm"
    }

    fn operands(&self) -> Vec<Operand> {
        let Rmsnorm { n, rows, .. } = self.0;
        q8::units_output(self.0.operands(), "y", "q", rows.saturating_mul(n))
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        self.0.plan_out(caps, choice, true)
    }
}

impl Rmsnorm {
    /// The plan of either output form: floats, or 8-bit units (`q8`).
    fn plan_out(&self, caps: &Caps, choice: Choice<'_>, q8: bool) -> Result<Plan, KernelError> {
        let Rmsnorm {
            n,
            rows,
            eps,
            residual,
        } = *self;
        use crate::catalogue::rmsnorm as r;
        let (kind, why) = plan::row_reduction(caps);
        let auto = match (kind, residual, q8) {
            (RowReduction::Narrow, false, false) => &r::NARROW,
            (RowReduction::Narrow, true, false) => &r::NARROW_ADD,
            (RowReduction::Shared, false, false) => &r::SHARED,
            (RowReduction::Shared, true, false) => &r::SHARED_ADD,
            (RowReduction::Subgroup, false, false) => &r::SUBGROUP,
            (RowReduction::Subgroup, true, false) => &r::SUBGROUP_ADD,
            (RowReduction::Narrow, false, true) => &r::NARROW_Q8,
            (RowReduction::Narrow, true, true) => &r::NARROW_ADD_Q8,
            (RowReduction::Shared, false, true) => &r::SHARED_Q8,
            (RowReduction::Shared, true, true) => &r::SHARED_ADD_Q8,
            (RowReduction::Subgroup, false, true) => &r::SUBGROUP_Q8,
            (RowReduction::Subgroup, true, true) => &r::SUBGROUP_ADD_Q8,
        };
        let v = crate::choose(auto, why, caps, choice)?;
        plan::ensure(
            v.define("RESIDUAL").is_some() == residual,
            "rmsnorm",
            || format!("variant {} does not match residual = {residual}", v.id()),
        )?;
        plan::ensure(v.define("Q8OUT").is_some() == q8, "rmsnorm", || {
            format!(
                "variant {} does not write {}",
                v.id(),
                if q8 { "8-bit units" } else { "floats" }
            )
        })?;
        plan::ensure(!q8 || n.is_multiple_of(32), "rmsnorm", || {
            format!("8-bit units need rows of whole 32-value units, not {n}")
        })?;
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
