//! `attn_pv`: attention-weighted values. Budget: NMSE 1e-10. The whole attention composite (scores,
//! softmax, values, in wring-llm) is also checked against the textbook definition in f64.

use wring::kernels::check::Tolerance;
use wring::kernels::{Choice, DType};
use wring::llm::layers::attention;

use super::attn_scores::{SHAPES, attention_shape, inputs};
use crate::harness::{Case, Rng, copy_into};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("attn_pv") {
        for i in 0..SHAPES.len() {
            out.push(planned(v, move || {
                let (a, q, k, vals) = inputs(i);
                let mut s = vec![0.0f32; a.tokens * a.n_heads * a.kv_len];
                a.cpu_scores(&q, &k, &mut s);
                // Softmax rows in f64 give the probabilities; the twin then weights the values.
                let mut p = s;
                for row in p.chunks_mut(a.kv_len) {
                    let m = row.iter().fold(f32::MIN, |m, &x| m.max(x));
                    let sum: f64 = row.iter().map(|&x| f64::from(x - m).exp()).sum();
                    for x in row.iter_mut() {
                        *x = (f64::from(*x - m).exp() / sum) as f32;
                    }
                }
                let mut o = vec![0.0f32; a.tokens * a.n_heads * a.head_dim];
                a.cpu_pv(&p, &vals, &mut o);
                Case {
                    name: format!("attn_pv variant={} {a:?}", v.name),
                    tol: Tolerance::Nmse(1e-10),
                    out_dtype: DType::F32,
                    out_shape: vec![o.len()],
                    expected: o,
                    record: Box::new(move |ctx, step, out| {
                        let (tp, tv) = (
                            ctx.upload(&[p.len()], &p)?,
                            ctx.upload(&[vals.len()], &vals)?,
                        );
                        let operands = [("p", &tp), ("v", &tv), ("o", out)];
                        step.run_with(&a.pv(), Choice::Force(&v.name), &operands)
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}

/// The whole attention op against the textbook definition in f64: softmax(q k^T / sqrt(d), causal) v, with
/// each query head reading its group's key/value head, after appending this step's keys to a cache.
#[test]
fn attention_op_matches_the_definition() {
    let ctx = crate::harness::ctx();
    let (h, hkv, d, cap) = (9, 3, 64, 64);
    let mut rng = Rng::new(99);
    let k_cache = ctx.empty(&[cap * hkv * d], DType::F32).unwrap();
    let v_cache = ctx.empty(&[cap * hkv * d], DType::F32).unwrap();
    let mut k_all = Vec::new();
    let mut v_all = Vec::new();
    // A prefill of 6 tokens, then two decode steps, each appending to the caches first.
    for (pos0, tokens) in [(0usize, 6usize), (6, 1), (7, 1)] {
        let a = attention_shape(tokens, pos0, h, hkv, d);
        let q = rng.vec(tokens * h * d, -1.0, 1.0);
        let (kn, vn) = (
            rng.vec(tokens * hkv * d, -1.0, 1.0),
            rng.vec(tokens * hkv * d, -1.0, 1.0),
        );
        k_all.extend_from_slice(&kn);
        v_all.extend_from_slice(&vn);
        let (tq, tk, tv) = (
            ctx.upload(&[q.len()], &q).unwrap(),
            ctx.upload(&[kn.len()], &kn).unwrap(),
            ctx.upload(&[vn.len()], &vn).unwrap(),
        );
        let scores = ctx.empty(&[tokens * h * a.kv_len], DType::F32).unwrap();
        let probs = ctx.empty(&[tokens * h * a.kv_len], DType::F32).unwrap();
        let out = ctx.empty(&[tokens * h * d], DType::F32).unwrap();
        let mut s = ctx.step("attention");
        copy_into(&mut s, &tk, &k_cache, pos0 * hkv * d).unwrap();
        copy_into(&mut s, &tv, &v_cache, pos0 * hkv * d).unwrap();
        attention(&mut s, &a, &tq, &k_cache, &v_cache, &scores, &probs, &out).unwrap();
        s.submit().unwrap();
        let got: Vec<f32> = ctx.read(&out).unwrap();
        let mut want = vec![0.0f32; got.len()];
        for t in 0..tokens {
            for hh in 0..h {
                let hk = hh / (h / hkv);
                let qv = &q[(t * h + hh) * d..][..d];
                let seen = pos0 + t + 1;
                let sc: Vec<f64> = (0..seen)
                    .map(|j| {
                        (0..d)
                            .map(|i| f64::from(qv[i]) * f64::from(k_all[(j * hkv + hk) * d + i]))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for i in 0..d {
                    let o: f64 = (0..seen)
                        .map(|j| (sc[j] - m).exp() / z * f64::from(v_all[(j * hkv + hk) * d + i]))
                        .sum();
                    want[(t * h + hh) * d + i] = o as f32;
                }
            }
        }
        let r = wring::kernels::check::compare(&got, &want, Tolerance::Nmse(1e-10));
        assert!(r.is_ok(), "step at {pos0}: {}", r.unwrap_err());
    }
}
