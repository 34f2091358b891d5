//! `attn_fused`: the whole causal grouped-query attention in one launch (online softmax, no scores
//! tensor). Budget against its twin: NMSE 1e-9. The per-row variant keeps the twin's order of operations
//! (the adapter's `exp` may be a few ulp off, which Vulkan allows); the tiled variants step the online
//! softmax by blocks of 8 keys (the maximum over a block, then one rescale) and sum each block's
//! probabilities across lanes, a reordering whose rounding differences stay near 1e-14 in NMSE. Shapes:
//! attn_scores' four (prefill, decode deep in the cache, a chunk after a prefix, plain multi-head with a
//! head size that is not a power of two), a 40-token prefill of SmolLM2's heads spanning several
//! workgroups, the largest head the private arrays hold (128), and for the tiled variants a chunk whose
//! rows and keys both end inside a tile and a block, plain multi-head at 64, and four query heads per
//! key/value head at 128. A tiled variant runs only the shapes of its head size. A test below checks the
//! twin against the three-launch composite's twins. The `_q8` variants write o as 8-bit activation units,
//! compared as units against the twin's o quantized (each unit consistent, their values within NMSE 1e-5:
//! room for a code that the 1e-14-level reordering moves across a half step), on the shapes whose heads
//! hold whole 32-value units. Every shape runs plain and as a Gemma 2 sliding-window layer (scores
//! soft-capped at 2, where the cases' scores reach several units, and a window of 5 keys, narrower than
//! every shape's deepest query), same budgets.

use wring::kernels::check::{Tolerance, compare};
use wring::kernels::tensor::Attention;
use wring::kernels::{Choice, DType};

use super::attn_scores::{SHAPES, attention_shape};
use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// The shapes: attn_scores' own, then (tokens, pos0, heads, kv heads, head_dim) of the longer cases.
fn shapes() -> Vec<(usize, usize, usize, usize, usize)> {
    let mut s = SHAPES.to_vec();
    s.extend([
        (40, 0, 9, 3, 64),
        (2, 5, 4, 2, 128),
        (13, 20, 9, 3, 64),
        (6, 3, 4, 4, 64),
        (9, 7, 8, 2, 128),
    ]);
    s
}

