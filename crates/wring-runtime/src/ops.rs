//! Typed operations: check tensor shapes and types, plan the kernel for this device, record the launch.
//! Each takes a [`Choice`] so that tests and benchmarks can force any variant.

use wring_kernels::binary::BinaryOp;
use wring_kernels::rope::{Rope, RopeQkv};
use wring_kernels::{
    Choice, DType, Strided, binary, copy, fill, get_rows, matmul, matvec, qmatmul, qmatvec,
    rmsnorm, rope, silu_mul, softmax,
};

use crate::error::{Error, Result};
use crate::step::Step;
use crate::tensor::Tensor;

fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape(what()))
    }
}

fn dims2(t: &Tensor, name: &str) -> Result<(usize, usize)> {
    match t.shape() {
        [r, c] => Ok((*r, *c)),
        s => Err(Error::Shape(format!("{name} must be 2-D, got shape {s:?}"))),
    }
}

/// `dst = src` word for word (both 32-bit element types of equal length), on the copy kernel.
pub fn copy(step: &mut Step<'_>, src: &Tensor, dst: &Tensor, choice: Choice<'_>) -> Result<()> {
    expect(
        src.bytes() == dst.bytes() && src.bytes().is_multiple_of(4),
        || format!("copy of {} bytes into {} bytes", src.bytes(), dst.bytes()),
    )?;
    let plan = copy::plan((src.bytes() / 4) as usize, step.caps(), choice)?;
    step.launch(&plan, &[("src", src), ("dst", dst)])
}

/// Copies all of `src` (32-bit elements) into `dst` starting at element `dst_offset`: how a step's keys and
/// values are appended to a KV cache.
pub fn copy_into(step: &mut Step<'_>, src: &Tensor, dst: &Tensor, dst_offset: usize) -> Result<()> {
    expect(src.dtype().size() == 4 && dst.dtype().size() == 4, || {
        "copy_into takes 32-bit tensors".into()
    })?;
    expect(
        dst_offset
            .checked_add(src.len())
            .is_some_and(|end| end <= dst.len()),
        || {
            format!(
                "{} elements at {dst_offset} do not fit a destination of {}",
                src.len(),
                dst.len()
            )
        },
    )?;
    let plan = copy::plan_at(src.len(), 0, dst_offset, step.caps(), Choice::Auto)?;
    step.launch(&plan, &[("src", src), ("dst", dst)])
}

/// Causal grouped-query attention over a KV cache: `scores` (scratch, f32 [tokens * heads * kv_len]) then
/// softmax in place of a second scratch `probs`, then `out` [tokens][heads][head_dim]. q is
/// [tokens][heads][head_dim]; the caches are [positions][kv heads][head_dim] with at least kv_len positions.
#[allow(
    clippy::too_many_arguments,
    reason = "attention has this many operands"
)]
pub fn attention(
    step: &mut Step<'_>,
    a: &wring_kernels::attention::Attention,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    scores: &Tensor,
    probs: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let rows = a.tokens * a.n_heads;
    expect(q.len() == rows * a.head_dim && out.len() == q.len(), || {
        format!("q and out must hold {rows} x {} values", a.head_dim)
    })?;
    let cache = a.kv_len * a.n_kv_heads * a.head_dim;
    expect(k_cache.len() >= cache && v_cache.len() >= cache, || {
        format!("the caches must hold at least {cache} values")
    })?;
    expect(
        scores.len() == rows * a.kv_len && probs.len() == scores.len(),
        || format!("scores and probs must hold {rows} x {} values", a.kv_len),
    )?;
    let plan = a.plan_scores(step.caps(), Choice::Auto)?;
    step.launch(&plan, &[("q", q), ("k", k_cache), ("s", scores)])?;
    let s2 = scores
        .reshape(&[rows, a.kv_len])
        .ok_or_else(|| Error::Shape("scores".into()))?;
    let p2 = probs
        .reshape(&[rows, a.kv_len])
        .ok_or_else(|| Error::Shape("probs".into()))?;
    softmax(step, &s2, &p2, 1.0, Choice::Auto)?;
    let plan = a.plan_pv(step.caps(), Choice::Auto)?;
    step.launch(&plan, &[("p", probs), ("v", v_cache), ("o", out)])
}

