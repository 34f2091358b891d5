//! The LLM's composites of kernel units: attention in three launches (for an EMS cache, which needs the
//! probabilities; every other cache uses the one-launch attn_fused), and the RMSNorm with and without the
//! residual add fused into it. Each checks nothing itself: `Step::run` checks every operand against
//! its unit's declaration.

use wring_runtime::kernels::tensor::{Attention, Rmsnorm, RmsnormQ8, Softmax};
use wring_runtime::{Error, Step, Tensor};

/// Causal grouped-query attention over a KV cache: `scores` (scratch, f32 [tokens * heads * kv_len]),
/// softmax into a second scratch `probs`, then `out` \[tokens\]\[heads\]\[head_dim\]. `q` is
/// \[tokens\]\[heads\]\[head_dim\]; the caches are \[positions\]\[kv heads\]\[head_dim\] with at least kv_len positions.
#[allow(
    clippy::too_many_arguments,
    reason = "attention has this many operands"
)]
pub fn attention(
    step: &mut Step<'_>,
    a: &Attention,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    scores: &Tensor,
    probs: &Tensor,
    out: &Tensor,
) -> Result<(), Error> {
    step.run(&a.scores(), &[("q", q), ("k", k_cache), ("s", scores)])?;
    let rows = a.tokens * a.n_heads;
    let as_rows = |t: &Tensor| {
        t.reshape(&[rows, a.kv_len]).ok_or_else(|| {
            Error::Shape(format!(
                "the attention scratch must hold {rows} x {} values",
                a.kv_len
            ))
        })
    };
    let softmax = Softmax {
        n: a.kv_len,
        rows,
        scale: 1.0,
    };
    step.run(
        &softmax,
        &[("x", &as_rows(scores)?), ("y", &as_rows(probs)?)],
    )?;
    step.run(&a.pv(), &[("p", probs), ("v", v_cache), ("o", out)])
}

/// Where an RMSNorm writes `y`: floats, or 8-bit activation units (`RmsnormQ8`) for a product that takes
/// them (`matmul_weights_q8`), the quantize_q8 launch folded into the norm.
#[derive(Debug, Clone, Copy)]
pub enum NormOut<'a> {
    /// f32 [rows, n].
    F32(&'a Tensor),
    /// 8-bit units, `q8::words(rows * n)` words.
    Q8(&'a Tensor),
}

/// `y = rmsnorm(x) * w` over the rows of `x` [rows, n].
pub fn rmsnorm(
    step: &mut Step<'_>,
    x: &Tensor,
    w: &Tensor,
    y: NormOut<'_>,
    eps: f32,
) -> Result<(), Error> {
    let (rows, n) = rows_of(x)?;
    let unit = Rmsnorm {
        n,
        rows,
        eps,
        residual: false,
    };
    run_norm(step, unit, vec![("x", x), ("w", w)], y)
}

/// The residual add fused with the RMSNorm after it, in one launch: `s = x + r`, `y = rmsnorm(s) * w`.
pub fn rmsnorm_add<'a>(
    step: &mut Step<'_>,
    [x, r, w]: [&'a Tensor; 3],
    y: NormOut<'a>,
    s: &'a Tensor,
    eps: f32,
) -> Result<(), Error> {
    let (rows, n) = rows_of(x)?;
    let unit = Rmsnorm {
        n,
        rows,
        eps,
        residual: true,
    };
    run_norm(step, unit, vec![("x", x), ("r", r), ("w", w), ("s", s)], y)
}

fn run_norm<'a>(
    step: &mut Step<'_>,
    unit: Rmsnorm,
    mut operands: Vec<(&'static str, &'a Tensor)>,
    y: NormOut<'a>,
) -> Result<(), Error> {
    match y {
        NormOut::F32(y) => {
            operands.push(("y", y));
            step.run(&unit, &operands)
        }
        NormOut::Q8(q) => {
            operands.push(("q", q));
            step.run(&RmsnormQ8(unit), &operands)
        }
    }
}

fn rows_of(x: &Tensor) -> Result<(usize, usize), Error> {
    match x.shape() {
        [rows, n] => Ok((*rows, *n)),
        s => Err(Error::Shape(format!("rows must be 2-D, got shape {s:?}"))),
    }
}
