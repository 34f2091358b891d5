//! Codebooks on the device and exact search against them.

use wring_runtime::kernels::DType;
use wring_runtime::kernels::vq::{Merge, Metric, Norms, Search, vq};
use wring_runtime::{Context, Tensor};

use crate::{Result, VqError, request};

/// A codebook of `k` codewords of `d` dimensions, kept on the host (f32) and on the device (f32 or f16)
/// with each codeword's squared norm, split into chunks that each fit the adapter's binding limit.
#[derive(Debug)]
pub struct Codebook {
    k: usize,
    d: usize,
    dtype: DType,
    values: Vec<f32>,
    chunks: Vec<Chunk>,
}

#[derive(Debug)]
struct Chunk {
    codes: Tensor,
    norms: Tensor,
    base: usize,
    n: usize,
}

impl Codebook {
    /// Uploads `values` (\[k\]\[d\], row-major) as a codebook of `dtype` (f32, or f16 where the adapter has
    /// `SHADER_F16`: half the memory and bandwidth, each value rounded to f16 once).
    pub fn new(ctx: &Context, values: Vec<f32>, d: usize, dtype: DType) -> Result<Codebook> {
        if d == 0 || values.is_empty() || !values.len().is_multiple_of(d) {
            return request(format!(
                "a codebook needs d >= 1 and a whole number of codewords, got {} values for d = {d}",
                values.len()
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return request(format!("codebook value {i} is {}", values[i]));
        }
        if !matches!(dtype, DType::F32 | DType::F16) || (dtype == DType::F16 && !ctx.caps().f16) {
            return request(format!(
                "codebooks are stored as f32, or f16 on adapters with SHADER_F16; not {dtype} here"
            ));
        }
        let k = values.len() / d;
        if k > u32::MAX as usize - 1 {
            return request(format!("{k} codewords are more than 32-bit ids can name"));
        }
        let limit = ctx
            .info()
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.info().limits.max_buffer_size);
        let per_row = (d * dtype.size()) as u64;
        if per_row > limit {
            return Err(VqError::Runtime(wring_runtime::Error::BufferTooLarge {
                what: "one codeword".into(),
                bytes: per_row,
                limit,
                limit_name: "max storage buffer binding size",
            }));
        }
        let rows = ((limit / per_row) as usize).min(k);
        let mut chunks = Vec::new();
        let mut step = ctx.step("codebook norms");
        for base in (0..k).step_by(rows) {
            let n = rows.min(k - base);
            let part = &values[base * d..(base + n) * d];
            let codes = if dtype == DType::F16 {
                ctx.upload(
                    &[n, d],
                    &part
                        .iter()
                        .map(|&v| half::f16::from_f32(v))
                        .collect::<Vec<_>>(),
                )?
            } else {
                ctx.upload(&[n, d], part)?
            };
            let norms = ctx.empty(&[n], DType::F32)?;
            let geometry = Norms {
                rows: n,
                d,
                stride: d,
                offset: 0,
                dtype: codes.dtype(),
            };
            step.run(&geometry, &[("x", &codes), ("out", &norms)])?;
            chunks.push(Chunk {
                codes,
                norms,
                base,
                n,
            });
        }
        step.submit()?;
        Ok(Codebook {
            k,
            d,
            dtype,
            values,
            chunks,
        })
    }

    /// Codewords.
    pub fn len(&self) -> usize {
        self.k
    }

    /// Whether there are no codewords (never: a codebook has at least one).
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// Dimensions.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The device element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The codewords as given (\[k\]\[d\]).
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Records `op` of codeword `ids[r]` onto columns `offset..offset + d` of each row of `out` (f32, row
    /// stride `stride`), chunk by chunk. Ids must be below `len()`; the caller checks them.
    #[allow(
        clippy::too_many_arguments,
        reason = "the output's layout and the operation"
    )]
    pub(crate) fn lookup(
        &self,
        step: &mut wring_runtime::Step<'_>,
        ids: &Tensor,
        n: usize,
        out: &Tensor,
        stride: usize,
        offset: usize,
        op: vq::LookupOp,
    ) -> Result<()> {
        for c in &self.chunks {
            let l = vq::Lookup {
                n,
                d: self.d,
                out_stride: stride,
                out_offset: offset,
                code_base: c.base,
                n_codes: c.n,
                op,
                dtype: self.dtype,
            };
            step.run(&l, &[("ids", ids), ("codes", &c.codes), ("out", out)])?;
        }
        Ok(())
    }
}

/// Rows of vectors on the device: row r is `tensor[r * stride + offset ..][..d]` (f32).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The f32 tensor holding them.
    pub tensor: &'a Tensor,
    /// Rows.
    pub rows: usize,
    /// Elements from one row to the next.
    pub stride: usize,
    /// Column of the first dimension.
    pub offset: usize,
    /// Dimensions.
    pub d: usize,
}

/// The k nearest codewords of each query, best first: `distances` and `ids` are \[queries\]\[k\].
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    /// Neighbours per query.
    pub k: usize,
    /// Squared L2 distance, inner product or cosine similarity, as the metric defines.
    pub distances: Vec<f32>,
    /// Codeword indices.
    pub ids: Vec<u32>,
}

