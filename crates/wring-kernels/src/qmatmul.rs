//! `shaders/qmatmul.wgsl`: `c = a W^T` with W in a GGUF block format, dequantized into shared-memory tiles:
//! the prefill product on GPUs.

use wring_quant::BlockFormat;

use crate::dtype::DType;
use crate::plan::{self, Caps, Choice, KernelError, Plan};

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

/// Plans `c[m][n] = sum_k a[m][k] W[n][k]` with W in `format`.
pub fn plan(
    format: BlockFormat,
    m: usize,
    n: usize,
    k: usize,
    caps: &Caps,
    choice: Choice<'_>,
) -> Result<Plan, KernelError> {
    plan::ensure(k.is_multiple_of(format.block_len()), "qmatmul", || {
        format!(
            "k = {k} is not a whole number of {format} blocks of {}",
            format.block_len()
        )
    })?;
    let fmt = DType::Block(format).name();
    let v = plan::select(
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
    let workgroups = [
        plan::dim("qmatmul", (n as u64).div_ceil(bn), caps)?,
        plan::dim("qmatmul", (m as u64).div_ceil(bm), caps)?,
        1,
    ];
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

/// CPU twin: the reference dequantizer expands W, then each output accumulates over k in increasing order,
/// as each shader invocation does across its BK-deep tiles.
pub fn cpu(format: BlockFormat, w: &[u8], a: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    let wf = format.dequantize_to_vec(w, n * k).expect("whole blocks");
    crate::matmul::cpu(a, &wf, c, m, n, k);
}
