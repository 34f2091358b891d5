//! The one dispatch policy that belongs in the runtime: which kernel multiplies activations by a weight
//! tensor, chosen by the weight's format and the adapter. Model code calls [`matmul_weights`] for every
//! projection, so the weight's format stays a property of the tensor and one model implementation serves
//! quantized and float weights.

use wring_quant::group::{GroupMatrix, Layout, Stats};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::DType;
use crate::kernels::quant::{
    Qmatmul, Qmatvec, QmatvecQ8, QmatvecQ8Residual, QmatvecQ8Scaled, QmatvecQ8SwiGlu, QuantizeQ8,
    qmatvec_q8,
};
use crate::kernels::sparse::{Gmatmul, Gmatvec, Rht, Tmatmul, Tmatvec};
use crate::kernels::tensor::{Matmul, Matvec};
use crate::step::Step;
use crate::tensor::Tensor;

/// A weight matrix [rows, cols] on the device in any format wring multiplies activations by: one tensor
/// (f32, f16 or packed GGUF blocks), or a group-quantized matrix below 4 bits in the sparse-outlier
/// family's layout (several buffers).
#[derive(Debug, Clone)]
pub enum Weights {
    /// A tensor of shape [rows, cols].
    Tensor(Tensor),
    /// A group-quantized matrix.
    Group(Box<GroupWeights>),
}

impl From<Tensor> for Weights {
    fn from(t: Tensor) -> Weights {
        Weights::Tensor(t)
    }
}

impl Weights {
    /// Checks and uploads a group-quantized matrix (see [`GroupWeights::upload`]).
    pub fn group(ctx: &Context, m: &GroupMatrix) -> Result<Weights> {
        Ok(Weights::Group(Box::new(GroupWeights::upload(ctx, m)?)))
    }

    /// (rows, cols).
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            Weights::Tensor(t) => dims2(t, "w"),
            Weights::Group(g) => Ok((g.layout.rows, g.layout.cols)),
        }
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> u64 {
        match self {
            Weights::Tensor(t) => t.bytes(),
            Weights::Group(g) => g.all_buffers().iter().map(|t| t.bytes()).sum(),
        }
    }
}

/// The device buffers of a [`GroupMatrix`].
#[derive(Debug, Clone)]
pub struct GroupWeights {
    /// Shape and format.
    pub layout: Layout,
    codes: Tensor,
    stats: Tensor,
    second: Option<Tensor>,
    perm: Tensor,
    outliers: Tensor,
    rowcodes: Tensor,
    mask: Option<Tensor>,
    /// Whether rows differ in code width (the products' constant-width variants do not apply).
    mixed: bool,
    /// The incoherence transform's signs and DCT factor, when the rows were stored in its basis: the
    /// products then read V x.
    transform: Option<(Tensor, Tensor)>,
}

impl GroupWeights {
    /// Checks `m` (every buffer's length, the permutation, the outlier offsets and columns: what the kernel
    /// trusts) and uploads it.
    pub fn upload(ctx: &Context, m: &GroupMatrix) -> Result<GroupWeights> {
        m.check().map_err(|e| Error::Shape(e.to_string()))?;
        let l = m.layout;
        // Trellis-coded rows are found by their tiles, in their input order: tmatvec binds neither a
        // permutation nor row starts, so one word stands in for each.
        let trellis = matches!(l.stats, Stats::Trellis { .. });
        Ok(GroupWeights {
            layout: l,
            codes: ctx.upload(&[m.codes.len()], &m.codes)?,
            stats: ctx.upload(&[m.stats.len()], &m.stats)?,
            second: match l.stats {
                Stats::Bilevel { .. } => Some(ctx.upload(&[m.second.len()], &m.second)?),
                Stats::Affine | Stats::Trellis { .. } => None,
            },
            perm: if trellis {
                ctx.upload(&[1], &[0u32])?
            } else {
                ctx.upload(&[l.cols], &m.perm)?
            },
            outliers: ctx.upload(&[m.outliers.len()], &m.outliers)?,
            rowcodes: if trellis {
                ctx.upload(&[1], &[0u32])?
            } else {
                ctx.upload(&[l.rows, 3], &m.rowcodes())?
            },
            mask: if m.mask.is_empty() {
                None
            } else {
                Some(ctx.upload(&[l.rows, l.mask_words()], &m.mask)?)
            },
            mixed: !m.row_bits.is_empty(),
            transform: if m.signs.is_empty() {
                None
            } else {
                let t =
                    wring_quant::rht::Rht::new(l.cols).map_err(|e| Error::Shape(e.to_string()))?;
                Some((
                    ctx.upload(&[m.signs.len()], &m.signs)?,
                    ctx.upload(&[t.b, t.b], &t.dct())?,
                ))
            },
        })
    }

