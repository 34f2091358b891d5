//! `shaders/qmatvec.wgsl`: `y[b] = W x[b]` with W in a GGUF block format, dequantized on the fly, for
//! any number of activation rows b (decode: 1; prefill: the prompt's tokens, in tiles of 8).

use wring_quant::BlockFormat;

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::tree_sum;
use wring_kernels_core::{Kernel, Operand};

/// Activation rows one workgroup takes in the batched variants.
pub const TILE: usize = 8;

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of W (outputs).
    pub n: u32,
    /// Columns of W (inputs), a multiple of the block length.
    pub k: u32,
    /// Activation rows.
    pub batch: u32,
    /// Bytes per row of W.
    pub row_bytes: u32,
}

/// `y[b] = W x[b]` with W in a GGUF block format (kept packed, dequantized on the fly) for `batch`
/// activation rows of f32 or f16 (`act`): decode (one row) and prefill on CPU adapters (tiles of 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qmatvec {
    /// W's block format.
    pub format: BlockFormat,
    /// The activations' type: f32, or f16 on adapters with `SHADER_F16`.
    pub act: DType,
    /// Rows of W (outputs).
    pub n: usize,
    /// Columns of W (inputs), a whole number of blocks.
    pub k: usize,
    /// Activation rows.
    pub batch: usize,
}

impl Kernel for Qmatvec {
    fn kernel(&self) -> &'static str {
        "qmatvec"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("w", DType::Block(self.format), 0).shape(&[self.n, self.k]),
            Operand::read("x", self.act, 0).shape(&[self.batch, self.k]),
            Operand::write("y", DType::F32, 0).shape(&[self.batch, self.n]),
        ]
    }

    /// Plans `y[batch][n] = W[n][k] x[batch][k]` for W in `format`.
    ///
    /// Batch 1 uses the single-row variants; more rows use the 8-row variants over tiles of 8 rows (the grid's
    /// y dimension), which dequantize each weight once per tile. CPU adapters get the `lanes` variants (each of 8 invocations owns a whole row, so the
    /// activations they read at each step are the same address: one broadcast load instead of a gather; 1.2 to
    /// 1.7x the one-row-per-workgroup layout on lavapipe); GPUs get one 64-invocation workgroup per row,
    /// reduced through subgroups where they exist.
    ///
    /// Activations are f32 or, on adapters with `SHADER_F16`, f16 (`act`).
    #[allow(
        clippy::too_many_arguments,
        reason = "a matrix product's shape, formats and choice"
    )]
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Qmatvec {
            format,
            act,
            n,
            k,
            batch,
        } = *self;
        plan::ensure(matches!(act, DType::F32 | DType::F16), "qmatvec", || {
            format!("activations must be f32 or f16, got {act}")
        })?;
        plan::ensure(k.is_multiple_of(format.block_len()), "qmatvec", || {
            format!(
                "k = {k} is not a whole number of {format} blocks of {}",
                format.block_len()
            )
        })?;
        plan::ensure(batch >= 1, "qmatvec", || {
            "the batch must have at least one row".into()
        })?;
        let fmt = DType::Block(format).name();
        let b = if batch == 1 { 1 } else { 8 };
        let (reduction, why) = plan::row_reduction(caps);
        let kind = reduction.matvec_name();
        let suffix = if act == DType::F16 { "_f16" } else { "" };
        let v = crate::select(
            "qmatvec",
            &format!("{fmt}_b{b}_{kind}{suffix}"),
            why,
            caps,
            choice,
        )?;
        plan::ensure(v.name.starts_with(fmt), "qmatvec", || {
            format!("variant {} does not read {format}", v.id())
        })?;
        plan::ensure(v.define("ACT") == Some(act.name()), "qmatvec", || {
            format!("variant {} does not take {act} activations", v.id())
        })?;
        let tile = v.define_u32("BATCH") as usize;
        let row_bytes = format.bytes_for(k).map_err(|e| KernelError::Shape {
            kernel: "qmatvec",
            what: e.to_string(),
        })?;
        plan::index_u32("qmatvec", "n * row bytes", n.saturating_mul(row_bytes))?;
        plan::index_u32("qmatvec", "batch * k", batch * k)?;
        let params = Params {
            n: n as u32,
            k: k as u32,
            batch: batch as u32,
            row_bytes: row_bytes as u32,
        };
        let rows_per_group = plan::rows_per_workgroup(v);
        let workgroups = plan::grid_rows("qmatvec", n, batch, rows_per_group, tile as u64, caps)?;
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// CPU twin: each of `wg` invocations takes the row's 32-value units in turn, dequantizes each with the
/// reference dequantizer and accumulates its products with x in order, then the tree of
/// `shaders/common/reduce.wgsl` combines the invocations. With `wg = 1` this is the `lanes` variants'
/// order, where one invocation walks the whole row.
///
/// f16 activations are widened to f32 before the call, as the shader widens them on load.
#[allow(
    clippy::too_many_arguments,
    reason = "a matrix product's shape and the shader's lane count"
)]
pub fn cpu(
    format: BlockFormat,
    w: &[u8],
    x: &[f32],
    y: &mut [f32],
    n: usize,
    k: usize,
    batch: usize,
    wg: usize,
) {
    let row_bytes = format.bytes_for(k).expect("k is a whole number of blocks");
    let units = k / 32;
    let mut row_values = vec![0f32; k];
    let mut slots = vec![vec![0f32; wg]; batch];
    for row in 0..n {
        // The reference dequantizer gives each unit's 32 values exactly as the shader's dequant32 does.
        format
            .dequantize(&w[row * row_bytes..][..row_bytes], &mut row_values)
            .expect("whole blocks");
        for s in slots.iter_mut() {
            s.fill(0.0);
        }
        for lid in 0..wg {
            let mut u = lid;
            while u < units {
                let v = &row_values[u * 32..][..32];
                for (b, s) in slots.iter_mut().enumerate() {
                    let xs = &x[b * k + u * 32..][..32];
                    // One 4-term dot product per quad, added in quad order, as the shader's dot(q, x).
                    for j in 0..8 {
                        s[lid] += v[4 * j] * xs[4 * j]
                            + v[4 * j + 1] * xs[4 * j + 1]
                            + v[4 * j + 2] * xs[4 * j + 2]
                            + v[4 * j + 3] * xs[4 * j + 3];
                    }
                }
                u += wg;
            }
        }
        for (b, s) in slots.iter_mut().enumerate() {
            y[b * n + row] = tree_sum(s);
        }
    }
}