/// Searches host queries (\[n\]\[d\], row-major) for their `k` nearest codewords, uploading them in blocks
/// that fit the binding limit.
pub fn search(
    ctx: &Context,
    cb: &Codebook,
    queries: &[f32],
    k: usize,
    metric: Metric,
) -> Result<Neighbours> {
    let d = cb.d;
    if !queries.len().is_multiple_of(d) {
        return request(format!(
            "{} query values are not a whole number of {d}-dimensional vectors",
            queries.len()
        ));
    }
    if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
        return request(format!("query value {i} is {}", queries[i]));
    }
    let n = queries.len() / d;
    let limit = ctx.info().limits.max_storage_buffer_binding_size as usize;
    let block = (limit / (4 * d)).max(1);
    let mut out = Neighbours {
        k,
        distances: Vec::with_capacity(n * k),
        ids: Vec::with_capacity(n * k),
    };
    for q0 in (0..n).step_by(block) {
        let rows = block.min(n - q0);
        let x = ctx.upload(&[rows, d], &queries[q0 * d..(q0 + rows) * d])?;
        let part = search_rows(
            ctx,
            cb,
            Rows {
                tensor: &x,
                rows,
                stride: d,
                offset: 0,
                d,
            },
            k,
            metric,
        )?;
        out.distances.extend(part.distances);
        out.ids.extend(part.ids);
    }
    Ok(out)
}

/// Searches device rows for their `k` nearest codewords: every chunk of the codebook is searched by one
/// `vq_search` launch into a shared scratch, then `vq_merge` picks the final lists, and for L2
/// `vq_refine` recomputes the chosen pairs' distances directly (the expansion that ranks them loses
/// digits to cancellation) and the host re-sorts each query's k by them. Queries go in blocks
/// sized so that the scratch fits the binding limit.
pub fn search_rows(
    ctx: &Context,
    cb: &Codebook,
    x: Rows<'_>,
    k: usize,
    metric: Metric,
) -> Result<Neighbours> {
    if x.d != cb.d {
        return request(format!(
            "queries have {} dimensions, the codebook {}",
            x.d, cb.d
        ));
    }
    if k == 0 || k > vq::MAX_K || k > cb.k {
        return request(format!(
            "k = {k} must be between 1 and min({}, the codebook's {} codewords)",
            vq::MAX_K,
            cb.k
        ));
    }
    if x.rows == 0 {
        return Ok(Neighbours {
            k,
            distances: Vec::new(),
            ids: Vec::new(),
        });
    }
    let caps = *ctx.caps();
    let split_lens: Vec<usize> = cb
        .chunks
        .iter()
        .map(|c| Search::split_len_for(x.rows, c.n, &caps))
        .collect();
    let lists: usize = cb
        .chunks
        .iter()
        .zip(&split_lens)
        .map(|(c, &s)| c.n.div_ceil(s) * vq::SEARCH_WX)
        .sum();
    let limit = ctx.info().limits.max_storage_buffer_binding_size as usize;
    // The scratch per query, and the workgroup grid's query dimension, bound the block.
    let per_query = lists * k * 4;
    let max_grid = caps.max_workgroups_per_dim as usize * vq::SEARCH_WY * vq::SEARCH_TM;
    let block = (limit / per_query).clamp(1, max_grid).min(x.rows);
    let mut out = Neighbours {
        k,
        distances: Vec::with_capacity(x.rows * k),
        ids: Vec::with_capacity(x.rows * k),
    };
    for q0 in (0..x.rows).step_by(block) {
        let nq = block.min(x.rows - q0);
        let keys = ctx.empty(&[nq * lists * k], DType::F32)?;
        let ids = ctx.empty(&[nq * lists * k], DType::U32)?;
        let dist = ctx.empty(&[nq * k], DType::F32)?;
        let idx = ctx.empty(&[nq * k], DType::U32)?;
        let x_offset = x.offset + q0 * x.stride;
        let mut step = ctx.step("vq search");
        let mut list_base = 0;
        for (c, &split_len) in cb.chunks.iter().zip(&split_lens) {
            let s = Search {
                nq,
                d: x.d,
                x_stride: x.stride,
                x_offset,
                n_codes: c.n,
                code_base: c.base,
                split_len,
                k,
                metric,
                lists,
                list_base,
                dtype: cb.dtype,
            };
            step.run(
                &s,
                &[
                    ("x", x.tensor),
                    ("codes", &c.codes),
                    ("cnorm", &c.norms),
                    ("keys", &keys),
                    ("ids", &ids),
                ],
            )?;
            list_base += s.launch_lists();
        }
        let m = Merge {
            nq,
            lists,
            k,
            metric,
            d: x.d,
            x_stride: x.stride,
            x_offset,
        };
        step.run(
            &m,
            &[
                ("x", x.tensor),
                ("keys", &keys),
                ("ids", &ids),
                ("dist", &dist),
                ("idx", &idx),
            ],
        )?;
        if metric == Metric::L2 {
            for c in &cb.chunks {
                let r = vq::Refine {
                    nq,
                    k,
                    d: x.d,
                    x_stride: x.stride,
                    x_offset,
                    code_base: c.base,
                    n_codes: c.n,
                    dtype: c.codes.dtype(),
                };
                let operands = [
                    ("x", x.tensor),
                    ("codes", &c.codes),
                    ("idx", &idx),
                    ("dist", &dist),
                ];
                step.run(&r, &operands)?;
            }
        }
        step.submit()?;
        let mut d = ctx.read::<f32>(&dist)?;
        let mut i = ctx.read::<u32>(&idx)?;
        if metric == Metric::L2 {
            vq::resort(k, &mut d, &mut i);
        }
        out.distances.extend(d);
        out.ids.extend(i);
    }
    Ok(out)
}