    /// The buffers by their kernel operand names.
    fn buffers(&self) -> Vec<(&'static str, &Tensor)> {
        if matches!(self.layout.stats, Stats::Trellis { .. }) {
            return vec![
                ("codes", &self.codes),
                ("stats", &self.stats),
                ("outliers", &self.outliers),
            ];
        }
        let mut b = vec![
            ("codes", &self.codes),
            ("stats", &self.stats),
            ("perm", &self.perm),
            ("outliers", &self.outliers),
            ("rowcodes", &self.rowcodes),
        ];
        if let Some(s) = &self.second {
            b.push(("second", s));
        }
        if let Some(m) = &self.mask {
            b.push(("mask", m));
        }
        b
    }

    /// The device buffers in all (the transform's included), for [`Weights::bytes`].
    fn all_buffers(&self) -> Vec<&Tensor> {
        let mut b: Vec<&Tensor> = self.buffers().into_iter().map(|(_, t)| t).collect();
        if let Some((s, d)) = &self.transform {
            b.extend([s, d]);
        }
        b
    }
}

fn dims2(t: &Tensor, name: &str) -> Result<(usize, usize)> {
    match t.shape() {
        [r, c] => Ok((*r, *c)),
        s => Err(Error::Shape(format!("{name} must be 2-D, got shape {s:?}"))),
    }
}

/// `y = x w^T` for a weight tensor `w` [n, k] of any format and activations `x` [m, k]; `y` is f32
/// [m, n]. f32 activations against Q4_0, Q4_1 or Q8_0 weights, in a context with `q8_activations`, are
/// quantized to 8 bits and multiplied with integer dot products (quantize_q8 + qmatvec_q8) for one row,
/// and for batches on CPU adapters. Otherwise quantized weights go to qmatvec for one row, for batches on CPU adapters (its 8-row tiles
/// need no barriers) and for f16 activations, and to the tiled qmatmul for batches on GPUs; float
/// weights go to matvec for one row and matmul otherwise.
///
/// Group-quantized weights likewise: gmatvec for one row and for batches on CPU adapters (tiles of 8
/// rows), the tiled gmatmul for batches on GPUs; trellis-coded weights tmatvec and tmatmul in the same
/// way.
pub fn matmul_weights(step: &mut Step<'_>, w: &Weights, x: &Tensor, y: &Tensor) -> Result<()> {
    match w {
        Weights::Tensor(t) => matmul_tensor(step, t, x, y),
        Weights::Group(g) => {
            let (m, _) = dims2(x, "x")?;
            let unit = Gmatvec {
                layout: g.layout,
                batch: m,
                code_words: g.codes.shape()[0],
                stat_words: g.stats.shape()[0],
                masked: g.mask.is_some(),
                mixed: g.mixed,
            };
            let mut ops = g.buffers();
            // Weights stored in the incoherence basis multiply V x: the transform first, into a
            // temporary the product reads.
            let rotated;
            let x = match &g.transform {
                None => x,
                Some((signs, dct)) => {
                    rotated = step.context().empty(&[m, g.layout.cols], DType::F32)?;
                    let unit = Rht {
                        n: g.layout.cols,
                        rows: m,
                    };
                    step.run(
                        &unit,
                        &[("x", x), ("signs", signs), ("dct", dct), ("y", &rotated)],
                    )?;
                    &rotated
                }
            };
            if matches!(g.layout.stats, Stats::Trellis { .. }) {
                let unit = Tmatvec {
                    layout: g.layout,
                    batch: m,
                };
                if m == 1 || step.caps().software {
                    tracing::debug!(m, "trellis weights: tmatvec (one row, or a CPU adapter)");
                    ops.extend([("x", x), ("y", y)]);
                    return step.run(&unit, &ops);
                }
                tracing::debug!(m, "trellis weights: the tiled tmatmul (a batch on a GPU)");
                ops.extend([("a", x), ("c", y)]);
                return step.run(&Tmatmul(unit), &ops);
            }
            if m == 1 || step.caps().software {
                tracing::debug!(m, "group weights: gmatvec (one row, or a CPU adapter)");
                ops.extend([("x", x), ("y", y)]);
                step.run(&unit, &ops)
            } else {
                tracing::debug!(m, "group weights: the tiled gmatmul (a batch on a GPU)");
                ops.extend([("a", x), ("c", y)]);
                step.run(&Gmatmul(unit), &ops)
            }
        }
    }
}

