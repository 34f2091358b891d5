//! `get_rows`: the token-embedding gather from f32 or block-format tables, plain and scaled by Gemma's
//! sqrt(n_embd) (one correctly rounded product per value). Budget: exact bits.

use wring::kernels::tensor::GetRows;
use wring::kernels::tensor::get_rows;

use crate::kernels::variant_format;
use wring::kernels::check::Tolerance;
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// f32 and every block format; first and last rows and repeats. Dequantization on the device is
/// bit-identical to the reference.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for (v, scale) in variants("get_rows")
        .into_iter()
        .flat_map(|v| [(v, 1.0f32), (v, 128f32.sqrt())])
    {
        out.push(planned(v, move || {
            let table = if v.name == "f32" {
                DType::F32
            } else {
                DType::Block(variant_format(v))
            };
            let k = match table {
                DType::Block(f) => 2 * f.block_len(),
                _ => 68,
            };
            let rows = 37;
            let mut rng = Rng::new(k as u64);
            let values = rng.vec(rows * k, -0.5, 0.5);
            let data: Vec<u8> = match table {
                DType::Block(f) => f.quantize_to_vec(&values).unwrap(),
                _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            // First and last rows, and repeats. Dequantization on the device is bit-identical to the reference.
            let ids: Vec<u32> = vec![0, 36, 5, 5, 17];
            let mut want = vec![0.0f32; ids.len() * k];
            get_rows::cpu(table, &data, k, &ids, scale, &mut want);
            Case {
                name: format!(
                    "get_rows variant={} rows={rows} k={k} ids={ids:?} scale={scale}",
                    v.name
                ),
                tol: Tolerance::Exact,
                out_dtype: DType::F32,
                out_shape: vec![ids.len(), k],
                expected: want,
                record: Box::new(move |ctx, step, out| {
                    let t = match table {
                        DType::Block(f) => ctx.upload_blocks(&[rows, k], f, &data)?,
                        _ => ctx.upload(&[rows, k], &values)?,
                    };
                    let ti = ctx.upload(&[ids.len()], &ids)?;
                    let unit = GetRows {
                        table,
                        rows,
                        k,
                        tokens: ids.len(),
                        scale,
                    };
                    step.run_with(
                        &unit,
                        Choice::Force(&v.name),
                        &[("w", &t), ("ids", &ti), ("out", out)],
                    )
                }),
                needs_f16: false,
                needs_subgroup: false,
            }
        }));
    }
    out
}