/// Every 32-bit word of `dst` becomes `value`.
pub fn fill(step: &mut Step<'_>, dst: &Tensor, value: u32, choice: Choice<'_>) -> Result<()> {
    expect(dst.dtype().size() == 4, || {
        format!("fill needs a 32-bit tensor, got {}", dst.dtype())
    })?;
    let plan = fill::plan(dst.len(), value, step.caps(), choice)?;
    step.launch(&plan, &[("dst", dst)])
}

/// `c = a op b`, `b` broadcast over `a` when shorter.
pub fn binary(
    step: &mut Step<'_>,
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    expect(a.dtype() == b.dtype() && a.dtype() == c.dtype(), || {
        "binary operands must share a type".into()
    })?;
    expect(a.len() == c.len(), || {
        format!("a has {} elements, c {}", a.len(), c.len())
    })?;
    let plan = binary::plan(op, a.dtype(), a.len(), b.len(), step.caps(), choice)?;
    step.launch(&plan, &[("a", a), ("b", b), ("c", c)])
}

/// `y = silu(a) * b`, all f32 of one length.
pub fn silu_mul(
    step: &mut Step<'_>,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    expect(a.shape() == b.shape() && b.shape() == y.shape(), || {
        "a, b and y must have one shape".into()
    })?;
    let cols = a.shape().last().copied().unwrap_or(0);
    let dense = Strided {
        stride: cols,
        offset: 0,
    };
    let plan = silu_mul::plan(
        cols,
        a.len() / cols.max(1),
        dense,
        dense,
        step.caps(),
        choice,
    )?;
    step.launch(&plan, &[("a", a), ("b", b), ("y", y)])
}

/// The SwiGLU gate of a fused gate/up projection: `y[row] = silu(gu[row][..ff]) * gu[row][ff..]` for `gu`
/// [rows, 2 ff] and `y` [rows, ff], read in place.
pub fn silu_mul_halves(
    step: &mut Step<'_>,
    gu: &Tensor,
    y: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let (rows, ff) = dims2(y, "y")?;
    expect(gu.shape() == [rows, 2 * ff], || {
        format!("gu must be [{rows}, {}]", 2 * ff)
    })?;
    let (a, b) = (
        Strided {
            stride: 2 * ff,
            offset: 0,
        },
        Strided {
            stride: 2 * ff,
            offset: ff,
        },
    );
    let plan = silu_mul::plan(ff, rows, a, b, step.caps(), choice)?;
    step.launch(&plan, &[("a", gu), ("b", gu), ("y", y)])
}

/// `c[m][n] = a[m][k] . b[n][k]`, c in f32.
pub fn matmul(
    step: &mut Step<'_>,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let (m, k) = dims2(a, "a")?;
    let (n, kb) = dims2(b, "b")?;
    expect(k == kb, || {
        format!("a is {m}x{k} but b is {n}x{kb}: inner dimensions differ")
    })?;
    expect(c.shape() == [m, n] && c.dtype() == DType::F32, || {
        format!("c must be f32 {m}x{n}, got {} {:?}", c.dtype(), c.shape())
    })?;
    expect(a.dtype() == b.dtype(), || {
        "a and b must share a type".into()
    })?;
    let plan = matmul::plan(a.dtype(), m, n, k, step.caps(), choice)?;
    step.launch(&plan, &[("a", a), ("b", b), ("c", c)])
}

/// `y[n] = w[n][k] . x[k]`, y in f32.
pub fn matvec(
    step: &mut Step<'_>,
    w: &Tensor,
    x: &Tensor,
    y: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let (n, k) = dims2(w, "w")?;
    expect(x.len() == k && x.dtype() == w.dtype(), || {
        format!("x must be {} of {k} elements", w.dtype())
    })?;
    expect(y.len() == n && y.dtype() == DType::F32, || {
        format!("y must be f32 of {n} elements")
    })?;
    let plan = matvec::plan(w.dtype(), n, k, step.caps(), choice)?;
    step.launch(&plan, &[("w", w), ("x", x), ("y", y)])
}

/// RMSNorm of each row of `x` (rows x n) with weight `w` (n).
pub fn rmsnorm(
    step: &mut Step<'_>,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    eps: f32,
    choice: Choice<'_>,
) -> Result<()> {
    let (rows, n) = dims2(x, "x")?;
    expect(w.len() == n && y.shape() == x.shape(), || {
        format!("w must have {n} elements and y the shape of x")
    })?;
    let plan = rmsnorm::plan(n, rows, eps, false, step.caps(), choice)?;
    step.launch(&plan, &[("x", x), ("w", w), ("y", y)])
}

