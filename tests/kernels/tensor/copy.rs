//! `copy`: word copies. Budget: exact bits (nothing is rounded).

use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::tensor::CopyWords;
use wring::kernels::tensor::copy;
use wring::kernels::{Choice, DType, Kernel as _, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

fn copy_case(v: &'static Variant, words: usize, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let src: Vec<u32> = (0..words).map(|_| rng.next_u64() as u32).collect();
    let mut expected = vec![0u32; words];
    copy::cpu(&src, &mut expected);
    Case {
        name: format!("copy variant={} words={words} seed={seed}", v.name),
        tol: Tolerance::Exact,
        out_dtype: DType::U32,
        out_shape: vec![words],
        expected: expected.into_iter().map(f32::from_bits).collect(),
        record: Box::new(move |ctx, step, out| {
            let s = ctx.upload(&[words], &src)?;
            step.run_with(
                &CopyWords::new(words),
                Choice::Force(&v.name),
                &[("src", &s), ("dst", out)],
            )
        }),
        needs_f16: v.requires.f16,
        needs_subgroup: v.requires.subgroup,
    }
}

/// Lengths below, at and past the workgroup's reach, and past the 65,535-workgroup limit of one grid
/// dimension; the vec4 variant takes multiples of 4 words.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("copy") {
        let sizes: &[usize] = if v.name == "vec4" {
            &[4, 8, 1020, 1024, 4096, 65_540]
        } else {
            &[1, 3, 255, 256, 257, 1023, 1025, 65_537]
        };
        for &n in sizes {
            out.push(planned(v, move || copy_case(v, n, n as u64)));
        }
    }
    out
}

#[test]
fn copy_vec4_refuses_ragged_lengths() {
    let err = CopyWords::new(6)
        .plan(&wring::kernels::Caps::BASELINE, Choice::Force("vec4"))
        .unwrap_err();
    assert!(err.to_string().contains("multiple of 4"), "{err}");
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_copy(n in 1usize..5000, seed in any::<u64>()) {
        let r = copy_case(crate::kernels::variant("copy", "u32"), n, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
