//! `qmatvec_q8`: the decode product with 8-bit activations and integer dot products. Budget against its
//! twin: NMSE 1e-10 (the 32 products of a unit are summed exactly in i32 on both sides; only the scaling
//! and the sums over units are f32). The twin's own error against the f32-activation product (the
//! activations' 8-bit rounding) is bounded separately below: NMSE under 2e-4 on unit-scale inputs, the
//! order of ggml test-backend-ops' 5e-4 for its Q8_1 matrix products. Shapes: one block, three, SmolLM2's
//! 576 and 1536; 1 row, 67 (two workgroups of the b1 lanes variants, ending inside a lane) and 131 (two
//! of the b8 lanes variants' 128); batches of
//! 1 and 2 for the b1 variants (lanes, SWAR and the GPU forms), 3, 8 and 21 for the 8-row tiles; 300 rows for the PAIRS variants (two of
//! their 256-row workgroups); and for every variant, weights and activations at the extremes of their
//! codes (the sums the PAIRS variants pack two to a word reach their bound there).

use wring::kernels::check::Tolerance;
use wring::kernels::quant::{QmatvecQ8, qmatvec, qmatvec_q8, quantize_q8};
use wring::kernels::{Choice, DType, Variant};
use wring::quant::BlockFormat;

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, twin_lanes, variant_format, variants};

fn inputs(
    f: BlockFormat,
    n: usize,
    k: usize,
    batch: usize,
    seed: u64,
) -> (Vec<u8>, Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let w = f
        .quantize_to_vec(&rng.vec(n * k, -0.08, 0.08))
        .expect("whole blocks");
    let x = rng.vec(batch * k, -1.0, 1.0);
    let mut xq = vec![0u32; batch * k / 32 * quantize_q8::UNIT_WORDS];
    quantize_q8::cpu(&x, &mut xq);
    (w, x, xq)
}

/// Weights and activations at the extremes of their codes: every 4-bit weight 15 (Q8_0 bytes -128 and 127),
/// activation rows of constant sign so that every code is +127 or -127, the signs mixed so that a pair of
/// rows packed together (the PAIRS variants) holds both, and the odd rows random. A unit's 16-value sums
/// then reach 16 * 15 * 127 = 30480, the bound the PAIRS and SWAR variants' packing relies on.
fn extreme_inputs(f: BlockFormat, n: usize, k: usize, batch: usize) -> (Vec<u8>, Vec<u32>) {
    let mut w = vec![0u8; f.bytes_for(n * k).expect("whole blocks")];
    let one = half::f16::from_f32(0.01).to_le_bytes();
    for (b, block) in w.chunks_exact_mut(f.block_bytes()).enumerate() {
        // Q8_0 alternates -128 and +127: the SWAR variants offset each byte by 128, so the two ends give
        // nibbles of 0 and of 15.
        let q8 = if b % 2 == 0 { 0x80 } else { 0x7F };
        block.fill(if f == BlockFormat::Q8_0 { q8 } else { 0xFF });
        block[..2].copy_from_slice(&one);
        if f == BlockFormat::Q4_1 {
            block[2..4].copy_from_slice(&half::f16::from_f32(-0.5).to_le_bytes());
        }
    }
    let mut rng = Rng::new(7);
    let mut x = Vec::with_capacity(batch * k);
    for t in 0..batch {
        match t % 4 {
            0 => x.extend(std::iter::repeat_n(1.0, k)),
            1 | 2 => x.extend(std::iter::repeat_n(-2.0, k)),
            _ => x.extend(rng.vec(k, -1.0, 1.0)),
        }
    }
    let mut xq = vec![0u32; batch * k / 32 * quantize_q8::UNIT_WORDS];
    quantize_q8::cpu(&x, &mut xq);
    (w, xq)
}