/// Whether [`matmul_weights`] multiplies `m` f32 activation rows by `w` through 8-bit activation units
/// (quantize_q8 + qmatvec_q8): Q4_0, Q4_1 or Q8_0 weights in a context with `q8_activations`, for one
/// row or on a CPU adapter. A model can then have the kernel producing the activations write the units
/// itself (`RmsnormQ8`, `AttnFusedQ8`, `SiluMulQ8`) and multiply them with [`matmul_weights_q8`], one
/// launch fewer.
pub fn takes_q8(step: &Step<'_>, w: &Weights, m: usize) -> bool {
    match w {
        Weights::Tensor(t) => q8_format(step, t, m).is_some(),
        Weights::Group(_) => false,
    }
}

/// The block format of `w` when `m` rows of f32 activations take the 8-bit path.
fn q8_format(step: &Step<'_>, w: &Tensor, m: usize) -> Option<wring_quant::BlockFormat> {
    match w.dtype() {
        DType::Block(format)
            if (m == 1 || step.caps().software)
                && step.context().q8_activations()
                && qmatvec_q8::FORMATS.contains(&format) =>
        {
            Some(format)
        }
        _ => None,
    }
}

/// `y = x w^T` for `m` activation rows already quantized to 8-bit units `xq` (as [`QuantizeQ8`] writes
/// them), for weights where [`takes_q8`] holds; `y` is f32 [m, n].
pub fn matmul_weights_q8(
    step: &mut Step<'_>,
    w: &Weights,
    xq: &Tensor,
    m: usize,
    y: &Tensor,
) -> Result<()> {
    match w {
        Weights::Tensor(t) => match q8_format(step, t, m) {
            Some(format) => qmatvec_q8_run(step, t, format, xq, m, y),
            None => Err(Error::Shape(format!(
                "weights of type {} do not take 8-bit activations here",
                t.dtype()
            ))),
        },
        Weights::Group(_) => Err(Error::Shape(
            "group-quantized weights do not take 8-bit activations".into(),
        )),
    }
}

/// The two halves of an RMSNorm split between the products around it, for one activation row (decode),
/// where the planner offers them: [`QmatvecQ8Residual`] for the product before the norm (it adds the
/// residual and writes the norm's input units), [`QmatvecQ8Scaled`] for the one after (it applies the
/// norm's scale). `None` where `w` does not take the 8-bit path or the adapter has no such form; then
/// run the norm's own kernel.
pub fn residual_q8(step: &Step<'_>, w: &Weights) -> Option<QmatvecQ8Residual> {
    offered(step, QmatvecQ8Residual(q8_row(step, w)?))
}

/// See [`residual_q8`].
pub fn scaled_q8(step: &Step<'_>, w: &Weights, eps: f32) -> Option<QmatvecQ8Scaled> {
    offered(
        step,
        QmatvecQ8Scaled {
            product: q8_row(step, w)?,
            eps,
        },
    )
}

