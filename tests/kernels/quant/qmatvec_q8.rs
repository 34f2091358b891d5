//! `qmatvec_q8`: the decode product with 8-bit activations and integer dot products. Budget against its
//! twin: NMSE 1e-10 (the 32 products of a unit are summed exactly in i32 on both sides; only the scaling
//! and the sums over units are f32). The twin's own error against the f32-activation product (the
//! activations' 8-bit rounding) is bounded separately below: NMSE under 2e-4 on unit-scale inputs, the
//! order of ggml test-backend-ops' 5e-4 for its Q8_1 matrix products. Shapes: one block, three, SmolLM2's
//! 576 and 1536; 1 row, 67 (two workgroups of the b1 lanes variants, ending inside a lane) and 131 (two
//! of the b8 lanes variants' 128); batches of
//! 1 and 2 for the b1 variants (lanes, SWAR and the GPU forms), 3, 8 and 21 for the tiles of 4 and 8 rows; 300 rows for the PAIRS variants (two of
//! their 256-row workgroups); and for every variant, weights and activations at the extremes of their
//! codes (the sums the PAIRS variants pack two to a word reach their bound there).

use wring::kernels::check::Tolerance;
use wring::kernels::quant::{
    QmatvecQ8, QmatvecQ8Residual, QmatvecQ8Scaled, QmatvecQ8SwiGlu, qmatvec, qmatvec_q8,
    quantize_q8,
};
use wring::kernels::{Choice, DType, Variant};
use wring::quant::BlockFormat;

use crate::harness::{Case, Rng, guarded};
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
        if v.define("SWIGLU").is_some() {
            out.extend(swiglu_cases(v));
            continue;
        }
        if v.define("RESIDUAL").is_some() || v.define("SCALED").is_some() {
            out.extend(split_norm_cases(v));
            continue;
        }
        let bl = variant_format(v).block_len();
        // Decode variants: one row and two (GPU variants take batches through the grid); the tiles of 4 and 8
        // rows: within one tile, a whole number of them (8), and a ragged last one.
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
        // More output rows than one grid dimension holds at one row per workgroup (a 151,936-token head):
        // the row groups spill from x into z (plan::grid_rows). The lanes variants' 64 rows a workgroup
        // never spill; a Q8_0 head is the common case.
        if v.define_u32("BATCH") == 1
            && !v.name.contains("lanes")
            && variant_format(v) == BlockFormat::Q8_0
        {
            out.push(planned(v, move || case(v, 65_600, bl, 1, 7)));
        }
    }
    out
}

/// What a split norm's case checks: the scaled product's y, or one of the residual half's three outputs
/// (the others still written through guarded buffers).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Checks {
    Y,
    Sum,
    Units,
    Squares,
}

/// A split norm's case (the `_res` and `_scaled` variants, one activation row): n = 32 (one unit, part of
/// one workgroup), 96 (a workgroup and a half's units, the last workgroup's rows clamped) and SmolLM2's
/// 576 and 1536 rows, over k of one block, 576 and 1536. Budgets: y and s NMSE 1e-10 as the product's;
/// the units as quantize_q8's budget for the norm's units (Q8Units 1e-5); the sums of squares NMSE 1e-9
/// (a vec4 dot product's order against the twin's sum in order).
fn split_norm_cases(v: &'static Variant) -> Vec<Planned> {
    let scaled = v.define("SCALED").is_some();
    let bl = variant_format(v).block_len();
    let mut out = Vec::new();
    for (i, (n, k)) in [(32, bl), (96, 576), (576, 1536), (1536, 576)]
        .into_iter()
        .enumerate()
    {
        let seed = 7000 + i as u64;
        if scaled {
            out.push(planned(v, move || {
                split_norm_case(v, n, k, seed, Checks::Y)
            }));
        } else {
            for checks in [Checks::Sum, Checks::Units, Checks::Squares] {
                out.push(planned(v, move || split_norm_case(v, n, k, seed, checks)));
            }
        }
    }
    out
}