fn case(v: &'static Variant, n: usize, k: usize, batch: usize, seed: u64) -> Case<'static> {
    let f = variant_format(v);
    let (w, xq) = if seed == EXTREME {
        extreme_inputs(f, n, k, batch)
    } else {
        let (w, _, xq) = inputs(f, n, k, batch, seed);
        (w, xq)
    };
    let mut y = vec![0f32; batch * n];
    qmatvec_q8::cpu(f, &w, &xq, &mut y, n, k, batch, twin_lanes(v));
    Case {
        name: format!(
            "qmatvec_q8 variant={} n={n} k={k} batch={batch} seed={seed}",
            v.name
        ),
        tol: Tolerance::Nmse(1e-10),
        out_dtype: DType::F32,
        out_shape: vec![batch, n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tw = ctx.upload_blocks(&[n, k], f, &w)?;
            let tx = ctx.upload(&[xq.len()], &xq)?;
            step.run_with(
                &QmatvecQ8 {
                    format: f,
                    n,
                    k,
                    batch,
                },
                Choice::Force(&v.name),
                &[("w", &tw), ("x", &tx), ("y", out)],
            )
        }),
        needs_f16: v.requires.f16,
        needs_subgroup: v.requires.subgroup,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("qmatvec_q8") {
        let bl = variant_format(v).block_len();
        // Decode variants: one row and two (GPU variants take batches through the grid); the 8-row tiles:
        // within one tile, exactly one, and a ragged last one.
        let batches: &[usize] = if v.define_u32("BATCH") == 1 {
            &[1, 2]
        } else {
            &[3, 8, 21]
        };
        // Two workgroups of every lanes variant: 67 for the b1 tiles of 64 rows, 131 for the b8 lanes
        // variants' 128, 300 for the PAIRS variants' 256.
        let rows: &[usize] = if v.define("PAIRS").is_some() {
            &[1, 67, 131, 300]
        } else {
            &[1, 67, 131]
        };
        for (i, k) in [bl, 3 * bl, 576, 1536].into_iter().enumerate() {
            for &n in rows {
                for &batch in batches {
                    let seed = (i * 100 + n + 1000 * batch) as u64;
                    out.push(planned(v, move || case(v, n, k, batch, seed)));
                }
            }
        }
        let batch = batches[batches.len() - 1];
        out.push(planned(v, move || case(v, 67, 576, batch, EXTREME)));
    }
    out
}

/// The seed that asks [`case`] for [`extreme_inputs`].
const EXTREME: u64 = u64::MAX;

/// The price of 8-bit activations: the integer-dot twin against the f32-activation twin on the same
/// weights, for each format, at SmolLM2's widths.
#[test]
fn q8_activations_stay_within_their_budget() {
    for f in qmatvec_q8::FORMATS {
        for k in [576, 1536] {
            let n = 64;
            let (w, x, xq) = inputs(f, n, k, 1, k as u64);
            let (mut exact, mut q8) = (vec![0f32; n], vec![0f32; n]);
            qmatvec::cpu(f, &w, &x, &mut exact, n, k, 1, 1);
            qmatvec_q8::cpu(f, &w, &xq, &mut q8, n, k, 1, 1);
            let num: f64 = exact
                .iter()
                .zip(&q8)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let den: f64 = exact.iter().map(|a| f64::from(*a).powi(2)).sum();
            let nmse = num / den;
            assert!(
                nmse < 2e-4 && nmse > 0.0,
                "{f} k={k}: NMSE {nmse:e} of 8-bit activations"
            );
        }
    }
}

#[test]
fn qmatvec_q8_refuses_other_formats() {
    use wring::kernels::Kernel as _;
    let e = QmatvecQ8 {
        format: BlockFormat::Q4_K,
        n: 4,
        k: 256,
        batch: 1,
    }
    .plan(&wring::kernels::Caps::BASELINE, Choice::Auto)
    .unwrap_err();
    assert!(e.to_string().contains("no integer-dot product"), "{e}");
}

/// The planner's choice per adapter: on a CPU adapter one activation row of 4-bit weights takes the SWAR
/// variants (two products per 32-bit multiply), Q8_0 the `lanes` variant and a batch the PAIRS tiles; a
/// GPU takes a workgroup per row.
#[test]
fn qmatvec_q8_plans_swar_for_one_row_of_4_bit_weights_on_cpu_adapters() {
    use wring::kernels::{Caps, Kernel as _};
    let (lavapipe, gpu) = crate::kernels::planner_caps();
    let name = |format, batch, caps: &Caps| {
        QmatvecQ8 {
            format,
            n: 576,
            k: 576,
            batch,
        }
        .plan(caps, Choice::Auto)
        .unwrap()
        .variant
        .name
        .to_string()
    };
    assert_eq!(name(BlockFormat::Q4_0, 1, &lavapipe), "q4_0_b1_swar");
    assert_eq!(name(BlockFormat::Q4_1, 1, &lavapipe), "q4_1_b1_swar");
    assert_eq!(name(BlockFormat::Q8_0, 1, &lavapipe), "q8_0_b1_lanes");
    assert_eq!(name(BlockFormat::Q4_1, 64, &lavapipe), "q4_1_b8_pairs");
    assert_eq!(name(BlockFormat::Q4_1, 1, &gpu), "q4_1_b1_subgroup");
}