/// The stacked gate/up product of one activation row with the SwiGLU gate in its epilogue
/// ([`QmatvecQ8SwiGlu`]: it writes the gate's 8-bit units for the down product), where `w` takes the
/// 8-bit path and the planner offers it (CPU adapters); its input is a split norm's units with `eps`.
/// `None`: run the product, then the gate's own kernel.
pub fn swiglu_q8(step: &Step<'_>, w: &Weights, eps: Option<f32>) -> Option<QmatvecQ8SwiGlu> {
    offered(
        step,
        QmatvecQ8SwiGlu {
            product: q8_row(step, w)?,
            eps,
        },
    )
}

/// `unit` where the planner takes it on this adapter.
fn offered<K: crate::kernels::Kernel>(step: &Step<'_>, unit: K) -> Option<K> {
    unit.plan(step.caps(), crate::kernels::Choice::Auto)
        .is_ok()
        .then_some(unit)
}

/// The 8-bit product of one activation row by `w`, where `w` takes that path.
fn q8_row(step: &Step<'_>, w: &Weights) -> Option<QmatvecQ8> {
    let Weights::Tensor(t) = w else {
        return None;
    };
    let format = q8_format(step, t, 1)?;
    let (n, k) = dims2(t, "w").ok()?;
    Some(QmatvecQ8 {
        format,
        n,
        k,
        batch: 1,
    })
}

/// Runs one of the fused one-row products ([`residual_q8`], [`scaled_q8`], [`swiglu_q8`]) on `w` with
/// its other operands.
pub fn matmul_weights_fused(
    step: &mut Step<'_>,
    w: &Weights,
    unit: &dyn crate::kernels::Kernel,
    operands: &[(&str, &Tensor)],
) -> Result<()> {
    let Weights::Tensor(t) = w else {
        return Err(Error::Shape(
            "group-quantized weights have no split-norm product".into(),
        ));
    };
    let mut ops = vec![("w", t)];
    ops.extend_from_slice(operands);
    step.run(unit, &ops)
}

fn qmatvec_q8_run(
    step: &mut Step<'_>,
    w: &Tensor,
    format: wring_quant::BlockFormat,
    xq: &Tensor,
    m: usize,
    y: &Tensor,
) -> Result<()> {
    let (n, k) = dims2(w, "w")?;
    let unit = QmatvecQ8 {
        format,
        n,
        k,
        batch: m,
    };
    step.run(&unit, &[("w", w), ("x", xq), ("y", y)])
}

fn matmul_tensor(step: &mut Step<'_>, w: &Tensor, x: &Tensor, y: &Tensor) -> Result<()> {
    let (n, k) = dims2(w, "w")?;
    let (m, _) = dims2(x, "x")?;
    let caps = *step.caps();
    if x.dtype() == DType::F32
        && let Some(format) = q8_format(step, w, m)
    {
        tracing::debug!(
            m,
            "quantized weights: quantize_q8 + qmatvec_q8 (8-bit activations; one row, or a CPU adapter)"
        );
        let quantize = QuantizeQ8 { k, rows: m };
        let q = step.context().empty(&[quantize.words()], DType::U32)?;
        step.run(&quantize, &[("x", x), ("q", &q)])?;
        return qmatvec_q8_run(step, w, format, &q, m, y);
    }
    match w.dtype() {
        DType::Block(format) if m == 1 || caps.software || x.dtype() == DType::F16 => {
            tracing::debug!(
                m,
                "quantized weights: qmatvec (one row, a CPU adapter, or f16 activations)"
            );
            let unit = Qmatvec {
                format,
                act: x.dtype(),
                n,
                k,
                batch: m,
            };
            step.run(&unit, &[("w", w), ("x", x), ("y", y)])
        }
        DType::Block(format) => {
            tracing::debug!(m, "quantized weights: tiled qmatmul (a batch on a GPU)");
            step.run(
                &Qmatmul { format, m, n, k },
                &[("a", x), ("w", w), ("c", y)],
            )
        }
        dtype @ (DType::F32 | DType::F16) if m == 1 => {
            let (xv, yv) = (
                x.reshape(&[k])
                    .ok_or_else(|| Error::Shape(format!("x must be [1, {k}]")))?,
                y.reshape(&[y.len()])
                    .ok_or_else(|| Error::Shape("y".into()))?,
            );
            step.run(&Matvec { dtype, n, k }, &[("w", w), ("x", &xv), ("y", &yv)])
        }
        dtype @ (DType::F32 | DType::F16) => {
            step.run(&Matmul { dtype, m, n, k }, &[("a", x), ("b", w), ("c", y)])
        }
        other => Err(Error::Shape(format!(
            "weights of type {other} cannot multiply activations"
        ))),
    }
}

