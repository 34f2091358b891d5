//! `attn_fused`: the whole causal grouped-query attention in one launch (online softmax, no scores
//! tensor). Budget against its twin: NMSE 1e-9 (the same order of operations; the adapter's `exp` may be a
//! few ulp off, which Vulkan allows). Shapes: attn_scores' four (prefill, decode deep in the cache, a chunk
//! after a prefix, plain multi-head with a head size that is not a power of two), a 40-token prefill of
//! SmolLM2's heads spanning several workgroups, and the largest head the private arrays hold (128). A test
//! below checks it against the three-launch composite's twins.

use wring::kernels::check::{Tolerance, compare};
use wring::kernels::tensor::Attention;
use wring::kernels::{Choice, DType};

use super::attn_scores::{SHAPES, attention_shape};
use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// The shapes: attn_scores' own, then (tokens, pos0, heads, kv heads, head_dim) of the longer cases.
fn shapes() -> Vec<(usize, usize, usize, usize, usize)> {
    let mut s = SHAPES.to_vec();
    s.extend([(40, 0, 9, 3, 64), (2, 5, 4, 2, 128)]);
    s
}

fn inputs(i: usize) -> (Attention, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (tokens, pos0, h, hkv, d) = shapes()[i];
    let a = attention_shape(tokens, pos0, h, hkv, d);
    // Scores of several units, so that the softmax is far from uniform and the running maximum moves.
    let mut rng = Rng::new(1000 + i as u64);
    let q = rng.vec(tokens * h * d, -2.0, 2.0);
    let k = rng.vec(a.kv_len * hkv * d, -2.0, 2.0);
    let v = rng.vec(a.kv_len * hkv * d, -1.0, 1.0);
    (a, q, k, v)
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("attn_fused") {
        for i in 0..shapes().len() {
            out.push(planned(v, move || {
                let (a, q, k, vals) = inputs(i);
                let mut o = vec![0.0f32; a.tokens * a.n_heads * a.head_dim];
                a.cpu_fused(&q, &k, &vals, &mut o);
                Case {
                    name: format!("attn_fused variant={} {a:?}", v.name),
                    tol: Tolerance::Nmse(1e-9),
                    out_dtype: DType::F32,
                    out_shape: vec![o.len()],
                    expected: o,
                    record: Box::new(move |ctx, step, out| {
                        let (tq, tk, tv) = (
                            ctx.upload(&[q.len()], &q)?,
                            ctx.upload(&[k.len()], &k)?,
                            ctx.upload(&[vals.len()], &vals)?,
                        );
                        let operands = [("q", &tq), ("k", &tk), ("v", &tv), ("o", out)];
                        step.run_with(&a.fused(), Choice::Force(&v.name), &operands)
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}

/// The fused twin gives what the three-launch composite's twins give (scores, an f64 softmax, weighted
/// values): the online softmax is a reordering, not an approximation.
#[test]
fn fused_twin_equals_the_three_launch_attention() {
    for i in 0..shapes().len() {
        let (a, q, k, v) = inputs(i);
        let mut s = vec![0.0f32; a.tokens * a.n_heads * a.kv_len];
        a.cpu_scores(&q, &k, &mut s);
        for row in s.chunks_mut(a.kv_len) {
            let m = row.iter().fold(f32::MIN, |m, &x| m.max(x));
            let sum: f64 = row.iter().map(|&x| f64::from(x - m).exp()).sum();
            for x in row.iter_mut() {
                *x = (f64::from(*x - m).exp() / sum) as f32;
            }
        }
        let (mut three, mut fused) = (
            vec![0.0f32; a.tokens * a.n_heads * a.head_dim],
            vec![0.0f32; a.tokens * a.n_heads * a.head_dim],
        );
        a.cpu_pv(&s, &v, &mut three);
        a.cpu_fused(&q, &k, &v, &mut fused);
        let r = compare(&fused, &three, Tolerance::Nmse(1e-11));
        assert!(r.is_ok(), "{a:?}: {}", r.unwrap_err());
    }
}

/// A head wider than the private arrays is refused when planned, not truncated.
#[test]
fn attn_fused_refuses_heads_wider_than_128() {
    use wring::kernels::Kernel as _;
    let e = attention_shape(1, 0, 2, 1, 132)
        .fused()
        .plan(&wring::kernels::Caps::BASELINE, Choice::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("exceeds the 128"), "{e}");
}