/// The residual add fused with the RMSNorm after it: `s = x + r`, `y = rmsnorm(s) * w`, one launch.
#[allow(
    clippy::too_many_arguments,
    reason = "two inputs, a weight, two outputs and the norm's epsilon"
)]
pub fn rmsnorm_add(
    step: &mut Step<'_>,
    x: &Tensor,
    r: &Tensor,
    w: &Tensor,
    y: &Tensor,
    s: &Tensor,
    eps: f32,
    choice: Choice<'_>,
) -> Result<()> {
    let (rows, n) = dims2(x, "x")?;
    expect(
        w.len() == n && [r, y, s].iter().all(|t| t.shape() == x.shape()),
        || format!("w must have {n} elements and r, y, s the shape of x"),
    )?;
    let plan = rmsnorm::plan(n, rows, eps, true, step.caps(), choice)?;
    step.launch(&plan, &[("x", x), ("r", r), ("w", w), ("y", y), ("s", s)])
}

/// Softmax of each row of `x * scale`.
pub fn softmax(
    step: &mut Step<'_>,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    choice: Choice<'_>,
) -> Result<()> {
    let (rows, n) = dims2(x, "x")?;
    expect(y.shape() == x.shape(), || {
        "y must have the shape of x".into()
    })?;
    let plan = softmax::plan(n, rows, scale, step.caps(), choice)?;
    step.launch(&plan, &[("x", x), ("y", y)])
}

/// RoPE of `x` [tokens][heads][head_dim] at positions `pos` [tokens] (i32).
pub fn rope(
    step: &mut Step<'_>,
    r: &Rope,
    x: &Tensor,
    pos: &Tensor,
    y: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    expect(x.shape() == [r.tokens, r.n_heads, r.head_dim], || {
        format!("x must be {:?}", [r.tokens, r.n_heads, r.head_dim])
    })?;
    expect(pos.len() == r.tokens && pos.dtype() == DType::I32, || {
        format!("pos must be i32 of {} elements", r.tokens)
    })?;
    expect(y.shape() == x.shape(), || {
        "y must have the shape of x".into()
    })?;
    let plan = rope::plan(r, step.caps(), choice)?;
    step.launch(&plan, &[("x", x), ("pos", pos), ("y", y)])
}

/// RoPE on queries and keys and the KV-cache append in one launch: `q_out` [tokens][heads][head_dim] gets
/// the rotated queries, `k_cache` and `v_cache` ([positions][kv heads][head_dim]) the rotated keys and the
/// values at positions `cache_pos..`. q, k and v are read through the strides in `r`, so they may be one
/// tensor (a fused QKV projection's output).
#[allow(
    clippy::too_many_arguments,
    reason = "three inputs, positions and three outputs"
)]
pub fn rope_qkv(
    step: &mut Step<'_>,
    r: &RopeQkv,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: &Tensor,
    q_out: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let t = r.rope.tokens;
    let (hd, kv) = (r.rope.head_dim, r.n_kv_heads * r.rope.head_dim);
    for (name, x, s, width) in [
        ("q", q, r.q, r.rope.n_heads * hd),
        ("k", k, r.k, kv),
        ("v", v, r.v, kv),
    ] {
        let need = t
            .saturating_sub(1)
            .saturating_mul(s.stride)
            .saturating_add(s.offset)
            .saturating_add(width);
        expect(x.dtype() == DType::F32 && x.len() >= need, || {
            format!("{name} must be f32 with at least {need} elements for {t} tokens")
        })?;
    }
    expect(pos.len() == t && pos.dtype() == DType::I32, || {
        format!("pos must be i32 of {t} elements")
    })?;
    expect(q_out.len() == t * r.rope.n_heads * hd, || {
        format!("q_out must hold {t} x {} x {hd}", r.rope.n_heads)
    })?;
    let end = (r.cache_pos + t) * kv;
    expect(k_cache.len() >= end && v_cache.len() >= end, || {
        format!("the caches must hold at least {end} values")
    })?;
    let plan = rope::plan_qkv(r, step.caps(), choice)?;
    step.launch(
        &plan,
        &[
            ("q", q),
            ("k", k),
            ("v", v),
            ("pos", pos),
            ("q_out", q_out),
            ("k_cache", k_cache),
            ("v_cache", v_cache),
        ],
    )
}

