//! `rope_qkv`: RoPE on queries and keys and the KV-cache append in one launch. The output checked is q_out
//! followed by both whole caches (other positions hold random values that must survive); all three are
//! sentinel-guarded. Budget: NMSE 1e-7, as rope; the `_ext` variants (biases, q/k RMSNorm, frequency
//! factors, a scaled rotation) the same: the norm's sum of squares is over at most 128 values in f32.

use wring::kernels::Strided;
use wring::kernels::tensor::rope;
use wring::kernels::tensor::rope::QkvExtras;
use wring::kernels::tensor::{Rope, RopeMode, RopeQkv};

use crate::harness::{copy_into, guarded, guarded_upload};
use wring::kernels::check::Tolerance;
use wring::kernels::{Choice, DType, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// rope_qkv: queries rotated into q_out, keys rotated and values copied into the caches at cache_pos, read
/// from one fused [token][q | k | v] tensor or from three tensors. The output checked is q_out followed by
/// both whole caches, whose other positions hold random values that must survive.
fn rope_qkv_case(
    v: &'static Variant,
    r: RopeQkv,
    fused: bool,
    positions: usize,
    seed: u64,
) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let (t, hd) = (r.rope.tokens, r.rope.head_dim);
    let (qw, kv) = (r.rope.n_heads * hd, r.n_kv_heads * hd);
    let row = qw + 2 * kv;
    let qkv = rng.vec(t * row, -2.0, 2.0);
    let (q, k, vv) = if fused {
        (qkv.clone(), qkv.clone(), qkv.clone())
    } else {
        let part = |off: usize, w: usize| -> Vec<f32> {
            (0..t)
                .flat_map(|i| qkv[i * row + off..][..w].to_vec())
                .collect()
        };
        (part(0, qw), part(qw, kv), part(qw + kv, kv))
    };
    let pos: Vec<i32> = (0..t).map(|i| (r.cache_pos + i) as i32).collect();
    let (kc0, vc0) = (
        rng.vec(positions * kv, -1.0, 1.0),
        rng.vec(positions * kv, -1.0, 1.0),
    );
    // Extras: biases, norm weights and factors of the sizes real models have (factors 1-8 as Llama 3.1's).
    let extra = match r.extras {
        None => Vec::new(),
        Some(_) => {
            let hd = r.rope.head_dim;
            let half = r.rope.n_dims / 2;
            r.extra_vector(
                [
                    &rng.vec(qw, -0.5, 0.5),
                    &rng.vec(kv, -0.5, 0.5),
                    &rng.vec(kv, -0.5, 0.5),
                ],
                [&rng.vec(hd, 0.5, 1.5), &rng.vec(hd, 0.5, 1.5)],
                &rng.vec(half, 1.0, 8.0),
            )
            .expect("the parts have the case's sizes")
        }
    };
    let (mut q_out, mut kc, mut vc) = (vec![0.0; t * qw], kc0.clone(), vc0.clone());
    rope::cpu_qkv(&r, &q, &k, &vv, &pos, &extra, &mut q_out, &mut kc, &mut vc);
    let expected = [q_out, kc, vc].concat();
    Case {
        name: format!(
            "rope_qkv variant={} fused={fused} positions={positions} {r:?} seed={seed}",
            v.name
        ),
        tol: Tolerance::Nmse(1e-7),
        out_dtype: DType::F32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let (tq, tk, tv) = if fused {
                let x = ctx.upload(&[t, row], &qkv)?;
                (x.clone(), x.clone(), x)
            } else {
                (
                    ctx.upload(&[t, qw], &q)?,
                    ctx.upload(&[t, kv], &k)?,
                    ctx.upload(&[t, kv], &vv)?,
                )
            };
            let tp = ctx.upload(&[t], &pos)?;
            let tx = match extra.is_empty() {
                true => None,
                false => Some(ctx.upload(&[extra.len()], &extra)?),
            };
            let tq_out = guarded(ctx, &[t * qw], DType::F32)?;
            let (tkc, tvc) = (
                guarded_upload(ctx, &[positions * kv], &kc0)?,
                guarded_upload(ctx, &[positions * kv], &vc0)?,
            );
            let mut operands = vec![
                ("q", &tq),
                ("k", &tk),
                ("v", &tv),
                ("pos", &tp),
                ("q_out", &tq_out),
                ("k_cache", &tkc),
                ("v_cache", &tvc),
            ];
            operands.extend(tx.as_ref().map(|x| ("extra", x)));
            step.run_with(&r, Choice::Force(&v.name), &operands)?;
            copy_into(step, &tq_out, out, 0)?;
            copy_into(step, &tkc, out, t * qw)?;
            copy_into(step, &tvc, out, t * qw + positions * kv)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("rope_qkv") {
        let mode = if v.name.starts_with("neox") {
            RopeMode::Neox
        } else {
            RopeMode::Normal
        };
        // The extended glue with and without the q/k norm, its rotation scaled as Phi-3's LongRoPE does.
        let extras: Vec<Option<QkvExtras>> = if v.name.ends_with("_ext") {
            vec![
                Some(QkvExtras::plain()),
                Some(QkvExtras {
                    qk_norm: true,
                    norm_eps: 1e-6,
                    mscale: 1.19,
                }),
            ]
        } else {
            vec![None]
        };
        // (tokens, heads, kv heads, head_dim, n_dims, cache_pos, positions): SmolLM2's decode and prefill
        // shapes, partial rotation, and one head of two dimensions.
        for (i, &(tokens, n_heads, n_kv, head_dim, n_dims, cache_pos, positions)) in [
            (1, 9, 3, 64, 64, 7, 9),
            (5, 9, 3, 64, 64, 0, 5),
            (3, 4, 2, 64, 32, 2, 8),
            (1, 1, 1, 2, 2, 0, 1),
        ]
        .iter()
        .enumerate()
        {
            let rope = Rope {
                mode,
                tokens,
                n_heads,
                head_dim,
                n_dims,
                freq_base: 100_000.0,
                freq_scale: 1.0,
            };
            for (fused, extras) in [false, true]
                .into_iter()
                .flat_map(|f| extras.iter().map(move |&x| (f, x)))
            {
                let row = (n_heads + 2 * n_kv) * head_dim;
                let (q, k, vv) = if fused {
                    (
                        Strided {
                            stride: row,
                            offset: 0,
                        },
                        Strided {
                            stride: row,
                            offset: n_heads * head_dim,
                        },
                        Strided {
                            stride: row,
                            offset: (n_heads + n_kv) * head_dim,
                        },
                    )
                } else {
                    (
                        Strided {
                            stride: n_heads * head_dim,
                            offset: 0,
                        },
                        Strided {
                            stride: n_kv * head_dim,
                            offset: 0,
                        },
                        Strided {
                            stride: n_kv * head_dim,
                            offset: 0,
                        },
                    )
                };
                let r = RopeQkv {
                    rope,
                    n_kv_heads: n_kv,
                    cache_pos,
                    q,
                    k,
                    v: vv,
                    extras,
                };
                out.push(planned(v, move || {
                    rope_qkv_case(v, r, fused, positions, i as u64)
                }));
            }
        }
    }
    out
}

/// rope_qkv's queries and keys agree with the plain rope kernel's twin.
#[test]
fn rope_qkv_twin_agrees_with_rope() {
    let rope = Rope {
        mode: RopeMode::Neox,
        tokens: 2,
        n_heads: 2,
        head_dim: 8,
        n_dims: 8,
        freq_base: 10_000.0,
        freq_scale: 1.0,
    };
    let mut rng = Rng::new(3);
    let (q, k, v) = (
        rng.vec(32, -1.0, 1.0),
        rng.vec(16, -1.0, 1.0),
        rng.vec(16, -1.0, 1.0),
    );
    let pos = [4, 5];
    let dense = |w| Strided {
        stride: w,
        offset: 0,
    };
    let r = RopeQkv {
        rope,
        n_kv_heads: 1,
        cache_pos: 4,
        q: dense(16),
        k: dense(8),
        v: dense(8),
        extras: None,
    };
    let (mut q_out, mut kc, mut vc) = (vec![0.0; 32], vec![0.0; 48], vec![0.0; 48]);
    rope::cpu_qkv(&r, &q, &k, &v, &pos, &[], &mut q_out, &mut kc, &mut vc);
    let mut want_q = vec![0.0; 32];
    rope::cpu(&rope, &q, &pos, &mut want_q);
    let mut want_k = vec![0.0; 16];
    rope::cpu(&Rope { n_heads: 1, ..rope }, &k, &pos, &mut want_k);
    assert_eq!(q_out, want_q);
    assert_eq!(&kc[32..], &want_k[..]);
    assert_eq!(&vc[32..], &v[..]);
    assert!(
        kc[..32].iter().chain(&vc[..32]).all(|&x| x == 0.0),
        "positions before cache_pos are untouched"
    );
}

/// The extended twin with zero biases, unit factors, no norm and an unscaled rotation is the plain twin;
/// with the norm, a head of equal values becomes its norm weights before the rotation (checked at
/// position 0, where nothing turns).
#[test]
fn rope_qkv_extras_twin() {
    let rope = Rope {
        mode: RopeMode::Neox,
        tokens: 2,
        n_heads: 2,
        head_dim: 8,
        n_dims: 8,
        freq_base: 10_000.0,
        freq_scale: 1.0,
    };
    let dense = |w| Strided {
        stride: w,
        offset: 0,
    };
    let plain = RopeQkv {
        rope,
        n_kv_heads: 1,
        cache_pos: 0,
        q: dense(16),
        k: dense(8),
        v: dense(8),
        extras: None,
    };
    let ext = RopeQkv {
        extras: Some(QkvExtras::plain()),
        ..plain
    };
    let mut rng = Rng::new(5);
    let (q, k, v) = (
        rng.vec(32, -1.0, 1.0),
        rng.vec(16, -1.0, 1.0),
        rng.vec(16, -1.0, 1.0),
    );
    let pos = [3, 9];
    let run = |r: &RopeQkv, extra: &[f32], q: &[f32], k: &[f32]| {
        let (mut q_out, mut kc, mut vc) = (vec![0.0; 32], vec![0.0; 16], vec![0.0; 16]);
        rope::cpu_qkv(r, q, k, &v, &pos, extra, &mut q_out, &mut kc, &mut vc);
        (q_out, kc, vc)
    };
    let none = ext.extra_vector([&[], &[], &[]], [&[], &[]], &[]).unwrap();
    assert_eq!(run(&plain, &[], &q, &k), run(&ext, &none, &q, &k));
    let normed = RopeQkv {
        extras: Some(QkvExtras {
            qk_norm: true,
            norm_eps: 0.0,
            mscale: 1.0,
        }),
        cache_pos: 0,
        ..plain
    };
    let w: Vec<f32> = (1..=8).map(|i| i as f32).collect();
    let extra = normed.extra_vector([&[], &[], &[]], [&w, &w], &[]).unwrap();
    let mut single = normed;
    single.rope.tokens = 1;
    let (mut q_out, mut kc, mut vc) = (vec![0.0; 16], vec![0.0; 8], vec![0.0; 8]);
    rope::cpu_qkv(
        &single,
        &[-3.0; 16],
        &[0.5; 8],
        &[0.0; 8],
        &[0],
        &extra,
        &mut q_out,
        &mut kc,
        &mut vc,
    );
    let neg: Vec<f32> = w.iter().map(|x| -x).collect();
    assert!(
        q_out[..8]
            .iter()
            .zip(&neg)
            .all(|(a, b)| (a - b).abs() < 1e-5),
        "{q_out:?}"
    );
    assert!(
        kc.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-5),
        "{kc:?}"
    );
    assert!(
        ext.extra_vector([&[1.0], &[], &[]], [&[], &[]], &[])
            .is_err(),
        "a part of the wrong size is refused"
    );
}
