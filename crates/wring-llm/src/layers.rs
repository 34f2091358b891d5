//! The LLM's composites of kernel units: attention in three launches (for an EMS cache, which needs the
//! probabilities; every other cache uses the one-launch attn_fused), and the RMSNorm with and without the
//! residual add fused into it. Each checks nothing itself: `Step::run` checks every operand against
//! its unit's declaration.

use wring_runtime::kernels::tensor::{Attention, Rmsnorm, Softmax};
use wring_runtime::{Error, Step, Tensor};

/// Causal grouped-query attention over a KV cache: `scores` (scratch, f32 [tokens * heads * kv_len]),
/// softmax into a second scratch `probs`, then `out` [tokens][heads][head_dim]. `q` is
/// [tokens][heads][head_dim]; the caches are [positions][kv heads][head_dim] with at least kv_len positions.
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

/// `y = rmsnorm(x) * w` over the rows of `x` [rows, n].
pub fn rmsnorm(
    step: &mut Step<'_>,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    eps: f32,
) -> Result<(), Error> {
    let (rows, n) = rows_of(x)?;
    step.run(
        &Rmsnorm {
            n,
            rows,
            eps,
            residual: false,
        },
        &[("x", x), ("w", w), ("y", y)],
    )
}

/// The residual add fused with the RMSNorm after it, in one launch: `s = x + r`, `y = rmsnorm(s) * w`.
pub fn rmsnorm_add(
    step: &mut Step<'_>,
    [x, r, w]: [&Tensor; 3],
    [y, s]: [&Tensor; 2],
    eps: f32,
) -> Result<(), Error> {
    let (rows, n) = rows_of(x)?;
    let unit = Rmsnorm {
        n,
        rows,
        eps,
        residual: true,
    };
    step.run(&unit, &[("x", x), ("r", r), ("w", w), ("y", y), ("s", s)])
}

fn rows_of(x: &Tensor) -> Result<(usize, usize), Error> {
    match x.shape() {
        [rows, n] => Ok((*rows, *n)),
        s => Err(Error::Shape(format!("rows must be 2-D, got shape {s:?}"))),
    }
}