/// The scratch operands of one `tviterbi` launch (costs, each step's minima, the traceback).
#[derive(Debug)]
pub struct TviterbiScratch {
    cost: Tensor,
    best: Tensor,
    trace: Tensor,
}

impl TviterbiScratch {
    /// Scratch sized for `unit`.
    pub fn new(ctx: &Context, unit: &crate::kernels::sparse::Tviterbi) -> Result<TviterbiScratch> {
        let (c, b, t) = unit.scratch_words();
        Ok(TviterbiScratch {
            cost: ctx.empty(&[c], DType::U32)?,
            best: ctx.empty(&[b], DType::U32)?,
            trace: ctx.empty(&[t], DType::U32)?,
        })
    }

    /// Records `unit` encoding `x` (fixed-point values) into `stream`.
    pub fn run(
        &self,
        step: &mut Step<'_>,
        unit: &crate::kernels::sparse::Tviterbi,
        x: &Tensor,
        stream: &Tensor,
    ) -> Result<()> {
        self.run_with(step, unit, crate::kernels::Choice::Auto, x, stream)
    }

    /// [`TviterbiScratch::run`] with a forced variant (the harness's cases).
    pub fn run_with(
        &self,
        step: &mut Step<'_>,
        unit: &crate::kernels::sparse::Tviterbi,
        choice: crate::kernels::Choice<'_>,
        x: &Tensor,
        stream: &Tensor,
    ) -> Result<()> {
        step.run_with(
            unit,
            choice,
            &[
                ("x", x),
                ("cost", &self.cost),
                ("best", &self.best),
                ("trace", &self.trace),
                ("stream", stream),
            ],
        )
    }
}

/// The trellis encoder on the device (`tviterbi`, bit for bit `wring_quant::trellis::Encoder`), as
/// `wring_quant::trellis::quantize_with` takes it: `n * 256` fixed-point values to `n * tile_words(bits)`
/// stream words. Tiles go in launches as large as the adapter's binding limit allows for the traceback
/// scratch (2 MiB a tile at 16-bit states and 2 bits).
pub fn trellis_encoder(
    ctx: &Context,
    bits: u32,
    state: u32,
) -> Result<impl FnMut(&[i32]) -> std::result::Result<Vec<u32>, wring_quant::group::GroupError> + '_>
{
    use crate::kernels::sparse::Tviterbi;
    use wring_quant::group::GroupError;
    use wring_quant::trellis::SEQ;
    wring_quant::trellis::check(bits, state).map_err(|e| Error::Shape(e.to_string()))?;
    let limits = &ctx.info().limits;
    let per_tile = Tviterbi::scratch_bytes_per_tile(bits, state);
    let cap = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let batch = usize::try_from(cap / per_tile.max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, 65_535);
    let run = move |x: &[i32]| -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for part in x.chunks(batch * SEQ) {
            let unit = Tviterbi {
                bits,
                state,
                tiles: part.len() / SEQ,
            };
            let tx = ctx.upload(&[part.len()], part)?;
            let ts = ctx.empty(
                &[unit.tiles * wring_quant::trellis::tile_words(bits)],
                DType::U32,
            )?;
            let scratch = TviterbiScratch::new(ctx, &unit)?;
            let mut step = ctx.step("tviterbi");
            scratch.run(&mut step, &unit, &tx, &ts)?;
            step.submit()?;
            out.extend(ctx.read::<u32>(&ts)?);
        }
        Ok(out)
    };
    Ok(move |x: &[i32]| run(x).map_err(|e| GroupError::Shape(format!("the device encoder: {e}"))))
}
