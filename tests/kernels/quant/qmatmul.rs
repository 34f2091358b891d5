//! `qmatmul`: the tiled prefill product with W in a block format, dequantized into shared-memory tiles.
//! Budget: NMSE 1e-9.

use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::quant::Qmatmul;
use wring::kernels::quant::qmatmul;
use wring::kernels::{Choice, DType, Variant};
use wring::quant::BlockFormat;

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variant_format, variants};

fn qmatmul_case(v: &'static Variant, m: usize, n: usize, k: usize, seed: u64) -> Case<'static> {
    let f = variant_format(v);
    let mut rng = Rng::new(seed);
    let w = f
        .quantize_to_vec(&rng.vec(n * k, -0.08, 0.08))
        .expect("whole blocks");
    let a = rng.vec(m * k, -1.0, 1.0);
    let mut c = vec![0.0f32; m * n];
    qmatmul::cpu(f, &w, &a, &mut c, m, n, k);
    Case {
        name: format!("qmatmul variant={} m={m} n={n} k={k} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![m, n],
        expected: c,
        record: Box::new(move |ctx, step, out| {
            let tw = ctx.upload_blocks(&[n, k], f, &w)?;
            let ta = ctx.upload(&[m, k], &a)?;
            let unit = Qmatmul { format: f, m, n, k };
            step.run_with(
                &unit,
                Choice::Force(&v.name),
                &[("a", &ta), ("w", &tw), ("c", out)],
            )
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

/// 63/64/65 straddle the 64-wide tiles; k of one block and of several.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("qmatmul") {
        let bl = variant_format(v).block_len();
        // 63/64/65 straddle the 64-wide tiles; k of one block and of several.
        for (i, &(m, n, k)) in [
            (1, 1, bl),
            (63, 65, bl),
            (65, 64, 2 * bl),
            (17, 130, 3 * bl),
        ]
        .iter()
        .enumerate()
        {
            out.push(planned(v, move || qmatmul_case(v, m, n, k, i as u64)));
        }
    }
    out
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_qmatmul(m in 1usize..80, n in 1usize..80, blocks in 1usize..4, fi in 0usize..8, seed in any::<u64>()) {
        let f = BlockFormat::ALL[fi];
        let v = crate::kernels::variant("qmatmul", &format!("{}_4x4", DType::Block(f).name()));
        let r = qmatmul_case(v, m, n, blocks * f.block_len(), seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
