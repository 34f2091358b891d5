//! `shaders/matvec.wgsl`: `y = W x` for a row-major `W` of `n` rows by `k` columns.

use crate::dtype::{DType, Float};
use crate::plan::{self, Caps, Choice, KernelError, Plan};
use crate::reduce::tree_sum;

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of W (outputs).
    pub n: u32,
    /// Columns of W (inputs).
    pub k: u32,
    /// Uniform padding to 16 bytes.
    pub pad: [u32; 2],
}

/// Plans `y[n] = W[n][k] x[k]` with W and x of `dtype`.
pub fn plan(dtype: DType, n: usize, k: usize, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
    let (auto, why) = if caps.subgroup {
        (format!("{dtype}_subgroup"), "the adapter has subgroups")
    } else {
        (format!("{dtype}_shared"), "the adapter has no subgroups")
    };
    let v = plan::select("matvec", &auto, why, caps, choice)?;
    plan::ensure(v.define("ELEM") == Some(dtype.name()), "matvec", || format!("variant {} does not take {dtype}", v.id()))?;
    plan::index_u32("matvec", "n * k", n.saturating_mul(k))?;
    let params = Params { n: n as u32, k: k as u32, pad: [0; 2] };
    let workgroups = plan::grid_1d("matvec", (n as u64).div_ceil(u64::from(v.define_u32("ROWS"))), caps)?;
    Ok(Plan { variant: v, params: bytemuck::bytes_of(&params).to_vec(), workgroups })
}

/// CPU twin of the shared-memory variant: each of `wg` invocations sums a strided slice of k, then the
/// tree of `shaders/common/reduce.wgsl` combines them, so the additions happen in the shader's order.
pub fn cpu<T: Float>(w: &[T], x: &[T], y: &mut [f32], k: usize, wg: usize) {
    let mut slots = vec![0.0f32; wg];
    for (row, out) in y.iter_mut().enumerate() {
        for (lid, slot) in slots.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            let mut kk = lid;
            while kk < k {
                sum += w[row * k + kk].to_f32() * x[kk].to_f32();
                kk += wg;
            }
            *slot = sum;
        }
        *out = tree_sum(&mut slots);
    }
}
