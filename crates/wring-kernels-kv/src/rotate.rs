//! `shaders/kv/kv_rotate.wgsl`: the orthonormal Walsh-Hadamard rotation of query and key head vectors in
//! place. Rotating both by the same orthonormal matrix leaves every attention score unchanged, while a
//! key channel that is large for every token (the outliers a per-channel key quantizer pays for) is
//! spread over all channels of its head.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The largest head dimension the shader's workgroup buffer holds.
pub const MAX_DIM: usize = 256;

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub head_dim: u32,
    pub rows_q: u32,
    pub k_first: u32,
    pub rows_k: u32,
    pub scale: f32,
    pub pad: [u32; 3],
}

/// One rotation: `rows_q` head vectors of `q` and the `rows_k` head vectors of `k` from row `k_first` (the
/// step's keys in a cache of \[position\]\[kv head\]\[head_dim\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvRotate {
    /// Dimensions per head: a power of two up to [`MAX_DIM`].
    pub head_dim: usize,
    /// Query head vectors (tokens x query heads).
    pub rows_q: usize,
    /// The first key head vector rotated (first position x key heads).
    pub k_first: usize,
    /// Key head vectors rotated (tokens x key heads).
    pub rows_k: usize,
}

impl KvRotate {
    fn checked(&self) -> Result<Params, KernelError> {
        plan::ensure(
            self.head_dim.is_power_of_two() && self.head_dim <= MAX_DIM,
            "kv_rotate",
            || {
                format!(
                    "a Hadamard rotation needs a power-of-two head dimension up to {MAX_DIM}, not {}",
                    self.head_dim
                )
            },
        )?;
        let end = self.k_first.saturating_add(self.rows_k);
        plan::index_u32("kv_rotate", "key values", end.saturating_mul(self.head_dim))?;
        plan::index_u32(
            "kv_rotate",
            "query values",
            self.rows_q.saturating_mul(self.head_dim),
        )?;
        Ok(Params {
            head_dim: self.head_dim as u32,
            rows_q: self.rows_q as u32,
            k_first: self.k_first as u32,
            rows_k: self.rows_k as u32,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            pad: [0; 3],
        })
    }
}

impl Kernel for KvRotate {
    fn kernel(&self) -> &'static str {
        "kv_rotate"
    }

    fn operands(&self) -> Vec<Operand> {
        let hd = self.head_dim;
        vec![
            Operand::write("q", DType::F32, self.rows_q.saturating_mul(hd)),
            Operand::write(
                "k",
                DType::F32,
                self.k_first.saturating_add(self.rows_k).saturating_mul(hd),
            ),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = crate::choose(
            &crate::catalogue::kv_rotate::F32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let rows = (self.rows_q + self.rows_k) as u64;
        plan::linear("kv_rotate", v, rows, bytemuck::bytes_of(&p), caps)
    }
}

/// The fast Walsh-Hadamard transform of one head vector in the shader's order (stages of span 1, 2, 4,
/// ...), then the orthonormal scale.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for b in 0..n / 2 {
            let i = (b / h) * 2 * h + b % h;
            let (a, c) = (x[i], x[i + h]);
            x[i] = a + c;
            x[i + h] = a - c;
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    for v in x {
        *v *= scale;
    }
}

/// CPU twin of `kv_rotate`.
pub fn cpu(u: &KvRotate, q: &mut [f32], k: &mut [f32]) {
    let hd = u.head_dim;
    for row in q[..u.rows_q * hd].chunks_mut(hd) {
        hadamard(row);
    }
    for row in k[u.k_first * hd..(u.k_first + u.rows_k) * hd].chunks_mut(hd) {
        hadamard(row);
    }
}
