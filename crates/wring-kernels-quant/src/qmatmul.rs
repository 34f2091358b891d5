//! `shaders/qmatmul.wgsl`: `c = a W^T` with W in a GGUF block format, dequantized into shared-memory tiles:
//! the prefill product on GPUs.

use wring_quant::BlockFormat;

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of a and c (tokens).
    pub m: u32,
    /// Rows of W, columns of c (output features).
    pub n: u32,
    /// The shared inner dimension, a whole number of blocks.
    pub k: u32,
    /// Bytes per row of W.
    pub row_bytes: u32,
}

/// `c[m][n] = sum_k a[m][k] W[n][k]` with W in a GGUF block format (kept packed, dequantized into
/// shared-memory tiles) and a, c in f32: the prefill product on GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qmatmul {
    /// W's block format.
    pub format: BlockFormat,
    /// Rows of a and c (tokens).
    pub m: usize,
    /// Rows of W, columns of c (output features).
    pub n: usize,
    /// The inner dimension, a whole number of blocks.
    pub k: usize,
}

impl Kernel for Qmatmul {
    fn kernel(&self) -> &'static str {
        "qmatmul"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("a", DType::F32, 0).shape(&[self.m, self.k]),
            Operand::read("w", DType::Block(self.format), 0).shape(&[self.n, self.k]),
            Operand::write("c", DType::F32, 0).shape(&[self.m, self.n]),
        ]
    }

    /// Plans `c[m][n] = sum_k a[m][k] W[n][k]` with W in `format`.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Qmatmul { format, m, n, k } = *self;
        plan::ensure(k.is_multiple_of(format.block_len()), "qmatmul", || {
            format!(
                "k = {k} is not a whole number of {format} blocks of {}",
                format.block_len()
            )
        })?;
        let fmt = DType::Block(format).name();
        let v = crate::select(
            "qmatmul",
            &format!("{fmt}_4x4"),
            "it is the variant for this format",
            caps,
            choice,
        )?;
        plan::ensure(v.name.starts_with(fmt), "qmatmul", || {
            format!("variant {} does not read {format}", v.id())
        })?;
        let row_bytes = format.bytes_for(k).map_err(|e| KernelError::Shape {
            kernel: "qmatmul",
            what: e.to_string(),
        })?;
        plan::index_u32("qmatmul", "n * row bytes", n.saturating_mul(row_bytes))?;
        plan::index_u32("qmatmul", "m * k", m.saturating_mul(k))?;
        plan::index_u32("qmatmul", "m * n", m.saturating_mul(n))?;
        let (bm, bn) = (
            16 * u64::from(v.define_u32("TM")),
            16 * u64::from(v.define_u32("TN")),
        );
        let workgroups = plan::grid_2d("qmatmul", n, m, bn, bm, caps)?;
        let params = Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            row_bytes: row_bytes as u32,
        };
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// CPU twin: the reference dequantizer expands W, then each output accumulates over k in increasing order,
/// as each shader invocation does across its BK-deep tiles.
pub fn cpu(format: BlockFormat, w: &[u8], a: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    let wf = format.dequantize_to_vec(w, n * k).expect("whole blocks");
    wring_kernels_core::reduce::matmul_k_order(a, &wf, c, m, n, k);
}