fn split_norm_case(
    v: &'static Variant,
    n: usize,
    k: usize,
    seed: u64,
    checks: Checks,
) -> Case<'static> {
    let f = variant_format(v);
    let (w, _, xq) = inputs(f, n, k, 1, seed);
    let mut rng = Rng::new(seed + 1);
    let (res, nw) = (rng.vec(n, -2.0, 2.0), rng.vec(n, 0.5, 1.5));
    // The scaled half reads sums of squares as the residual half writes them: k / 32 of them, positive.
    let ss_in = rng.vec(k / 32, 0.5, 40.0);
    let eps = 1e-5;
    let product = QmatvecQ8 {
        format: f,
        n,
        k,
        batch: 1,
    };
    let words = n / 32 * quantize_q8::UNIT_WORDS;
    let (tol, out_dtype, out_shape, expected) = if checks == Checks::Y {
        let mut y = vec![0f32; n];
        qmatvec_q8::cpu_scaled(f, &w, &xq, &ss_in, eps, &mut y, n, k);
        (Tolerance::Nmse(1e-10), DType::F32, vec![1, n], y)
    } else {
        let (mut s, mut nq, mut ss) = (vec![0f32; n], vec![0u32; words], vec![0f32; n / 32]);
        qmatvec_q8::cpu_residual(f, &w, &xq, &res, &nw, &mut s, &mut nq, &mut ss, n, k);
        match checks {
            Checks::Sum => (Tolerance::Nmse(1e-10), DType::F32, vec![n], s),
            Checks::Units => {
                let units = nq.into_iter().map(f32::from_bits).collect();
                (Tolerance::Q8Units(1e-5), DType::U32, vec![words], units)
            }
            _ => (Tolerance::Nmse(1e-9), DType::F32, vec![n / 32], ss),
        }
    };
    Case {
        name: format!(
            "qmatvec_q8 variant={} n={n} k={k} seed={seed} checks={checks:?}",
            v.name
        ),
        tol,
        out_dtype,
        out_shape,
        expected,
        record: Box::new(move |ctx, step, out| {
            let tw = ctx.upload_blocks(&[n, k], f, &w)?;
            let tx = ctx.upload(&[xq.len()], &xq)?;
            let force = Choice::Force(&v.name);
            if checks == Checks::Y {
                let tss = ctx.upload(&[ss_in.len()], &ss_in)?;
                let unit = QmatvecQ8Scaled { product, eps };
                let ops = [("w", &tw), ("x", &tx), ("ss_in", &tss), ("y", out)];
                return step.run_with(&unit, force, &ops);
            }
            let (tr, tn) = (ctx.upload(&[n], &res)?, ctx.upload(&[n], &nw)?);
            // The outputs not checked in this case are still written through guarded buffers.
            let pick = |c: Checks, shape: &[usize], dtype: DType| match c == checks {
                true => Ok(out.clone()),
                false => guarded(ctx, shape, dtype),
            };
            let ts = pick(Checks::Sum, &[n], DType::F32)?;
            let tq = pick(Checks::Units, &[words], DType::U32)?;
            let tss = pick(Checks::Squares, &[n / 32], DType::F32)?;
            let ops = [
                ("w", &tw),
                ("x", &tx),
                ("res", &tr),
                ("nw", &tn),
                ("s", &ts),
                ("nq", &tq),
                ("ss", &tss),
            ];
            step.run_with(&QmatvecQ8Residual(product), force, &ops)
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
}

/// The SwiGLU epilogue's cases (the `_swiglu` and `_scaled_swiglu` variants, one activation row): stacked
/// gate/up matrices of one output unit (n = 64, one workgroup), three, and SmolLM2's 2 x 1536 rows, over k
/// of one block and 576. Budget: the units as quantize_q8's after silu_mul (Q8Units 1e-5; the device's
/// exp may differ from the twin's in the last ulp, enough to move a code at a half step).
fn swiglu_cases(v: &'static Variant) -> Vec<Planned> {
    let bl = variant_format(v).block_len();
    let scaled = v.define("SCALED").is_some();
    [(64, bl), (192, 576), (3072, 576)]
        .into_iter()
        .enumerate()
        .map(|(i, (n, k))| planned(v, move || swiglu_case(v, n, k, 8000 + i as u64, scaled)))
        .collect()
}

fn swiglu_case(v: &'static Variant, n: usize, k: usize, seed: u64, scaled: bool) -> Case<'static> {
    let f = variant_format(v);
    let (w, _, xq) = inputs(f, n, k, 1, seed);
    let ss_in = Rng::new(seed + 1).vec(k / 32, 0.5, 40.0);
    let eps = scaled.then_some(1e-5);
    let words = n / 64 * quantize_q8::UNIT_WORDS;
    let mut nq = vec![0u32; words];
    let split = eps.map(|e| (ss_in.as_slice(), e));
    qmatvec_q8::cpu_swiglu(f, &w, &xq, split, &mut nq, n, k);
    Case {
        name: format!("qmatvec_q8 variant={} n={n} k={k} seed={seed}", v.name),
        tol: Tolerance::Q8Units(1e-5),
        out_dtype: DType::U32,
        out_shape: vec![words],
        expected: nq.into_iter().map(f32::from_bits).collect(),
        record: Box::new(move |ctx, step, out| {
            let tw = ctx.upload_blocks(&[n, k], f, &w)?;
            let tx = ctx.upload(&[xq.len()], &xq)?;
            let tss = ctx.upload(&[ss_in.len()], &ss_in)?;
            let product = QmatvecQ8 {
                format: f,
                n,
                k,
                batch: 1,
            };
            let unit = QmatvecQ8SwiGlu { product, eps };
            let mut ops = vec![("w", &tw), ("x", &tx), ("nq", out)];
            if scaled {
                ops.push(("ss_in", &tss));
            }
            step.run_with(&unit, Choice::Force(&v.name), &ops)
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
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
    // Steps of 2-4 rows take tiles of 4, 5 and more tiles of 8.
    assert_eq!(name(BlockFormat::Q4_1, 2, &lavapipe), "q4_1_b4_pairs");
    assert_eq!(name(BlockFormat::Q8_0, 4, &lavapipe), "q8_0_b4_pairs");
    assert_eq!(name(BlockFormat::Q4_1, 5, &lavapipe), "q4_1_b8_pairs");
    assert_eq!(name(BlockFormat::Q4_1, 1, &gpu), "q4_1_b1_subgroup");
}

/// A split norm's halves: on a CPU adapter the SWAR form for 4-bit weights and the lanes form for Q8_0;
/// a GPU (a workgroup per row of W) is refused them unless a variant is forced, as are a batch, an
/// output of partial units, subgroups narrower than a unit's four lanes, and the plain product forced
/// onto a half's variant.
#[test]
fn split_norm_halves_plan_on_cpu_adapters_only() {
    use wring::kernels::{Caps, Kernel as _};
    let (lavapipe, gpu) = crate::kernels::planner_caps();
    let product = |format, n, batch| QmatvecQ8 {
        format,
        n,
        k: 576,
        batch,
    };
    let res = |format, n, batch, caps: &Caps| {
        QmatvecQ8Residual(product(format, n, batch)).plan(caps, Choice::Auto)
    };
    let scaled = |format, caps: &Caps| {
        QmatvecQ8Scaled {
            product: product(format, 960, 1),
            eps: 1e-5,
        }
        .plan(caps, Choice::Auto)
    };
    let name = |p: Result<wring::kernels::Plan, wring::kernels::KernelError>| {
        p.unwrap().variant.name.to_string()
    };
    assert_eq!(
        name(res(BlockFormat::Q4_1, 576, 1, &lavapipe)),
        "q4_1_b1_swar_res"
    );
    assert_eq!(
        name(res(BlockFormat::Q8_0, 576, 1, &lavapipe)),
        "q8_0_b1_lanes_res"
    );
    assert_eq!(
        name(scaled(BlockFormat::Q4_0, &lavapipe)),
        "q4_0_b1_swar_scaled"
    );
    assert_eq!(
        name(scaled(BlockFormat::Q8_0, &lavapipe)),
        "q8_0_b1_lanes_scaled"
    );
    assert!(res(BlockFormat::Q4_1, 576, 1, &gpu).is_err());
    assert!(scaled(BlockFormat::Q4_1, &gpu).is_err());
    assert!(res(BlockFormat::Q4_1, 576, 2, &lavapipe).is_err());
    assert!(res(BlockFormat::Q4_1, 560, 1, &lavapipe).is_err());
    let narrow = Caps {
        subgroup_min_size: 2,
        ..lavapipe
    };
    assert!(res(BlockFormat::Q4_1, 576, 1, &narrow).is_err());
    let e = product(BlockFormat::Q4_1, 576, 1)
        .plan(&lavapipe, Choice::Force("q4_1_b1_swar_scaled"))
        .unwrap_err();
    assert!(e.to_string().contains("split norm"), "{e}");
}