fn inputs(i: usize, gemma: bool) -> (Attention, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (tokens, pos0, h, hkv, d) = shapes()[i];
    let mut a = attention_shape(tokens, pos0, h, hkv, d);
    if gemma {
        (a.softcap, a.window) = (2.0, 5);
    }
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
        let head = v
            .define("HD")
            .map(|hd| hd.parse::<usize>().expect("HD is a number"));
        let units = v.define("Q8OUT").is_some();
        // The Gemma 2 form on the shapes where the window cuts into a longer run of keys: a chunk after
        // a prefix, the 40-token prefill, and the tiled forms' ragged chunks.
        let gemma_shapes = |i: usize| {
            let (tokens, pos0, ..) = shapes()[i];
            pos0 + tokens > 12
        };
        for (i, gemma) in (0..shapes().len())
            .flat_map(|i| [(i, false), (i, true)])
            .filter(|&(i, gemma)| !gemma || gemma_shapes(i))
        {
            let d = shapes()[i].4;
            if head.is_some_and(|hd| hd != d) || (units && !d.is_multiple_of(32)) {
                continue;
            }
            out.push(planned(v, move || {
                let (a, q, k, vals) = inputs(i, gemma);
                let mut o = vec![0.0f32; a.tokens * a.n_heads * a.head_dim];
                a.cpu_fused(&q, &k, &vals, &mut o);
                let (tol, out_dtype, expected) = if units {
                    let units = crate::kernels::expected_units(&o);
                    (Tolerance::Q8Units(1e-5), DType::U32, units)
                } else {
                    (Tolerance::Nmse(1e-9), DType::F32, o)
                };
                Case {
                    name: format!("attn_fused variant={} {a:?}", v.name),
                    tol,
                    out_dtype,
                    out_shape: vec![expected.len()],
                    expected,
                    record: Box::new(move |ctx, step, out| {
                        let (tq, tk, tv) = (
                            ctx.upload(&[q.len()], &q)?,
                            ctx.upload(&[k.len()], &k)?,
                            ctx.upload(&[vals.len()], &vals)?,
                        );
                        let force = Choice::Force(&v.name);
                        if units {
                            let operands = [("q", &tq), ("k", &tk), ("v", &tv), ("oq", out)];
                            return step.run_with(&a.fused_q8(), force, &operands);
                        }
                        let operands = [("q", &tq), ("k", &tk), ("v", &tv), ("o", out)];
                        step.run_with(&a.fused(), force, &operands)
                    }),
                    needs_f16: false,
                    needs_subgroup: v.requires.subgroup,
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
        let (a, q, k, v) = inputs(i, false);
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

/// The planner takes the tiled form on a CPU adapter with 8-lane subgroups (the smallest tile holding a
/// decode step's rows, 8 rows for a prompt) and the per-row form elsewhere; a tiled variant forced onto a
/// head size it was not built for, or onto subgroups that may be narrower than its workgroup, is refused.
#[test]
fn attn_fused_plans_the_tiled_form_where_it_measured_faster() {
    use wring::kernels::{Caps, Kernel as _};
    let (lavapipe, gpu) = crate::kernels::planner_caps();
    let name = |a: Attention, caps: &Caps| {
        a.fused()
            .plan(caps, Choice::Auto)
            .unwrap()
            .variant
            .name
            .to_string()
    };
    let decode = attention_shape(1, 40, 9, 3, 64);
    let prompt = attention_shape(40, 0, 9, 3, 64);
    assert_eq!(name(decode, &lavapipe), "tiled_d64_r3");
    // The 8-bit-unit form follows the same choice, and needs heads of whole 32-value units.
    let units = |a: Attention, caps: &Caps| {
        a.fused_q8()
            .plan(caps, Choice::Auto)
            .map(|p| p.variant.name.to_string())
    };
    assert_eq!(units(decode, &lavapipe).unwrap(), "tiled_d64_r3_q8");
    assert_eq!(units(prompt, &gpu).unwrap(), "f32_q8");
    let e = units(attention_shape(1, 4, 2, 1, 48), &gpu).unwrap_err();
    assert!(e.to_string().contains("whole 32-value units"), "{e}");
    let e = decode
        .fused()
        .plan(&lavapipe, Choice::Force("tiled_d64_r3_q8"))
        .unwrap_err();
    assert!(e.to_string().contains("does not write floats"), "{e}");
    assert_eq!(
        name(attention_shape(1, 40, 8, 2, 128), &lavapipe),
        "tiled_d128_r4"
    );
    assert_eq!(name(prompt, &lavapipe), "tiled_d64_r8");
    assert_eq!(name(attention_shape(5, 0, 9, 3, 12 * 4), &lavapipe), "f32");
    assert_eq!(name(prompt, &gpu), "f32");
    assert_eq!(
        name(
            prompt,
            &Caps {
                subgroup: false,
                subgroup_min_size: 0,
                ..lavapipe
            }
        ),
        "f32"
    );
    let wrong_head = attention_shape(5, 0, 9, 3, 128)
        .fused()
        .plan(&lavapipe, Choice::Force("tiled_d64_r8"))
        .unwrap_err();
    assert!(
        wrong_head.to_string().contains("built for head_dim 64"),
        "{wrong_head}"
    );
    let narrow = Caps {
        subgroup_min_size: 4,
        ..lavapipe
    };
    let e = prompt
        .fused()
        .plan(&narrow, Choice::Force("tiled_d64_r8"))
        .unwrap_err();
    assert!(e.to_string().contains("may be 4 wide"), "{e}");
}

/// The Gemma 2 twin against a direct computation: each query's scores over its window only, soft-capped,
/// an f64 softmax, the weighted values.
#[test]
fn windowed_soft_capped_twin_equals_the_direct_attention() {
    for i in 0..shapes().len() {
        let (a, q, k, v) = inputs(i, true);
        let d = a.head_dim;
        let group = a.n_heads / a.n_kv_heads;
        let mut want = vec![0.0f32; a.tokens * a.n_heads * d];
        for th in 0..a.tokens * a.n_heads {
            let (h, t) = (th % a.n_heads, th / a.n_heads);
            let p = a.pos0 + t;
            let first = (p + 1).saturating_sub(a.window);
            let row = |j: usize| (j * a.n_kv_heads + h / group) * d;
            let s: Vec<f64> = (first..=p)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|c| f64::from(q[th * d + c]) * f64::from(k[row(j) + c]))
                        .sum();
                    let x = dot * f64::from(a.scale);
                    f64::from(a.softcap) * (x / f64::from(a.softcap)).tanh()
                })
                .collect();
            let m = s.iter().fold(f64::MIN, |m, &x| m.max(x));
            let sum: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for c in 0..d {
                let acc: f64 = (first..=p)
                    .zip(&s)
                    .map(|(j, x)| (x - m).exp() / sum * f64::from(v[row(j) + c]))
                    .sum();
                want[th * d + c] = acc as f32;
            }
        }
        let mut got = vec![0.0f32; want.len()];
        a.cpu_fused(&q, &k, &v, &mut got);
        let r = compare(&got, &want, Tolerance::Nmse(1e-11));
        assert!(r.is_ok(), "shape {i}: {}", r.unwrap_err());
    }
}
