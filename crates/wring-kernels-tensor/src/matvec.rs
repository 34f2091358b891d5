//! `shaders/matvec.wgsl`: `y = W x` for a row-major `W` of `n` rows by `k` columns.

use wring_kernels_core::dtype::{DType, Float};
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::tree_sum;
use wring_kernels_core::{Kernel, Operand};

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

/// `y[n] = W[n][k] x[k]`: W and x of `dtype`, y in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matvec {
    /// Element type of W and x.
    pub dtype: DType,
    /// Rows of W (outputs).
    pub n: usize,
    /// Columns of W (inputs).
    pub k: usize,
}

impl Kernel for Matvec {
    fn kernel(&self) -> &'static str {
        "matvec"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("w", self.dtype, 0).shape(&[self.n, self.k]),
            Operand::read("x", self.dtype, self.k),
            Operand::write("y", DType::F32, self.n),
        ]
    }

    /// Plans `y[n] = W[n][k] x[k]` with W and x of `dtype`.
    ///
    /// When k is a multiple of 4 the vec4 variants load 16 bytes (f32) per step. On CPU adapters the narrow
    /// variant (8 invocations, one row per workgroup) wins: each workgroup is one SIMD batch on one core, and
    /// wide workgroups only add barrier switches. On GPUs 64 invocations per workgroup keep the cores busy.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Matvec { dtype, n, k } = *self;
        use crate::catalogue::matvec as mv;
        let f16 = dtype == DType::F16;
        let pick = |a: &'static wring_kernels_core::Variant, b| if f16 { b } else { a };
        let (auto, why) = match (k.is_multiple_of(4), caps.software, caps.subgroup) {
            (true, true, _) => (
                pick(&mv::F32_VEC4_NARROW, &mv::F16_VEC4_NARROW),
                "k is a multiple of 4 and the adapter is a CPU",
            ),
            (true, false, true) => (
                pick(&mv::F32_VEC4_SUBGROUP, &mv::F16_VEC4_SUBGROUP),
                "k is a multiple of 4 and the adapter has subgroups",
            ),
            (true, false, false) => (
                pick(&mv::F32_VEC4_SHARED, &mv::F16_VEC4_SHARED),
                "k is a multiple of 4 and the adapter has no subgroups",
            ),
            (false, _, true) => (
                pick(&mv::F32_SUBGROUP, &mv::F16_SUBGROUP),
                "k is not a multiple of 4 and the adapter has subgroups",
            ),
            (false, _, false) => (
                pick(&mv::F32_SHARED, &mv::F16_SHARED),
                "k is not a multiple of 4 and the adapter has no subgroups",
            ),
        };
        let v = crate::choose(auto, why, caps, choice)?;
        plan::ensure(v.define("ELEM") == Some(dtype.name()), "matvec", || {
            format!("variant {} does not take {dtype}", v.id())
        })?;
        let vec4 = v.define("VEC4").is_some();
        plan::ensure(!vec4 || k.is_multiple_of(4), "matvec", || {
            format!(
                "variant {} loads vec4 along k and needs k % 4 == 0, got k = {k}",
                v.id()
            )
        })?;
        plan::index_u32("matvec", "n * k", n.saturating_mul(k))?;
        let params = Params {
            n: n as u32,
            k: k as u32,
            pad: [0; 2],
        };
        plan::linear(
            "matvec",
            v,
            (n as u64).div_ceil(u64::from(v.define_u32("ROWS"))),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
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

/// CPU twin of the VEC4 variants: each invocation keeps four running sums (one per vec4 lane) over the
/// vec4 steps it owns, folds them as (x + y) + (z + w), then the tree combines invocations.
pub fn cpu_vec4<T: Float>(w: &[T], x: &[T], y: &mut [f32], k: usize, wg: usize) {
    let kv = k / 4;
    let mut slots = vec![0.0f32; wg];
    for (row, out) in y.iter_mut().enumerate() {
        for (lid, slot) in slots.iter_mut().enumerate() {
            let mut sum = [0.0f32; 4];
            let mut kk = lid;
            while kk < kv {
                for (c, s) in sum.iter_mut().enumerate() {
                    *s += w[row * k + 4 * kk + c].to_f32() * x[4 * kk + c].to_f32();
                }
                kk += wg;
            }
            *slot = (sum[0] + sum[1]) + (sum[2] + sum[3]);
        }
        *out = tree_sum(&mut slots);
    }
}
