//! The vector-quantization family's case generators. Search, merge and refine are checked through one
//! pipeline (the searches over a codebook split into two launches, the merge, and for L2 the refinement),
//! with the kernel under test forced and the others chosen as the library chooses; the output checked is
//! the merged distances, and every buffer the pipeline writes (the per-invocation lists, the ids) is
//! sentinel-guarded. The ids are checked against the twin, ties allowed, in `tests/vq.rs`.
//!
//! Budget: NMSE 1e-8 on the distances. The device and the twin rank by the same expansion key but sum the
//! dot products in different orders (about 1e-7 relative); L2 distances are then recomputed directly in the
//! twin's order. Ranks that differ between the two are near-ties, whose distances differ by about as much.

use wring::kernels::check::Tolerance;
use wring::kernels::vq::{Merge, Metric, Refine, Search, vq};
use wring::kernels::{Choice, DType};
use wring::runtime::{Context, Step, Tensor};

use crate::harness::{Case, Rng, guarded};

pub mod vq_lookup;
pub mod vq_merge;
pub mod vq_norms;
pub mod vq_refine;
pub mod vq_search;
pub mod vq_update;

/// (queries, dimensions, codewords): one of each, odd sizes, a codebook of several workgroup splits.
pub const SHAPES: [(usize, usize, usize); 5] = [
    (1, 4, 1),
    (5, 3, 7),
    (33, 8, 100),
    (70, 37, 515),
    (9, 16, 300),
];

/// Which kernel of the pipeline a case forces, and the variant name.
#[derive(Debug, Clone, Copy)]
pub enum Forced<'a> {
    Search(&'a str),
    Merge(&'a str),
    Refine(&'a str),
}

/// A search request on host data: `nq` queries of `d` dimensions against the codewords in `codes`
/// (f16-rounded values stored as f16 when `f16`), top `k` by `metric`.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub x: &'a [f32],
    pub nq: usize,
    pub d: usize,
    pub codes: &'a [f32],
    pub k: usize,
    pub metric: Metric,
    pub f16: bool,
}

/// Records the whole search as the library runs it, with one kernel forced: the codebook in two launches
/// (chunks at code_base 0 and n / 2, as a chunked codebook is run), the merge into `dist` and `idx`
/// ([nq][k]), and for L2 the refinement of `dist`. The per-invocation lists are sentinel-guarded.
pub fn record_search(
    ctx: &Context,
    step: &mut Step<'_>,
    forced: Forced<'_>,
    q: &Query<'_>,
    dist: &Tensor,
    idx: &Tensor,
) -> wring::runtime::Result<()> {
    let Query {
        nq,
        d,
        k,
        metric,
        f16,
        ..
    } = *q;
    let n = q.codes.len() / d;
    let x = ctx.upload(&[nq, d], q.x)?;
    let halves = if n > 1 {
        vec![(0, n / 2), (n / 2, n - n / 2)]
    } else {
        vec![(0, 1)]
    };
    let caps = *ctx.caps();
    let mut parts = Vec::new();
    let mut lists = 0;
    for &(base, len) in &halves {
        let c = &q.codes[base * d..(base + len) * d];
        let t = if f16 {
            let h: Vec<half::f16> = c.iter().map(|&v| half::f16::from_f32(v)).collect();
            ctx.upload(&[len, d], &h)?
        } else {
            ctx.upload(&[len, d], c)?
        };
        let norms = ctx.upload(
            &[len],
            &c.chunks_exact(d).map(vq::norm2).collect::<Vec<_>>(),
        )?;
        let split_len = Search::split_len_for(nq, len, &caps).min(32);
        lists += len.div_ceil(split_len) * vq::SEARCH_WX;
        parts.push((t, norms, base, len, split_len));
    }
    let keys = guarded(ctx, &[nq * lists * k], DType::F32)?;
    let ids = guarded(ctx, &[nq * lists * k], DType::U32)?;
    let choice = |want: &str| match forced {
        Forced::Search(v) if want == "search" => Choice::Force(v),
        Forced::Merge(v) if want == "merge" => Choice::Force(v),
        Forced::Refine(v) if want == "refine" => Choice::Force(v),
        _ => Choice::Auto,
    };
    let mut list_base = 0;
    for (t, norms, base, len, split_len) in &parts {
        let s = Search {
            nq,
            d,
            x_stride: d,
            x_offset: 0,
            n_codes: *len,
            code_base: *base,
            split_len: *split_len,
            k,
            metric,
            lists,
            list_base,
            dtype: t.dtype(),
        };
        let operands = [
            ("x", &x),
            ("codes", t),
            ("cnorm", norms),
            ("keys", &keys),
            ("ids", &ids),
        ];
        step.run_with(&s, choice("search"), &operands)?;
        list_base += s.launch_lists();
    }
    let m = Merge {
        nq,
        lists,
        k,
        metric,
        d,
        x_stride: d,
        x_offset: 0,
    };
    let operands = [
        ("x", &x),
        ("keys", &keys),
        ("ids", &ids),
        ("dist", dist),
        ("idx", idx),
    ];
    step.run_with(&m, choice("merge"), &operands)?;
    if metric == Metric::L2 {
        for (t, _, base, len, _) in &parts {
            let r = Refine {
                nq,
                k,
                d,
                x_stride: d,
                x_offset: 0,
                code_base: *base,
                n_codes: *len,
                dtype: t.dtype(),
            };
            let operands = [("x", &x), ("codes", t), ("idx", idx), ("dist", dist)];
            step.run_with(&r, choice("refine"), &operands)?;
        }
    }
    Ok(())
}

/// One search pipeline case: `nq` queries of `d` dimensions against `n` codewords (f16-rounded and stored
/// as f16 when `f16`), top `k` by `metric`.
#[allow(clippy::too_many_arguments, reason = "a search's whole description")]
pub fn search_case(
    forced: Forced<'static>,
    nq: usize,
    d: usize,
    n: usize,
    k: usize,
    metric: Metric,
    f16: bool,
    seed: u64,
) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let queries = rng.vec(nq * d, -1.0, 1.0);
    let mut codes = rng.vec(n * d, -1.0, 1.0);
    if f16 {
        codes
            .iter_mut()
            .for_each(|c| *c = half::f16::from_f32(*c).to_f32());
    }
    let (want, _) = vq::cpu_search(&queries, nq, d, d, 0, &codes, k, metric);
    Case {
        name: format!(
            "vq {forced:?} nq={nq} d={d} n={n} k={k} metric={} f16={f16} seed={seed}",
            metric.name()
        ),
        tol: Tolerance::Nmse(1e-8),
        out_dtype: DType::F32,
        out_shape: vec![nq * k],
        expected: want,
        record: Box::new(move |ctx, step, dist| {
            let idx = guarded(ctx, &[nq * k], DType::U32)?;
            let q = Query {
                x: &queries,
                nq,
                d,
                codes: &codes,
                k,
                metric,
                f16,
            };
            record_search(ctx, step, forced, &q, dist, &idx)
        }),
        needs_f16: f16,
        needs_subgroup: false,
    }
}