/// `y[b][n] = w[n][k] . x[b][k]` for `w` in a GGUF block format (kept packed) and any number of activation
/// rows: one for decoding, a prompt's worth for prefill.
pub fn qmatvec(
    step: &mut Step<'_>,
    w: &Tensor,
    x: &Tensor,
    y: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let DType::Block(format) = w.dtype() else {
        return Err(Error::Shape(format!(
            "qmatvec takes block-format weights, got {}",
            w.dtype()
        )));
    };
    let (n, k) = dims2(w, "w")?;
    let (batch, kx) = dims2(x, "x")?;
    expect(
        kx == k && matches!(x.dtype(), DType::F32 | DType::F16),
        || {
            format!(
                "x must be f32 or f16 [batch, {k}], got {} {:?}",
                x.dtype(),
                x.shape()
            )
        },
    )?;
    expect(y.shape() == [batch, n] && y.dtype() == DType::F32, || {
        format!(
            "y must be f32 [{batch}, {n}], got {} {:?}",
            y.dtype(),
            y.shape()
        )
    })?;
    let plan = qmatvec::plan(format, x.dtype(), n, k, batch, step.caps(), choice)?;
    step.launch(&plan, &[("w", w), ("x", x), ("y", y)])
}

/// The prefill product on the shared-memory tiled kernel: `y[m][n] = x[m][k] . w[n][k]`, `w` in a block
/// format. [`matmul_weights`] chooses between this and [`qmatvec`]'s row tiles.
pub fn qmatmul(
    step: &mut Step<'_>,
    w: &Tensor,
    x: &Tensor,
    y: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let DType::Block(format) = w.dtype() else {
        return Err(Error::Shape(format!(
            "qmatmul takes block-format weights, got {}",
            w.dtype()
        )));
    };
    let (n, k) = dims2(w, "w")?;
    let (m, kx) = dims2(x, "x")?;
    expect(kx == k && x.dtype() == DType::F32, || {
        format!("x must be f32 [m, {k}], got {} {:?}", x.dtype(), x.shape())
    })?;
    expect(y.shape() == [m, n] && y.dtype() == DType::F32, || {
        format!(
            "y must be f32 [{m}, {n}], got {} {:?}",
            y.dtype(),
            y.shape()
        )
    })?;
    let plan = qmatmul::plan(format, m, n, k, step.caps(), choice)?;
    step.launch(&plan, &[("a", x), ("w", w), ("c", y)])
}

/// `y = x w^T` for any weight tensor, whatever its format: the one entry point model code uses, so that
/// the weight's format stays a property of the tensor. Quantized weights go to qmatvec for one row, and
/// for batches on CPU adapters (its 8-row tiles need no barriers), and to the tiled qmatmul for batches
/// on GPUs; float weights go to matvec or matmul.
pub fn matmul_weights(step: &mut Step<'_>, w: &Tensor, x: &Tensor, y: &Tensor) -> Result<()> {
    let m = x.shape().first().copied().unwrap_or(0);
    let caps = *step.caps();
    match w.dtype() {
        DType::Block(_) if m == 1 || caps.software || x.dtype() == DType::F16 => {
            tracing::debug!(
                m,
                "quantized weights: qmatvec (one row, a CPU adapter, or f16 activations)"
            );
            qmatvec(step, w, x, y, Choice::Auto)
        }
        DType::Block(_) => {
            tracing::debug!(m, "quantized weights: tiled qmatmul (a batch on a GPU)");
            qmatmul(step, w, x, y, Choice::Auto)
        }
        DType::F32 | DType::F16 if m == 1 => {
            let k = x.shape().get(1).copied().unwrap_or(0);
            let (xv, yv) = (
                x.reshape(&[k])
                    .ok_or_else(|| Error::Shape("x must be [1, k]".into()))?,
                y.reshape(&[y.len()])
                    .ok_or_else(|| Error::Shape("y".into()))?,
            );
            matvec(step, w, &xv, &yv, Choice::Auto)
        }
        DType::F32 | DType::F16 => matmul(step, x, w, y, Choice::Auto),
        other => Err(Error::Shape(format!(
            "weights of type {other} cannot multiply activations"
        ))),
    }
}

/// `out[t] = table[ids[t]]`, dequantizing a block-format table: the token-embedding lookup. Ids are
/// checked against the table on the host side of the caller; the kernel clamps as a last guard.
pub fn get_rows(
    step: &mut Step<'_>,
    table: &Tensor,
    ids: &Tensor,
    out: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let (rows, k) = dims2(table, "table")?;
    expect(ids.dtype() == DType::U32, || {
        format!("ids must be u32, got {}", ids.dtype())
    })?;
    expect(
        out.shape() == [ids.len(), k] && out.dtype() == DType::F32,
        || format!("out must be f32 [{}, {k}]", ids.len()),
    )?;
    let plan = get_rows::plan(table.dtype(), rows, k, ids.len(), step.caps(), choice)?;
    step.launch(&plan, &[("w", table), ("ids", ids), ("out", out)])
}

