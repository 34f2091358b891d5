//! `attn_scores`: causal grouped-query attention scores over a KV cache. Budget: NMSE 1e-10 (one dot
//! product per score, in order).

use wring::kernels::check::Tolerance;
use wring::kernels::tensor::Attention;
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

pub fn attention_shape(
    tokens: usize,
    pos0: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Attention {
    Attention {
        tokens,
        kv_len: pos0 + tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        pos0,
        scale: 1.0 / (head_dim as f32).sqrt(),
        softcap: 0.0,
        window: 0,
    }
}

/// Prefill from position 0, decode of one token deep in the cache, a chunk after a prefix; SmolLM2's 9
/// query heads over 3 key/value heads, plain multi-head, and a head size that is not a power of two.
pub const SHAPES: [(usize, usize, usize, usize, usize); 4] = [
    (5, 0, 9, 3, 64),
    (1, 40, 9, 3, 64),
    (7, 9, 4, 4, 12),
    (3, 2, 2, 1, 4),
];

/// The inputs of case `i`: the shape, q, the key cache and the value cache.
pub fn inputs(i: usize) -> (Attention, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (tokens, pos0, h, hkv, d) = SHAPES[i];
    let a = attention_shape(tokens, pos0, h, hkv, d);
    let mut rng = Rng::new(i as u64);
    let q = rng.vec(tokens * h * d, -1.0, 1.0);
    let k = rng.vec(a.kv_len * hkv * d, -1.0, 1.0);
    let v = rng.vec(a.kv_len * hkv * d, -1.0, 1.0);
    (a, q, k, v)
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("attn_scores") {
        for i in 0..SHAPES.len() {
            out.push(planned(v, move || {
                let (a, q, k, _) = inputs(i);
                let mut s = vec![0.0f32; a.tokens * a.n_heads * a.kv_len];
                a.cpu_scores(&q, &k, &mut s);
                Case {
                    name: format!("attn_scores variant={} {a:?}", v.name),
                    tol: Tolerance::Nmse(1e-10),
                    out_dtype: DType::F32,
                    out_shape: vec![s.len()],
                    expected: s,
                    record: Box::new(move |ctx, step, out| {
                        let (tq, tk) = (ctx.upload(&[q.len()], &q)?, ctx.upload(&[k.len()], &k)?);
                        let operands = [("q", &tq), ("k", &tk), ("s", out)];
                        step.run_with(&a.scores(), Choice::Force(&v.name), &operands)
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
