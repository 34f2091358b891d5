//! `rope`: rotary position embedding, llama.cpp's normal and NeoX pairings. Budget: NMSE 1e-7 (pow, sin
//! and cos of angles up to thousands of radians).

use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::rope;
use wring::kernels::tensor::{Rope, RopeMode};
use wring::kernels::{Choice, DType, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn rope_case(v: &'static Variant, r: Rope, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let x = rng.vec(r.tokens * r.n_heads * r.head_dim, -2.0, 2.0);
    let pos: Vec<i32> = (0..r.tokens).map(|t| (t * 37 % 2048) as i32).collect();
    let mut y = vec![0.0; x.len()];
    rope::cpu(&r, &x, &pos, &mut y);
    Case {
        name: format!("rope variant={} {r:?} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-7),
        out_dtype: DType::F32,
        out_shape: vec![r.tokens, r.n_heads, r.head_dim],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tx = ctx.upload(&[r.tokens, r.n_heads, r.head_dim], &x)?;
            let tp = ctx.upload(&[r.tokens], &pos)?;
            step.run_with(
                &r,
                Choice::Force(&v.name),
                &[("x", &tx), ("pos", &tp), ("y", out)],
            )
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

/// One pair, SmolLM2's heads, partial rotation, long sequences, and a head of 6 with 4 rotated.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("rope") {
        let mode = if v.name == "neox" {
            RopeMode::Neox
        } else {
            RopeMode::Normal
        };
        for (i, &(tokens, n_heads, head_dim, n_dims)) in [
            (1, 1, 2, 2),
            (3, 9, 64, 64),
            (5, 3, 64, 32),
            (17, 2, 128, 128),
            (2, 1, 6, 4),
        ]
        .iter()
        .enumerate()
        {
            let r = Rope {
                mode,
                tokens,
                n_heads,
                head_dim,
                n_dims,
                freq_base: 100_000.0,
                freq_scale: 1.0,
            };
            out.push(planned(v, move || rope_case(v, r, i as u64)));
        }
    }
    out
}

/// The twin against the textbook: llama.cpp's normal mode rotates (x[2i], x[2i+1]) by pos * base^(-2i/d)
/// and NeoX rotates (x[i], x[i + d/2]) by the same angle.
#[test]
fn rope_twin_matches_the_definition() {
    let (d, pos, base) = (8usize, 3i32, 10_000.0f64);
    let x: Vec<f32> = (0..d).map(|i| i as f32 + 1.0).collect();
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        let r = Rope {
            mode,
            tokens: 1,
            n_heads: 1,
            head_dim: d,
            n_dims: d,
            freq_base: base as f32,
            freq_scale: 1.0,
        };
        let mut y = vec![0.0; d];
        rope::cpu(&r, &x, &[pos], &mut y);
        for i in 0..d / 2 {
            let theta = f64::from(pos) * base.powf(-2.0 * i as f64 / d as f64);
            let (i0, i1) = if mode == RopeMode::Normal {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + d / 2)
            };
            let (x0, x1) = (f64::from(x[i0]), f64::from(x[i1]));
            let want0 = x0 * theta.cos() - x1 * theta.sin();
            let want1 = x0 * theta.sin() + x1 * theta.cos();
            assert!(
                (f64::from(y[i0]) - want0).abs() < 1e-4 && (f64::from(y[i1]) - want1).abs() < 1e-4,
                "{mode:?} pair {i}"
            );
        }
    }
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_rope(tokens in 1usize..9, n_heads in 1usize..5, half in 1usize..40, rot in 1usize..40, neox in any::<bool>(), seed in any::<u64>()) {
        let head_dim = 2 * half;
        let n_dims = 2 * rot.min(half);
        let mode = if neox { RopeMode::Neox } else { RopeMode::Normal };
        let v = crate::kernels::variant("rope", if neox { "neox" } else { "normal" });
        let r = Rope { mode, tokens, n_heads, head_dim, n_dims, freq_base: 10_000.0, freq_scale: 1.0 };
        let res = rope_case(v, r, seed).check();
        prop_assert!(res.is_ok(), "{}", res.unwrap_err());
    }
}
