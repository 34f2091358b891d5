//! `shaders/get_rows.wgsl`: gather rows of a table (the token embedding), dequantizing block formats.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows to gather (ids).
    pub tokens: u32,
    /// Values per row (a multiple of 4, and of the block length for block formats).
    pub k: u32,
    /// Rows in the table.
    pub rows: u32,
    /// Bytes per table row.
    pub row_bytes: u32,
    /// What every gathered value is multiplied by (Gemma scales its embeddings by sqrt(n_embd)).
    pub scale: f32,
    /// Uniform padding to 32 bytes.
    pub pad: [u32; 3],
}

/// `out[t] = table[ids[t]]` for `tokens` ids into a `rows` x `k` table stored as `table` (f32 or a GGUF
/// block format, dequantized): the token-embedding lookup. Ids are checked against the table by the
/// caller; the kernel clamps as a last guard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GetRows {
    /// The table's element type.
    pub table: DType,
    /// Rows of the table.
    pub rows: usize,
    /// Values per row.
    pub k: usize,
    /// Ids looked up.
    pub tokens: usize,
    /// What every gathered value is multiplied by: 1, or Gemma's sqrt(n_embd).
    pub scale: f32,
}

impl Kernel for GetRows {
    fn kernel(&self) -> &'static str {
        "get_rows"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("w", self.table, 0).shape(&[self.rows, self.k]),
            Operand::read("ids", DType::U32, self.tokens),
            Operand::write("out", DType::F32, 0).shape(&[self.tokens, self.k]),
        ]
    }

    /// Plans gathering `tokens` rows of a `rows` x `k` table stored as `table`.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let GetRows {
            table,
            rows,
            k,
            tokens,
            scale,
        } = *self;
        let (auto, row_bytes) = match table {
            DType::F32 => ("f32".to_string(), k * 4),
            DType::Block(f) => {
                let rb = f.bytes_for(k).map_err(|e| KernelError::Shape {
                    kernel: "get_rows",
                    what: e.to_string(),
                })?;
                (table.name().to_string(), rb)
            }
            other => {
                return Err(KernelError::Shape {
                    kernel: "get_rows",
                    what: format!("tables of {other} are not supported"),
                });
            }
        };
        plan::ensure(k.is_multiple_of(4) && rows > 0, "get_rows", || {
            format!("rows of {k} values must be a multiple of 4, and the table not empty")
        })?;
        let v = crate::select(
            "get_rows",
            &auto,
            "it matches the table's type",
            caps,
            choice,
        )?;
        plan::ensure(v.name == auto, "get_rows", || {
            format!("variant {} does not read {table}", v.id())
        })?;
        plan::index_u32(
            "get_rows",
            "rows * row bytes",
            rows.saturating_mul(row_bytes),
        )?;
        let quads = plan::index_u32("get_rows", "tokens * k / 4", tokens.saturating_mul(k / 4))?;
        let params = Params {
            tokens: tokens as u32,
            k: k as u32,
            rows: rows as u32,
            row_bytes: row_bytes as u32,
            scale,
            pad: [0; 3],
        };
        plan::per_item(
            "get_rows",
            v,
            u64::from(quads),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// CPU twin: each output row is the reference dequantization of its table row (or the f32 row itself).
pub fn cpu(table: DType, data: &[u8], k: usize, ids: &[u32], scale: f32, out: &mut [f32]) {
    let row_bytes = table.bytes_for(k).expect("whole blocks");
    for (t, &id) in ids.iter().enumerate() {
        let src = &data[id as usize * row_bytes..][..row_bytes];
        let dst = &mut out[t * k..][..k];
        match table {
            DType::Block(f) => f.dequantize(src, dst).expect("one row of whole blocks"),
            _ => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        if scale != 1.0 {
            for d in dst.iter_mut() {
                *d *= scale;
            }
        }
    }
}
