//! `shaders/silu_mul.wgsl`: `silu(a) * b`, the SwiGLU gate.

use crate::plan::{self, Caps, Choice, KernelError, Plan};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Elements.
    pub n: u32,
    /// Uniform padding to 16 bytes.
    pub pad: [u32; 3],
}

/// Plans `y = silu(a) * b` over `n` f32 elements.
pub fn plan(n: usize, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
    let v = plan::select("silu_mul", "f32", "it is the only variant", caps, choice)?;
    let params = Params { n: plan::index_u32("silu_mul", "n", n)?, pad: [0; 3] };
    let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
    let workgroups = plan::grid_1d("silu_mul", (n as u64).div_ceil(per_group), caps)?;
    Ok(Plan { variant: v, params: bytemuck::bytes_of(&params).to_vec(), workgroups })
}

/// CPU twin: `y[i] = a[i] / (1 + exp(-a[i])) * b[i]`.
pub fn cpu(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((yi, &x), &bi) in y.iter_mut().zip(a).zip(b) {
        *yi = x / (1.0 + (-x).exp()) * bi;
    }
}
