//! `shaders/matmul.wgsl`: `c = a b^T`, a of m x k, b of n x k (ggml's mul_mat convention).

use crate::dtype::{DType, Float};
use crate::plan::{self, Caps, Choice, KernelError, Plan};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of a and c.
    pub m: u32,
    /// Rows of b, columns of c.
    pub n: u32,
    /// The shared inner dimension.
    pub k: u32,
    /// Uniform padding to 16 bytes.
    pub pad: u32,
}

/// The k step of the shader's shared-memory tiles.
pub const BK: usize = 16;

/// Below this many rows or columns of c, the 64 x 64 tiles of the 4x4 variant are mostly idle, so the
/// 16 x 16 tiles of the 1x1 variant win; at and above it, register blocking wins.
pub const BLOCKED_MIN_DIM: usize = 64;

/// Plans `c[m][n] = sum_k a[m][k] b[n][k]` with a and b of `dtype` and c in f32.
pub fn plan(dtype: DType, m: usize, n: usize, k: usize, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
    let (auto, why) = if m >= BLOCKED_MIN_DIM && n >= BLOCKED_MIN_DIM {
        (format!("{dtype}_4x4"), "both output dimensions fill 64 x 64 tiles")
    } else {
        (format!("{dtype}_1x1"), "an output dimension is below 64, so 64 x 64 tiles would idle")
    };
    let v = plan::select("matmul", &auto, why, caps, choice)?;
    plan::ensure(v.define("ELEM") == Some(dtype.name()), "matmul", || format!("variant {} does not take {dtype}", v.id()))?;
    for (what, len) in [("m * k", m.saturating_mul(k)), ("n * k", n.saturating_mul(k)), ("m * n", m.saturating_mul(n))] {
        plan::index_u32("matmul", what, len)?;
    }
    let bm = 16 * v.define_u32("TM") as u64;
    let bn = 16 * v.define_u32("TN") as u64;
    let workgroups = [
        plan::dim("matmul", (n as u64).div_ceil(bn), caps)?,
        plan::dim("matmul", (m as u64).div_ceil(bm), caps)?,
        1,
    ];
    let params = Params { m: m as u32, n: n as u32, k: k as u32, pad: 0 };
    Ok(Plan { variant: v, params: bytemuck::bytes_of(&params).to_vec(), workgroups })
}

/// CPU twin: each output accumulates over k in BK-sized tiles in increasing k, the order in which every
/// shader invocation adds its products, in f32.
pub fn cpu<T: Float>(a: &[T], b: &[T], c: &mut [f32], m: usize, n: usize, k: usize) {
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0f32;
            let mut k0 = 0;
            while k0 < k {
                for kk in k0..(k0 + BK).min(k) {
                    acc += a[mi * k + kk].to_f32() * b[ni * k + kk].to_f32();
                }
                k0 += BK;
            }
            c[mi * n + ni] = acc;
        }
    }
}