/// One level of the wavelet transform along one axis (`wring_kernels::wavelet`): forward reads the
/// contiguous `src` and writes both bands into `dst` through the strides in `d`; inverse the other way.
/// `filters` is the wavelet's filter bank (`Wavelet::filter_bank`) as an f32 tensor; both sample tensors
/// are of `d.dtype`.
pub fn dwt(
    step: &mut Step<'_>,
    d: &wring_kernels::wavelet::Dwt,
    filters: &Tensor,
    src: &Tensor,
    dst: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let taps = d.wavelet.taps();
    expect(
        filters.dtype() == DType::F32 && filters.len() == 4 * taps,
        || format!("filters must be f32 [4 x {taps}]"),
    )?;
    let (signal, banded) = if d.forward { (src, dst) } else { (dst, src) };
    expect(
        signal.dtype() == d.dtype && signal.len() >= d.signal_len(),
        || {
            format!(
                "the signal must be {} with at least {} elements",
                d.dtype,
                d.signal_len()
            )
        },
    )?;
    expect(
        banded.dtype() == d.dtype && banded.len() >= d.banded_len(),
        || {
            format!(
                "the bands must be {} with at least {} elements",
                d.dtype,
                d.banded_len()
            )
        },
    )?;
    let plan = wring_kernels::wavelet::plan(d, step.caps(), choice)?;
    step.launch(&plan, &[("filters", filters), ("src", src), ("dst", dst)])
}

/// Elements a tensor needs to hold `rows` rows of `d` values read at `row * stride + offset`.
fn rows_extent(rows: usize, stride: usize, offset: usize, d: usize) -> usize {
    rows.saturating_sub(1) * stride + offset + d
}

/// The scratch lists of a search: keys (f32) and ids (u32), `n` of each.
fn holds_lists(keys: &Tensor, ids: &Tensor, n: usize) -> Result<()> {
    holds(keys, "the keys", DType::F32, n)?;
    holds(ids, "the ids", DType::U32, n)
}

/// `t` has `dtype` and at least `n` elements.
fn holds(t: &Tensor, name: &str, dtype: DType, n: usize) -> Result<()> {
    expect(t.dtype() == dtype && t.len() >= n, || {
        format!(
            "{name} must be {dtype} with at least {n} elements, got {} of {}",
            t.dtype(),
            t.len()
        )
    })
}

/// One launch of the fused nearest-codeword search (`wring_kernels::vq`): `x` f32 queries, `codes` the
/// codebook tensor [n_codes][d] of `s.dtype`, `cnorm` its squared norms (f32, read for L2 and cosine),
/// `keys`/`ids` the scratch lists [nq][lists][k] (f32 and u32) that [`vq_merge`] reduces.
#[allow(
    clippy::too_many_arguments,
    reason = "the search has this many operands"
)]
pub fn vq_search(
    step: &mut Step<'_>,
    s: &wring_kernels::vq::Search,
    x: &Tensor,
    codes: &Tensor,
    cnorm: &Tensor,
    keys: &Tensor,
    ids: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    holds(
        x,
        "the queries",
        DType::F32,
        rows_extent(s.nq, s.x_stride, s.x_offset, s.d),
    )?;
    holds(codes, "the codebook", s.dtype, s.n_codes * s.d)?;
    holds(cnorm, "the codeword norms", DType::F32, s.n_codes)?;
    let scratch = s.nq.saturating_mul(s.lists).saturating_mul(s.k);
    holds_lists(keys, ids, scratch)?;
    let plan = wring_kernels::vq::plan_search(s, step.caps(), choice)?;
    step.launch(
        &plan,
        &[
            ("x", x),
            ("codes", codes),
            ("cnorm", cnorm),
            ("keys", keys),
            ("ids", ids),
        ],
    )
}

