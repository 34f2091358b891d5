//! `qmatvec`: `y[b] = W x[b]` with W in a GGUF block format dequantized on the fly. Budget: NMSE 1e-9
//! (the twin dequantizes with the reference dequantizer and adds in the shader's order). Batched variants
//! within one tile, exactly one tile, and tiles with a ragged last one; 67 rows span two workgroups of the
//! b1 lanes variants (64 rows each) and end inside a lane, three of the b8 lanes variants (32 rows each).

use half::f16;
use proptest::prelude::*;
use wring::kernels::check::Tolerance;
use wring::kernels::quant::Qmatvec;
use wring::kernels::quant::qmatvec;
use wring::kernels::{Choice, DType, Kernel as _, Variant};
use wring::quant::BlockFormat;
use wring::quant::gptq::{Config, Hessian, quantize};
use wring::runtime::dispatch::{Weights, matmul_weights};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, twin_lanes, variant_format, variants};

fn qmatvec_case(v: &'static Variant, n: usize, k: usize, batch: usize, seed: u64) -> Case<'static> {
    let f = variant_format(v);
    let mut rng = Rng::new(seed);
    // Weights like a real layer's (small, centred) and activations of unit scale.
    let wf = rng.vec(n * k, -0.08, 0.08);
    let w = f.quantize_to_vec(&wf).expect("whole blocks");
    let x = rng.vec(batch * k, -1.0, 1.0);
    let f16_act = v.define("ACT") == Some("f16");
    let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    // The twin sees what the shader sees: f16 activations widened to f32.
    let x_seen: Vec<f32> = if f16_act {
        x16.iter().map(|v| v.to_f32()).collect()
    } else {
        x.clone()
    };
    let mut y = vec![0.0f32; batch * n];
    qmatvec::cpu(f, &w, &x_seen, &mut y, n, k, batch, twin_lanes(v));
    Case {
        name: format!(
            "qmatvec variant={} n={n} k={k} batch={batch} seed={seed}",
            v.name
        ),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![batch, n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tw = ctx.upload_blocks(&[n, k], f, &w)?;
            let tx = if f16_act {
                ctx.upload(&[batch, k], &x16)?
            } else {
                ctx.upload(&[batch, k], &x)?
            };
            let unit = Qmatvec {
                format: f,
                act: tx.dtype(),
                n,
                k,
                batch,
            };
            step.run_with(
                &unit,
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
    for v in variants("qmatvec") {
        let f = variant_format(v);
        let bl = f.block_len();
        // Batched variants: within one tile, exactly one tile, and tiles with a ragged last one.
        let batches: &[usize] = if v.define_u32("BATCH") == 1 {
            &[1, 3]
        } else {
            &[2, 8, 21]
        };
        // One block, a row that does not fill the workgroup's lanes evenly, and SmolLM2's 576 / 1536
        // where they are whole blocks.
        let mut ks = vec![bl, 3 * bl];
        ks.extend([576, 1536].into_iter().filter(|k| k % bl == 0));
        for (i, &k) in ks.iter().enumerate() {
            for &batch in batches {
                // 67 rows span two workgroups of the b1 lanes variants (64 rows each) and end inside a lane;
                // for the b8 lanes variants (32 rows each) they span three.
                for n in [1, 67] {
                    out.push(planned(v, move || {
                        qmatvec_case(v, n, k, batch, (i * 100 + batch * 10 + n) as u64)
                    }));
                }
            }
        }
        // More output rows than one grid dimension holds at one row per workgroup (a 151,936-token head):
        // the row groups spill from x into z (plan::grid_rows). The lanes variants' 64 rows a workgroup
        // never spill; a Q8_0 head is the common case.
        if v.define_u32("BATCH") == 1 && !v.name.contains("lanes") && f == BlockFormat::Q8_0 {
            out.push(planned(v, move || qmatvec_case(v, 65_600, bl, 1, 7)));
        }
    }
    out
}

/// SmolLM2's real weights, straight from its GGUF, through the automatically chosen kernels: every projection
/// shape of a layer (Q4_1) and the 49152 x 576 tied embedding used for the logits (Q8_0), for one token and
/// for a batch of 5.
#[test]
fn qmatvec_on_smollm2_weights() {
    let g = wring::gguf::Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
        "token_embd.weight",
    ] {
        let t = g.tensor(name).unwrap();
        let (k, n) = (t.dims[0] as usize, t.dims[1] as usize);
        let f = BlockFormat::from_ggml_type(t.ggml_type).unwrap();
        let w = g.tensor_data(t);
        let tw = ctx.upload_blocks(&[n, k], f, w).unwrap();
        for batch in [1, 5] {
            let x = Rng::new(n as u64).vec(batch * k, -1.0, 1.0);
            let unit = Qmatvec {
                format: f,
                act: DType::F32,
                n,
                k,
                batch,
            };
            let plan = unit.plan(ctx.caps(), Choice::Auto).unwrap();
            let mut want = vec![0.0f32; batch * n];
            qmatvec::cpu(f, w, &x, &mut want, n, k, batch, twin_lanes(plan.variant));
            let tx = ctx.upload(&[batch, k], &x).unwrap();
            let ty = ctx.empty(&[batch, n], DType::F32).unwrap();
            let mut s = ctx.step(name);
            s.run(&unit, &[("w", &tw), ("x", &tx), ("y", &ty)]).unwrap();
            s.submit().unwrap();
            let got: Vec<f32> = ctx.read(&ty).unwrap();
            let r = wring::kernels::check::compare(&got, &want, Tolerance::Nmse(1e-9));
            assert!(
                r.is_ok(),
                "{name} ({f}, {n}x{k}, batch {batch}, {}): {}",
                plan.variant.name,
                r.unwrap_err()
            );
        }
    }
}

#[test]
fn qmatvec_plans_refuse_bad_shapes() {
    let caps = wring::kernels::Caps::BASELINE;
    let f32a = DType::F32;
    let qv = |format, act, n, k, batch| Qmatvec {
        format,
        act,
        n,
        k,
        batch,
    };
    let e = qv(BlockFormat::Q4_K, f32a, 4, 300, 1)
        .plan(&caps, Choice::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("whole number of Q4_K blocks"), "{e}");
    let e = qv(BlockFormat::Q4_0, f32a, 4, 64, 0)
        .plan(&caps, Choice::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("at least one row"), "{e}");
    let p = qv(BlockFormat::Q4_0, f32a, 4, 64, 17)
        .plan(&caps, Choice::Auto)
        .unwrap();
    assert_eq!(
        (p.variant.name.as_ref(), p.workgroups),
        ("q4_0_b8_shared", [4, 3, 1])
    );
    let e = qv(BlockFormat::Q4_0, f32a, 4, 64, 1)
        .plan(&caps, Choice::Force("q8_0_b1_shared"))
        .unwrap_err();
    assert!(e.to_string().contains("does not read Q4_0"), "{e}");
    let e = qv(BlockFormat::Q4_0, DType::F16, 4, 64, 1)
        .plan(&caps, Choice::Auto)
        .unwrap_err();
    assert!(
        e.to_string().contains("SHADER_F16"),
        "f16 activations need the feature: {e}"
    );
    let e = qv(BlockFormat::Q4_0, f32a, 4, 64, 1)
        .plan(&caps, Choice::Force("q4_0_b1_shared_f16"))
        .unwrap_err();
    assert!(
        e.to_string().contains("SHADER_F16") || e.to_string().contains("f32 activations"),
        "{e}"
    );
    let cpu = wring::kernels::Caps {
        software: true,
        f16: true,
        ..caps
    };
    assert_eq!(
        qv(BlockFormat::Q6_K, f32a, 4, 256, 3)
            .plan(&cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "q6_k_b8_lanes"
    );
    assert_eq!(
        qv(BlockFormat::Q6_K, DType::F16, 4, 256, 1)
            .plan(&cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "q6_k_b1_lanes_f16"
    );
}

#[test]
fn quantized_and_float_weights_share_one_entry_point() {
    // The same weights as Q8_0 blocks and as their dequantized f32 values, and a group-quantized matrix
    // (SpQR's format) and its dequantized values, give the same products through matmul_weights, for one
    // row and for a batch.
    let ctx = crate::harness::ctx();
    let (n, k) = (48, 64);
    let mut rng = Rng::new(77);
    let wq = BlockFormat::Q8_0
        .quantize_to_vec(&rng.vec(n * k, -0.1, 0.1))
        .unwrap();
    let wf = BlockFormat::Q8_0.dequantize_to_vec(&wq, n * k).unwrap();
    let tq: Weights = ctx
        .upload_blocks(&[n, k], BlockFormat::Q8_0, &wq)
        .unwrap()
        .into();
    let tf: Weights = ctx.upload(&[n, k], &wf).unwrap().into();
    let mut h = Hessian::new(k);
    h.add(&rng.vec(8 * k * k, -1.0, 1.0));
    let gm = quantize(&wf, n, k, &h, &Config::spqr(3)).unwrap().0;
    let tg = Weights::group(ctx, &gm).unwrap();
    let tgf: Weights = ctx.upload(&[n, k], &gm.dequantize()).unwrap().into();
    for m in [1, 5] {
        let x = ctx.upload(&[m, k], &rng.vec(m * k, -1.0, 1.0)).unwrap();
        for (what, a, b) in [("Q8_0", &tq, &tf), ("SpQR", &tg, &tgf)] {
            let (ya, yb) = (
                ctx.empty(&[m, n], DType::F32).unwrap(),
                ctx.empty(&[m, n], DType::F32).unwrap(),
            );
            let mut s = ctx.step("one entry point");
            matmul_weights(&mut s, a, &x, &ya).unwrap();
            matmul_weights(&mut s, b, &x, &yb).unwrap();
            s.submit().unwrap();
            let (a, b) = (ctx.read::<f32>(&ya).unwrap(), ctx.read::<f32>(&yb).unwrap());
            let e = wring::kernels::check::compare(&a, &b, Tolerance::Nmse(1e-10));
            assert!(e.is_ok(), "{what} m={m}: {}", e.unwrap_err());
        }
    }
}

proptest! {
    #![proptest_config(crate::kernels::proptest_config(24))]

    #[test]
    fn prop_qmatvec(n in 1usize..40, blocks in 1usize..5, batch in 1usize..30, fi in 0usize..8, kind in 0usize..3, half in any::<bool>(), seed in any::<u64>()) {
        let f = BlockFormat::ALL[fi];
        let b = if batch == 1 { 1 } else { 8 };
        let name = format!("{}_b{b}_{}{}", DType::Block(f).name(), ["lanes", "shared", "subgroup"][kind], if half { "_f16" } else { "" });
        let v = crate::kernels::variant("qmatvec", &name);
        let r = qmatvec_case(v, n, blocks * f.block_len(), batch, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
