//! `matvec`: `y = W x`. Budget: NMSE 1e-9 (the twins add in the shaders' order; the subgroup variants'
//! different summation order stays far inside). Rows not a multiple of ROWS (4), k below, at and above the
//! workgroup size (64), SmolLM2's 576; the vec4 variants get k rounded up to a multiple of 4.

use half::f16;
use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::Matvec;
use wring::kernels::tensor::{matmul, matvec};
use wring::kernels::{Choice, DType, Kernel as _, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn matvec_case(v: &'static Variant, n: usize, k: usize, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let w = rng.vec(n * k, -1.0, 1.0);
    let x = rng.vec(k, -1.0, 1.0);
    let wg = v.define_u32("WG") as usize;
    let mut y = vec![0.0f32; n];
    let f16_in = v.define("ELEM") == Some("f16");
    let (w16, x16): (Vec<f16>, Vec<f16>) = (
        w.iter().map(|&x| f16::from_f32(x)).collect(),
        x.iter().map(|&v| f16::from_f32(v)).collect(),
    );
    match (f16_in, v.define("VEC4").is_some()) {
        (true, false) => matvec::cpu(&w16, &x16, &mut y, k, wg),
        (false, false) => matvec::cpu(&w, &x, &mut y, k, wg),
        (true, true) => matvec::cpu_vec4(&w16, &x16, &mut y, k, wg),
        (false, true) => matvec::cpu_vec4(&w, &x, &mut y, k, wg),
    }
    Case {
        name: format!("matvec variant={} n={n} k={k} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let (tw, tx) = if f16_in {
                (ctx.upload(&[n, k], &w16)?, ctx.upload(&[k], &x16)?)
            } else {
                (ctx.upload(&[n, k], &w)?, ctx.upload(&[k], &x)?)
            };
            step.run_with(
                &Matvec {
                    dtype: tw.dtype(),
                    n,
                    k,
                },
                Choice::Force(&v.name),
                &[("w", &tw), ("x", &tx), ("y", out)],
            )
        }),
        needs_f16: f16_in,
        needs_subgroup: v.requires.subgroup,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    // Rows not a multiple of ROWS (4), k below, at and above the workgroup size (64), SmolLM2's 576.
    // The vec4 variants get k rounded up to a multiple of 4; 256 = 4 * 64 fills one vec4 stride exactly.
    let shapes: [(usize, usize); 9] = [
        (1, 1),
        (3, 7),
        (4, 64),
        (5, 65),
        (33, 127),
        (576, 576),
        (192, 576),
        (7, 1536),
        (9, 256),
    ];
    for v in variants("matvec") {
        for (i, &(n, k)) in shapes.iter().enumerate() {
            let k = if v.define("VEC4").is_some() {
                k.next_multiple_of(4)
            } else {
                k
            };
            out.push(planned(v, move || matvec_case(v, n, k, 100 + i as u64)));
        }
    }
    out
}

#[test]
fn matvec_auto_choice_follows_k_and_adapter() {
    let gpu = wring::kernels::Caps {
        subgroup: true,
        ..wring::kernels::Caps::BASELINE
    };
    let cpu = wring::kernels::Caps {
        software: true,
        ..gpu
    };
    let name = |caps, k| {
        Matvec {
            dtype: DType::F32,
            n: 8,
            k,
        }
        .plan(&caps, Choice::Auto)
        .unwrap()
        .variant
        .name
        .to_string()
    };
    assert_eq!(name(gpu, 576), "f32_vec4_subgroup");
    assert_eq!(name(gpu, 577), "f32_subgroup");
    assert_eq!(name(cpu, 576), "f32_vec4_narrow");
    assert_eq!(name(wring::kernels::Caps::BASELINE, 576), "f32_vec4_shared");
    assert_eq!(name(wring::kernels::Caps::BASELINE, 5), "f32_shared");
    let e = Matvec {
        dtype: DType::F32,
        n: 8,
        k: 6,
    }
    .plan(&gpu, Choice::Force("f32_vec4_shared"))
    .unwrap_err();
    assert!(e.to_string().contains("k % 4"), "{e}");
}

/// The twins against plain definitions, so a twin cannot drift with its shader.
#[test]
fn reducing_twins_match_naive_sums() {
    let mut rng = Rng::new(5);
    let (n, k) = (3, 200);
    let w = rng.vec(n * k, -1.0, 1.0);
    let x = rng.vec(k, -1.0, 1.0);
    let mut y = vec![0.0; n];
    matvec::cpu(&w, &x, &mut y, k, 64);
    for r in 0..n {
        let naive: f64 = (0..k)
            .map(|i| f64::from(w[r * k + i]) * f64::from(x[i]))
            .sum();
        assert!((f64::from(y[r]) - naive).abs() < 1e-4);
    }
    let mut c = vec![0.0; n * n];
    matmul::cpu(&w, &w, &mut c, n, n, k);
    let naive: f64 = (0..k).map(|i| f64::from(w[i]) * f64::from(w[k + i])).sum();
    assert!((f64::from(c[1]) - naive).abs() < 1e-4);
    let mut s = vec![0.0; k];
    wring::kernels::tensor::softmax::cpu(&w[..k], &mut s, k, 1.0, 256);
    assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let mut rn = vec![0.0; k];
    wring::kernels::tensor::rmsnorm::cpu(&w[..k], &vec![1.0; k], &mut rn, k, 0.0, 256);
    let ms: f32 = rn.iter().map(|v| v * v).sum::<f32>() / k as f32;
    assert!((ms - 1.0).abs() < 1e-4);
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_matvec(n in 1usize..200, k in 1usize..700, vi in 0usize..20, seed in any::<u64>()) {
        let v = crate::kernels::pick(&variants("matvec"), vi);
        let k = if v.define("VEC4").is_some() { k.next_multiple_of(4) } else { k };
        let r = matvec_case(v, n, k, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