/// The final top-k of a search: `dist` (f32) and `idx` (u32), [nq][k], from the scratch lists.
#[allow(
    clippy::too_many_arguments,
    reason = "the merge has this many operands"
)]
pub fn vq_merge(
    step: &mut Step<'_>,
    m: &wring_kernels::vq::Merge,
    x: &Tensor,
    keys: &Tensor,
    ids: &Tensor,
    dist: &Tensor,
    idx: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    holds(
        x,
        "the queries",
        DType::F32,
        rows_extent(m.nq, m.x_stride, m.x_offset, m.d),
    )?;
    let scratch = m.nq.saturating_mul(m.lists).saturating_mul(m.k);
    holds_lists(keys, ids, scratch)?;
    holds(dist, "the distances", DType::F32, m.nq * m.k)?;
    holds(idx, "the indices", DType::U32, m.nq * m.k)?;
    let plan = wring_kernels::vq::plan_merge(m, step.caps(), choice)?;
    step.launch(
        &plan,
        &[
            ("x", x),
            ("keys", keys),
            ("ids", ids),
            ("dist", dist),
            ("idx", idx),
        ],
    )
}

/// Squared norms of the rows of `x` (f32 or f16) into `out` (f32 [rows]).
pub fn vq_norms(
    step: &mut Step<'_>,
    n: &wring_kernels::vq::Norms,
    x: &Tensor,
    out: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let rows = n.rows as usize;
    holds(
        x,
        "the matrix",
        x.dtype(),
        rows_extent(rows, n.stride as usize, n.offset as usize, n.d as usize),
    )?;
    holds(out, "the norms", DType::F32, rows)?;
    let plan = wring_kernels::vq::plan_norms(n, x.dtype(), step.caps(), choice)?;
    step.launch(&plan, &[("x", x), ("out", out)])
}

/// Codebook lookup into `out` (f32): set, add or subtract codeword `ids[r]` on row r.
pub fn vq_lookup(
    step: &mut Step<'_>,
    l: &wring_kernels::vq::Lookup,
    ids: &Tensor,
    codes: &Tensor,
    out: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    holds(ids, "the ids", DType::U32, l.n)?;
    holds(codes, "the codebook", l.dtype, l.n_codes * l.d)?;
    holds(
        out,
        "the output",
        DType::F32,
        rows_extent(l.n, l.out_stride, l.out_offset, l.d),
    )?;
    let plan = wring_kernels::vq::plan_lookup(l, step.caps(), choice)?;
    step.launch(&plan, &[("ids", ids), ("codes", codes), ("out", out)])
}

/// The k-means centroid update: `centroids` (f32 [k][d]) become the means of their points in `x`, grouped
/// by `order` and `offsets` (`wring_kernels::vq::group_by_cluster`); empty clusters are left unchanged.
pub fn vq_update(
    step: &mut Step<'_>,
    up: &wring_kernels::vq::Update,
    x: &Tensor,
    order: &Tensor,
    offsets: &Tensor,
    centroids: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let (k, d) = (up.k as usize, up.d as usize);
    holds(offsets, "the offsets", DType::U32, k + 1)?;
    holds(order, "the order", DType::U32, 1)?;
    let points = order.len();
    holds(
        x,
        "the data",
        DType::F32,
        rows_extent(points, up.x_stride as usize, up.x_offset as usize, d),
    )?;
    holds(centroids, "the centroids", DType::F32, k * d)?;
    let plan = wring_kernels::vq::plan_update(up, points, step.caps(), choice)?;
    step.launch(
        &plan,
        &[
            ("x", x),
            ("order", order),
            ("offsets", offsets),
            ("centroids", centroids),
        ],
    )
}

/// Replaces the L2 distances in `dist` (f32 [nq][k]) of the pairs whose ids (`idx`) lie in this codebook
/// tensor by the direct sum of squared differences.
pub fn vq_refine(
    step: &mut Step<'_>,
    r: &wring_kernels::vq::Refine,
    x: &Tensor,
    codes: &Tensor,
    idx: &Tensor,
    dist: &Tensor,
    choice: Choice<'_>,
) -> Result<()> {
    let (nq, k, d) = (r.nq as usize, r.k as usize, r.d as usize);
    holds(
        x,
        "the queries",
        DType::F32,
        rows_extent(nq, r.x_stride as usize, r.x_offset as usize, d),
    )?;
    holds(codes, "the codebook", codes.dtype(), r.n_codes as usize * d)?;
    holds(idx, "the indices", DType::U32, nq * k)?;
    holds(dist, "the distances", DType::F32, nq * k)?;
    let plan = wring_kernels::vq::plan_refine(r, codes.dtype(), step.caps(), choice)?;
    step.launch(
        &plan,
        &[("x", x), ("codes", codes), ("idx", idx), ("dist", dist)],
    )
}
