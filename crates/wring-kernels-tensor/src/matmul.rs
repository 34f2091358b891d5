//! `shaders/matmul.wgsl`: `c = a b^T`, a of m x k, b of n x k (ggml's mul_mat convention).

use wring_kernels_core::dtype::{DType, Float};
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

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

/// `c[m][n] = sum_k a[m][k] b[n][k]`: a and b of `dtype`, c in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matmul {
    /// Element type of a and b.
    pub dtype: DType,
    /// Rows of a and c.
    pub m: usize,
    /// Rows of b, columns of c.
    pub n: usize,
    /// The shared inner dimension.
    pub k: usize,
}

impl Kernel for Matmul {
    fn kernel(&self) -> &'static str {
        "matmul"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("a", self.dtype, 0).shape(&[self.m, self.k]),
            Operand::read("b", self.dtype, 0).shape(&[self.n, self.k]),
            Operand::write("c", DType::F32, 0).shape(&[self.m, self.n]),
        ]
    }

    /// Plans `c[m][n] = sum_k a[m][k] b[n][k]` with a and b of `dtype` and c in f32.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Matmul { dtype, m, n, k } = *self;
        use crate::catalogue::matmul as mm;
        let f16 = dtype == DType::F16;
        let (auto, why) = if caps.software && k.is_multiple_of(4) {
            (
                if f16 {
                    &mm::F16_DIRECT
                } else {
                    &mm::F32_DIRECT
                },
                "the adapter is a CPU, where barriers cost more than shared tiles save",
            )
        } else if m >= BLOCKED_MIN_DIM && n >= BLOCKED_MIN_DIM {
            (
                if f16 { &mm::F16_4X4 } else { &mm::F32_4X4 },
                "both output dimensions fill 64 x 64 tiles",
            )
        } else {
            (
                if f16 { &mm::F16_1X1 } else { &mm::F32_1X1 },
                "an output dimension is below 64, so 64 x 64 tiles would idle",
            )
        };
        let v = crate::choose(auto, why, caps, choice)?;
        plan::ensure(v.define("ELEM") == Some(dtype.name()), "matmul", || {
            format!("variant {} does not take {dtype}", v.id())
        })?;
        for (what, len) in [
            ("m * k", m.saturating_mul(k)),
            ("n * k", n.saturating_mul(k)),
            ("m * n", m.saturating_mul(n)),
        ] {
            plan::index_u32("matmul", what, len)?;
        }
        let direct = v.define("DIRECT").is_some();
        plan::ensure(!direct || k.is_multiple_of(4), "matmul", || {
            format!(
                "variant {} loads vec4 along k and needs k % 4 == 0, got k = {k}",
                v.id()
            )
        })?;
        // Rows and columns of c one workgroup covers: 16 invocations of TM x TN when tiled, 8 of TM x 4 when direct.
        let (bm, bn) = if direct {
            (8 * u64::from(v.define_u32("TM")), 8 * 4)
        } else {
            (
                16 * u64::from(v.define_u32("TM")),
                16 * u64::from(v.define_u32("TN")),
            )
        };
        let workgroups = plan::grid_2d("matmul", n, m, bn, bm, caps)?;
        let params = Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            pad: 0,
        };
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// CPU twin: each output accumulates over k in BK-sized tiles in increasing k, the order in which every
/// shader invocation adds its products, in f32.
pub fn cpu<T: Float>(a: &[T], b: &[T], c: &mut [f32], m: usize, n: usize, k: usize) {
    wring_kernels_core::reduce::matmul_k_order(a, b, c, m, n, k);
}

/// CPU twin of the DIRECT variant: each output accumulates one 4-term dot product per step of four k,
/// in increasing k, as one shader invocation does (k is a multiple of 4).
pub fn cpu_direct<T: Float>(a: &[T], b: &[T], c: &mut [f32], m: usize, n: usize, k: usize) {
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0f32;
            for k4 in (0..k).step_by(4) {
                let x = |i: usize| a[mi * k + k4 + i].to_f32();
                let w = |i: usize| b[ni * k + k4 + i].to_f32();
                acc += x(0) * w(0) + x(1) * w(1) + x(2) * w(2) + x(3) * w(3);
            }
            c[mi * n + ni] = acc;
        }
    }
}
