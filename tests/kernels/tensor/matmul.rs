//! `matmul`: `c = a b^T`. Budget: NMSE 1e-9. The twins add in the shaders' order, so only FMA
//! contraction remains: about 1e-13 in practice. 63/64/65 straddle the 4x4 variant's 64-wide tiles and the
//! automatic switch; 15/16/17 the k tile; the direct variants need k % 4 == 0.

use half::f16;
use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::Matmul;
use wring::kernels::tensor::matmul;
use wring::kernels::{Choice, DType, Kernel as _, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn matmul_case(v: &'static Variant, m: usize, n: usize, k: usize, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(n * k, -1.0, 1.0);
    let mut c = vec![0.0f32; m * n];
    let f16_in = v.define("ELEM") == Some("f16");
    let (a16, b16): (Vec<f16>, Vec<f16>) = (
        a.iter().map(|&x| f16::from_f32(x)).collect(),
        b.iter().map(|&x| f16::from_f32(x)).collect(),
    );
    match (f16_in, v.define("DIRECT").is_some()) {
        (true, false) => matmul::cpu(&a16, &b16, &mut c, m, n, k),
        (false, false) => matmul::cpu(&a, &b, &mut c, m, n, k),
        (true, true) => matmul::cpu_direct(&a16, &b16, &mut c, m, n, k),
        (false, true) => matmul::cpu_direct(&a, &b, &mut c, m, n, k),
    }
    Case {
        name: format!("matmul variant={} m={m} n={n} k={k} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![m, n],
        expected: c,
        record: Box::new(move |ctx, step, out| {
            let (ta, tb) = if f16_in {
                (ctx.upload(&[m, k], &a16)?, ctx.upload(&[n, k], &b16)?)
            } else {
                (ctx.upload(&[m, k], &a)?, ctx.upload(&[n, k], &b)?)
            };
            step.run_with(
                &Matmul {
                    dtype: ta.dtype(),
                    m,
                    n,
                    k,
                },
                Choice::Force(&v.name),
                &[("a", &ta), ("b", &tb), ("c", out)],
            )
        }),
        needs_f16: f16_in,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    // 63/64/65 straddle the 4x4 variant's 64-wide tiles and the automatic switch; 15/16/17 the k tile.
    // The direct variants need k % 4 == 0, so they get k rounded up to a multiple of 4.
    let shapes: [(usize, usize, usize); 9] = [
        (1, 1, 1),
        (1, 5, 17),
        (16, 16, 16),
        (17, 15, 33),
        (63, 65, 64),
        (64, 64, 15),
        (65, 130, 47),
        (128, 64, 576),
        (33, 31, 4),
    ];
    for v in variants("matmul") {
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            let k = if v.define("DIRECT").is_some() {
                k.next_multiple_of(4)
            } else {
                k
            };
            out.push(planned(v, move || matmul_case(v, m, n, k, i as u64)));
        }
    }
    out
}

#[test]
fn matmul_auto_switches_at_64() {
    let caps = wring::kernels::Caps::BASELINE;
    let mm = |m, n, k| Matmul {
        dtype: DType::F32,
        m,
        n,
        k,
    };
    assert_eq!(
        mm(63, 200, 8)
            .plan(&caps, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "f32_1x1"
    );
    assert_eq!(
        mm(64, 64, 8)
            .plan(&caps, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "f32_4x4"
    );
    let cpu = wring::kernels::Caps {
        software: true,
        ..caps
    };
    assert_eq!(
        mm(64, 64, 8).plan(&cpu, Choice::Auto).unwrap().variant.name,
        "f32_direct"
    );
    assert_eq!(
        mm(64, 64, 9).plan(&cpu, Choice::Auto).unwrap().variant.name,
        "f32_4x4",
        "k % 4 != 0"
    );
    let e = mm(8, 8, 6)
        .plan(&caps, Choice::Force("f32_direct"))
        .unwrap_err();
    assert!(e.to_string().contains("k % 4"), "{e}");
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_matmul(m in 1usize..90, n in 1usize..90, k in 1usize..70, vi in 0usize..12, seed in any::<u64>()) {
        let v = crate::kernels::pick(&variants("matmul"), vi);
        let k = if v.define("DIRECT").is_some() { k.next_multiple_of(4) } else { k };
        let r = matmul_case(v, m, n, k, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
