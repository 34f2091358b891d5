//! Every kernel against its CPU twin: fixed sweeps that force every variant across the shapes where
//! variants and code paths switch, then proptest shapes.
//!
//! Error budgets (NMSE = sum((gpu - cpu)^2) / sum(cpu^2), after the NaN/Inf check):
//! - copy, fill, f32 add/mul: exact bits (no rounding happens).
//! - f16 add/mul: 1e-8 (f16 arithmetic may round once where the twin rounds via f32).
//! - matmul, matvec: 1e-9. The twins add in the shaders' order, so only FMA contraction and the subgroup
//!   variants' different summation order remain: about 1e-13 in practice.
//! - rmsnorm: 1e-9 (one sqrt and division). softmax, silu_mul: 1e-8 (the device's exp is allowed a few ulp).
//! - rope: 1e-7 (pow, sin and cos of angles up to thousands of radians).

use half::f16;
use proptest::prelude::*;
use wring::kernels::Strided;
use wring::kernels::binary::BinaryOp;
use wring::kernels::check::Tolerance;
use wring::kernels::rope::{Rope, RopeMode, RopeQkv};
use wring::kernels::{
    Choice, DType, Variant, binary, copy, fill, get_rows, matmul, matvec, qmatmul, qmatvec,
    rmsnorm, rope, silu_mul, softmax, variant,
};
use wring::quant::BlockFormat;
use wring::runtime::ops;

use crate::harness::{Case, Rng};

fn variants(kernel: &str) -> Vec<&'static Variant> {
    let v: Vec<_> = variant::of_kernel(kernel).collect();
    assert!(!v.is_empty(), "kernel {kernel} has no variants");
    v
}

fn needs(v: &Variant) -> (bool, bool) {
    (v.requires.f16, v.requires.subgroup)
}

/// Every kernel in the build table must have a test here; a new kernel without one fails this.
#[test]
fn every_kernel_is_tested() {
    let tested = [
        "attn_pv",
        "attn_scores",
        "binary",
        "copy",
        "dwt",
        "fill",
        "get_rows",
        "matmul",
        "matvec",
        "qmatmul",
        "qmatvec",
        "rmsnorm",
        "rope",
        "rope_qkv",
        "silu_mul",
        "softmax",
        "vq_lookup",
        "vq_merge",
        "vq_norms",
        "vq_refine",
        "vq_search",
        "vq_update",
    ];
    let mut built: Vec<&str> = variant::all().iter().map(|v| v.kernel.as_ref()).collect();
    built.dedup();
    assert_eq!(
        built, tested,
        "update the kernel tests when the table changes"
    );
}

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
            ops::copy(step, &s, out, Choice::Force(&v.name))
        }),
        needs_f16: needs(v).0,
        needs_subgroup: needs(v).1,
    }
}

#[test]
fn copy_every_variant() {
    for v in variants("copy") {
        let sizes: &[usize] = if v.name == "vec4" {
            &[4, 8, 1020, 1024, 4096, 65_540]
        } else {
            &[1, 3, 255, 256, 257, 1023, 1025, 65_537]
        };
        for &n in sizes {
            copy_case(v, n, n as u64).assert();
        }
    }
}

#[test]
fn copy_vec4_refuses_ragged_lengths() {
    let err = copy::plan(6, &wring::kernels::Caps::BASELINE, Choice::Force("vec4")).unwrap_err();
    assert!(err.to_string().contains("multiple of 4"), "{err}");
}

#[test]
fn fill_every_variant() {
    for v in variants("fill") {
        for n in [1usize, 255, 1024, 1025, 70_001] {
            let value = 0x3F80_0000 + n as u32;
            let mut expected = vec![0u32; n];
            fill::cpu(&mut expected, value);
            Case {
                name: format!("fill variant={} words={n} value={value:#x}", v.name),
                tol: Tolerance::Exact,
                out_dtype: DType::U32,
                out_shape: vec![n],
                expected: expected.into_iter().map(f32::from_bits).collect(),
                record: Box::new(move |_, step, out| {
                    ops::fill(step, out, value, Choice::Force(&v.name))
                }),
                needs_f16: false,
                needs_subgroup: false,
            }
            .assert();
        }
    }
}

fn binary_case(v: &'static Variant, n: usize, nb: usize, seed: u64) -> Case<'static> {
    let op = if v.name.starts_with("add") {
        BinaryOp::Add
    } else {
        BinaryOp::Mul
    };
    let mut rng = Rng::new(seed);
    let a = rng.vec(n, -4.0, 4.0);
    let b = rng.vec(nb, -4.0, 4.0);
    let name = format!("binary variant={} n={n} nb={nb} seed={seed}", v.name);
    if v.define("ELEM") == Some("f16") {
        let a: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
        let b: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        let mut c = vec![f16::ZERO; n];
        binary::cpu(op, &a, &b, &mut c);
        Case {
            name,
            tol: Tolerance::Nmse(1e-8),
            out_dtype: DType::F16,
            out_shape: vec![n],
            expected: c.iter().map(|x| x.to_f32()).collect(),
            record: Box::new(move |ctx, step, out| {
                let (ta, tb) = (ctx.upload(&[n], &a)?, ctx.upload(&[nb], &b)?);
                ops::binary(step, op, &ta, &tb, out, Choice::Force(&v.name))
            }),
            needs_f16: true,
            needs_subgroup: false,
        }
    } else {
        let mut c = vec![0.0f32; n];
        binary::cpu(op, &a, &b, &mut c);
        Case {
            name,
            tol: Tolerance::Exact,
            out_dtype: DType::F32,
            out_shape: vec![n],
            expected: c,
            record: Box::new(move |ctx, step, out| {
                let (ta, tb) = (ctx.upload(&[n], &a)?, ctx.upload(&[nb], &b)?);
                ops::binary(step, op, &ta, &tb, out, Choice::Force(&v.name))
            }),
            needs_f16: false,
            needs_subgroup: false,
        }
    }
}

#[test]
fn binary_every_variant() {
    for v in variants("binary") {
        for (n, nb) in [
            (1, 1),
            (7, 7),
            (1023, 1023),
            (1025, 1025),
            (4096, 64),
            (3 * 577, 577),
            (9, 1),
        ] {
            binary_case(v, n, nb, (n * 31 + nb) as u64).assert();
        }
    }
}

#[test]
fn binary_rejects_a_broadcast_that_does_not_divide() {
    let e = binary::plan(
        BinaryOp::Add,
        DType::F32,
        10,
        3,
        &wring::kernels::Caps::BASELINE,
        Choice::Auto,
    )
    .unwrap_err();
    assert!(e.to_string().contains("must divide"), "{e}");
}

#[test]
fn silu_mul_matches_twin() {
    for v in variants("silu_mul") {
        // (rows, cols, halves): dense tensors, and the two halves of one fused gate/up output read in place.
        for (rows, cols, halves) in [
            (1usize, 1usize, false),
            (1, 5, false),
            (4, 1024, false),
            (1, 4099, false),
            (1, 1536, true),
            (5, 37, true),
        ] {
            let n = rows * cols;
            let mut rng = Rng::new(n as u64);
            // The range reaches where exp(-x) overflows, to cover the -0 limit.
            let mut a = rng.vec(if halves { 2 * n } else { n }, -30.0, 30.0);
            if n > 2 {
                a[0] = -100.0;
                a[1] = 100.0;
            }
            let b = rng.vec(n, -2.0, 2.0);
            let (sa, sb) = if halves {
                (
                    Strided {
                        stride: 2 * cols,
                        offset: 0,
                    },
                    Strided {
                        stride: 2 * cols,
                        offset: cols,
                    },
                )
            } else {
                (
                    Strided {
                        stride: cols,
                        offset: 0,
                    },
                    Strided {
                        stride: cols,
                        offset: 0,
                    },
                )
            };
            let mut y = vec![0.0; n];
            if halves {
                silu_mul::cpu(cols, &a, sa, &a, sb, &mut y);
            } else {
                silu_mul::cpu(cols, &a, sa, &b, sb, &mut y);
            }
            Case {
                name: format!(
                    "silu_mul variant={} rows={rows} cols={cols} halves={halves}",
                    v.name
                ),
                tol: Tolerance::Nmse(1e-8),
                out_dtype: DType::F32,
                out_shape: vec![rows, cols],
                expected: y,
                record: Box::new(move |ctx, step, out| {
                    if halves {
                        let gu = ctx.upload(&[rows, 2 * cols], &a)?;
                        ops::silu_mul_halves(step, &gu, out, Choice::Force(&v.name))
                    } else {
                        let (ta, tb) = (
                            ctx.upload(&[rows, cols], &a)?,
                            ctx.upload(&[rows, cols], &b)?,
                        );
                        ops::silu_mul(step, &ta, &tb, out, Choice::Force(&v.name))
                    }
                }),
                needs_f16: false,
                needs_subgroup: false,
            }
            .assert();
        }
    }
}

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
            ops::matmul(step, &ta, &tb, out, Choice::Force(&v.name))
        }),
        needs_f16: f16_in,
        needs_subgroup: false,
    }
}

#[test]
fn matmul_every_variant_across_tile_edges() {
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
            matmul_case(v, m, n, k, i as u64).assert();
        }
    }
}

#[test]
fn matmul_auto_switches_at_64() {
    let caps = wring::kernels::Caps::BASELINE;
    assert_eq!(
        matmul::plan(DType::F32, 63, 200, 8, &caps, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "f32_1x1"
    );
    assert_eq!(
        matmul::plan(DType::F32, 64, 64, 8, &caps, Choice::Auto)
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
        matmul::plan(DType::F32, 64, 64, 8, &cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "f32_direct"
    );
    assert_eq!(
        matmul::plan(DType::F32, 64, 64, 9, &cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "f32_4x4",
        "k % 4 != 0"
    );
    let e = matmul::plan(DType::F32, 8, 8, 6, &caps, Choice::Force("f32_direct")).unwrap_err();
    assert!(e.to_string().contains("k % 4"), "{e}");
}

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
            ops::matvec(step, &tw, &tx, out, Choice::Force(&v.name))
        }),
        needs_f16: f16_in,
        needs_subgroup: v.requires.subgroup,
    }
}

#[test]
fn matvec_every_variant() {
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
            matvec_case(v, n, k, 100 + i as u64).assert();
        }
    }
}

/// The block format a qmatvec variant reads, from its FMT_* define.
fn variant_format(v: &Variant) -> BlockFormat {
    BlockFormat::ALL
        .into_iter()
        .find(|f| v.define(&format!("FMT_{}", f.name())).is_some())
        .expect("qmatvec variants name a format")
}

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
    let lanes = if v.define("ROW_PER_LANE").is_some() {
        1
    } else {
        v.define_u32("WG") as usize
    };
    qmatvec::cpu(f, &w, &x_seen, &mut y, n, k, batch, lanes);
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
            ops::qmatvec(step, &tw, &tx, out, Choice::Force(&v.name))
        }),
        needs_f16: v.requires.f16,
        needs_subgroup: v.requires.subgroup,
    }
}

#[test]
fn qmatvec_every_variant() {
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
                    qmatvec_case(v, n, k, batch, (i * 100 + batch * 10 + n) as u64).assert();
                }
            }
        }
    }
}

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
            ops::qmatmul(step, &tw, &ta, out, Choice::Force(&v.name))
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

#[test]
fn qmatmul_every_variant_across_tile_edges() {
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
            qmatmul_case(v, m, n, k, i as u64).assert();
        }
    }
}

#[test]
fn quantized_and_float_weights_share_one_entry_point() {
    // The same weights as Q8_0 blocks and as their dequantized f32 values give the same product
    // through ops::matmul_weights, for one row and for a batch.
    let ctx = crate::harness::ctx();
    let (n, k) = (40, 64);
    let mut rng = Rng::new(77);
    let wq = BlockFormat::Q8_0
        .quantize_to_vec(&rng.vec(n * k, -0.1, 0.1))
        .unwrap();
    let wf = BlockFormat::Q8_0.dequantize_to_vec(&wq, n * k).unwrap();
    let tq = ctx.upload_blocks(&[n, k], BlockFormat::Q8_0, &wq).unwrap();
    let tf = ctx.upload(&[n, k], &wf).unwrap();
    for m in [1, 5] {
        let x = ctx.upload(&[m, k], &rng.vec(m * k, -1.0, 1.0)).unwrap();
        let (yq, yf) = (
            ctx.empty(&[m, n], DType::F32).unwrap(),
            ctx.empty(&[m, n], DType::F32).unwrap(),
        );
        let mut s = ctx.step("one entry point");
        ops::matmul_weights(&mut s, &tq, &x, &yq).unwrap();
        ops::matmul_weights(&mut s, &tf, &x, &yf).unwrap();
        s.submit().unwrap();
        let (a, b) = (ctx.read::<f32>(&yq).unwrap(), ctx.read::<f32>(&yf).unwrap());
        let e = wring::kernels::check::compare(&a, &b, Tolerance::Nmse(1e-10));
        assert!(e.is_ok(), "m={m}: {}", e.unwrap_err());
    }
}

/// SmolLM2's real weights, straight from its GGUF, through the automatically chosen kernels: every projection
/// shape of a layer (Q4_1) and the 49152 x 576 tied embedding used for the logits (Q8_0), for one token and
/// for a batch of 5.
#[test]
fn qmatvec_on_smollm2_weights() {
    let g = wring::gguf::Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let lanes = |v: &Variant| {
        if v.define("ROW_PER_LANE").is_some() {
            1
        } else {
            v.define_u32("WG") as usize
        }
    };
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
            let plan = qmatvec::plan(f, DType::F32, n, k, batch, ctx.caps(), Choice::Auto).unwrap();
            let mut want = vec![0.0f32; batch * n];
            qmatvec::cpu(f, w, &x, &mut want, n, k, batch, lanes(plan.variant));
            let tx = ctx.upload(&[batch, k], &x).unwrap();
            let ty = ctx.empty(&[batch, n], DType::F32).unwrap();
            let mut s = ctx.step(name);
            ops::qmatvec(&mut s, &tw, &tx, &ty, Choice::Auto).unwrap();
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

fn attention_shape(
    tokens: usize,
    pos0: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> wring::kernels::attention::Attention {
    wring::kernels::attention::Attention {
        tokens,
        kv_len: pos0 + tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        pos0,
        scale: 1.0 / (head_dim as f32).sqrt(),
    }
}

#[test]
fn attention_kernels_match_twins() {
    // Prefill from position 0, decode of one token deep in the cache, a chunk after a prefix; SmolLM2's
    // 9 query heads over 3 key/value heads, plain multi-head, and a head size that is not a power of two.
    for (i, &(tokens, pos0, h, hkv, d)) in [
        (5, 0, 9, 3, 64),
        (1, 40, 9, 3, 64),
        (7, 9, 4, 4, 12),
        (3, 2, 2, 1, 4),
    ]
    .iter()
    .enumerate()
    {
        let a = attention_shape(tokens, pos0, h, hkv, d);
        let mut rng = Rng::new(i as u64);
        let q = rng.vec(tokens * h * d, -1.0, 1.0);
        let k = rng.vec(a.kv_len * hkv * d, -1.0, 1.0);
        let v = rng.vec(a.kv_len * hkv * d, -1.0, 1.0);
        let mut s = vec![0.0f32; tokens * h * a.kv_len];
        a.cpu_scores(&q, &k, &mut s);
        let (q2, k2) = (q.clone(), k.clone());
        Case {
            name: format!("attn_scores {a:?}"),
            tol: Tolerance::Nmse(1e-10),
            out_dtype: DType::F32,
            out_shape: vec![s.len()],
            expected: s.clone(),
            record: Box::new(move |ctx, step, out| {
                let (tq, tk) = (ctx.upload(&[q2.len()], &q2)?, ctx.upload(&[k2.len()], &k2)?);
                let plan = a.plan_scores(step.caps(), Choice::Force("f32"))?;
                step.launch(&plan, &[("q", &tq), ("k", &tk), ("s", out)])
            }),
            needs_f16: false,
            needs_subgroup: false,
        }
        .assert();
        // Softmax rows in f64 give the probabilities; the twin then weights the values.
        let mut p = s.clone();
        for row in p.chunks_mut(a.kv_len) {
            let m = row.iter().fold(f32::MIN, |m, &x| m.max(x));
            let sum: f64 = row.iter().map(|&x| f64::from(x - m).exp()).sum();
            for x in row.iter_mut() {
                *x = (f64::from(*x - m).exp() / sum) as f32;
            }
        }
        let mut o = vec![0.0f32; tokens * h * d];
        a.cpu_pv(&p, &v, &mut o);
        Case {
            name: format!("attn_pv {a:?}"),
            tol: Tolerance::Nmse(1e-10),
            out_dtype: DType::F32,
            out_shape: vec![o.len()],
            expected: o,
            record: Box::new(move |ctx, step, out| {
                let (tp, tv) = (ctx.upload(&[p.len()], &p)?, ctx.upload(&[v.len()], &v)?);
                let plan = a.plan_pv(step.caps(), Choice::Force("f32"))?;
                step.launch(&plan, &[("p", &tp), ("v", &tv), ("o", out)])
            }),
            needs_f16: false,
            needs_subgroup: false,
        }
        .assert();
    }
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
        ops::copy_into(&mut s, &tk, &k_cache, pos0 * hkv * d).unwrap();
        ops::copy_into(&mut s, &tv, &v_cache, pos0 * hkv * d).unwrap();
        ops::attention(&mut s, &a, &tq, &k_cache, &v_cache, &scores, &probs, &out).unwrap();
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

#[test]
fn get_rows_every_variant() {
    for v in variants("get_rows") {
        let table = if v.name == "f32" {
            DType::F32
        } else {
            DType::Block(variant_format(v))
        };
        let k = match table {
            DType::Block(f) => 2 * f.block_len(),
            _ => 68,
        };
        let rows = 37;
        let mut rng = Rng::new(k as u64);
        let values = rng.vec(rows * k, -0.5, 0.5);
        let data: Vec<u8> = match table {
            DType::Block(f) => f.quantize_to_vec(&values).unwrap(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        // First and last rows, and repeats. Dequantization on the device is bit-identical to the reference.
        let ids: Vec<u32> = vec![0, 36, 5, 5, 17];
        let mut want = vec![0.0f32; ids.len() * k];
        get_rows::cpu(table, &data, k, &ids, &mut want);
        Case {
            name: format!("get_rows variant={} rows={rows} k={k} ids={ids:?}", v.name),
            tol: Tolerance::Exact,
            out_dtype: DType::F32,
            out_shape: vec![ids.len(), k],
            expected: want,
            record: Box::new(move |ctx, step, out| {
                let t = match table {
                    DType::Block(f) => ctx.upload_blocks(&[rows, k], f, &data)?,
                    _ => ctx.upload(&[rows, k], &values)?,
                };
                let ti = ctx.upload(&[ids.len()], &ids)?;
                ops::get_rows(step, &t, &ti, out, Choice::Force(&v.name))
            }),
            needs_f16: false,
            needs_subgroup: false,
        }
        .assert();
    }
}

#[test]
fn qmatvec_plans_refuse_bad_shapes() {
    let caps = wring::kernels::Caps::BASELINE;
    let f32a = DType::F32;
    let e = qmatvec::plan(BlockFormat::Q4_K, f32a, 4, 300, 1, &caps, Choice::Auto).unwrap_err();
    assert!(e.to_string().contains("whole number of Q4_K blocks"), "{e}");
    let e = qmatvec::plan(BlockFormat::Q4_0, f32a, 4, 64, 0, &caps, Choice::Auto).unwrap_err();
    assert!(e.to_string().contains("at least one row"), "{e}");
    let p = qmatvec::plan(BlockFormat::Q4_0, f32a, 4, 64, 17, &caps, Choice::Auto).unwrap();
    assert_eq!(
        (p.variant.name.as_ref(), p.workgroups),
        ("q4_0_b8_shared", [4, 3, 1])
    );
    let e = qmatvec::plan(
        BlockFormat::Q4_0,
        f32a,
        4,
        64,
        1,
        &caps,
        Choice::Force("q8_0_b1_shared"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not read Q4_0"), "{e}");
    let e =
        qmatvec::plan(BlockFormat::Q4_0, DType::F16, 4, 64, 1, &caps, Choice::Auto).unwrap_err();
    assert!(
        e.to_string().contains("SHADER_F16"),
        "f16 activations need the feature: {e}"
    );
    let e = qmatvec::plan(
        BlockFormat::Q4_0,
        f32a,
        4,
        64,
        1,
        &caps,
        Choice::Force("q4_0_b1_shared_f16"),
    )
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
        qmatvec::plan(BlockFormat::Q6_K, f32a, 4, 256, 3, &cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "q6_k_b8_lanes"
    );
    assert_eq!(
        qmatvec::plan(BlockFormat::Q6_K, DType::F16, 4, 256, 1, &cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "q6_k_b1_lanes_f16"
    );
}

/// RMSNorm cases; the `_add` variants' output is y followed by the sum s, both checked.
fn rmsnorm_case(v: &'static Variant, rows: usize, n: usize, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * n, -3.0, 3.0);
    let r = rng.vec(rows * n, -1.0, 1.0);
    let w = rng.vec(n, 0.5, 1.5);
    let eps = 1e-5;
    let wg = v.define_u32("WG") as usize;
    let residual = v.define("RESIDUAL").is_some();
    let mut y = vec![0.0; rows * n];
    let mut sum = vec![0.0; rows * n];
    if residual {
        rmsnorm::cpu_add(&x, &r, &w, &mut y, &mut sum, n, eps, wg);
        y.extend_from_slice(&sum);
    } else {
        rmsnorm::cpu(&x, &w, &mut y, n, eps, wg);
    }
    Case {
        name: format!("rmsnorm variant={} rows={rows} n={n} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![if residual { 2 * rows } else { rows }, n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let (tx, tw) = (ctx.upload(&[rows, n], &x)?, ctx.upload(&[n], &w)?);
            if !residual {
                return ops::rmsnorm(step, &tx, &tw, out, eps, Choice::Force(&v.name));
            }
            let tr = ctx.upload(&[rows, n], &r)?;
            let (ty, ts) = (
                ctx.empty(&[rows, n], DType::F32)?,
                ctx.empty(&[rows, n], DType::F32)?,
            );
            ops::rmsnorm_add(step, &tx, &tr, &tw, &ty, &ts, eps, Choice::Force(&v.name))?;
            ops::copy_into(step, &ty, out, 0)?;
            ops::copy_into(step, &ts, out, rows * n)
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
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
        matvec::plan(DType::F32, 8, k, &caps, Choice::Auto)
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
    let e = matvec::plan(DType::F32, 8, 6, &gpu, Choice::Force("f32_vec4_shared")).unwrap_err();
    assert!(e.to_string().contains("k % 4"), "{e}");
}

#[test]
fn rmsnorm_every_variant() {
    for v in variants("rmsnorm") {
        for (i, &(rows, n)) in [(1, 1), (1, 255), (2, 256), (3, 257), (5, 576), (2, 1537)]
            .iter()
            .enumerate()
        {
            rmsnorm_case(v, rows, n, i as u64).assert();
        }
    }
}

#[test]
fn row_kernels_choose_narrow_workgroups_on_cpu_adapters() {
    let gpu = wring::kernels::Caps {
        subgroup: true,
        ..wring::kernels::Caps::BASELINE
    };
    let cpu = wring::kernels::Caps {
        software: true,
        ..gpu
    };
    assert_eq!(
        rmsnorm::plan(576, 4, 1e-5, false, &cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "narrow"
    );
    assert_eq!(
        rmsnorm::plan(576, 4, 1e-5, false, &gpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "subgroup"
    );
    assert_eq!(
        rmsnorm::plan(576, 4, 1e-5, true, &cpu, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "narrow_add"
    );
    let e = rmsnorm::plan(576, 4, 1e-5, true, &cpu, Choice::Force("narrow")).unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
    assert_eq!(
        softmax::plan(576, 4, 1.0, &wring::kernels::Caps::BASELINE, Choice::Auto)
            .unwrap()
            .variant
            .name,
        "shared"
    );
}

#[test]
fn rmsnorm_rows_spill_into_the_second_grid_dimension() {
    // 70,000 rows need more than 65,535 workgroups in x, so the grid spills into y.
    let v = variant::find("rmsnorm", "shared").unwrap();
    rmsnorm_case(v, 70_000, 2, 7).assert();
}

fn softmax_case(
    v: &'static Variant,
    rows: usize,
    n: usize,
    scale: f32,
    seed: u64,
) -> Case<'static> {
    let mut rng = Rng::new(seed);
    // Large logits: without the max subtraction exp would overflow.
    let x = rng.vec(rows * n, -80.0, 120.0);
    let mut y = vec![0.0; rows * n];
    softmax::cpu(&x, &mut y, n, scale, v.define_u32("WG") as usize);
    Case {
        name: format!(
            "softmax variant={} rows={rows} n={n} scale={scale} seed={seed}",
            v.name
        ),
        tol: Tolerance::Nmse(1e-8),
        out_dtype: DType::F32,
        out_shape: vec![rows, n],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tx = ctx.upload(&[rows, n], &x)?;
            ops::softmax(step, &tx, out, scale, Choice::Force(&v.name))
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
}

#[test]
fn softmax_every_variant() {
    for v in variants("softmax") {
        for (i, &(rows, n)) in [
            (1, 1),
            (2, 3),
            (3, 255),
            (1, 256),
            (4, 257),
            (2, 1000),
            (1, 49_152),
        ]
        .iter()
        .enumerate()
        {
            softmax_case(v, rows, n, 0.125 + i as f32, i as u64).assert();
        }
    }
}

#[test]
fn softmax_rows_sum_to_one_on_the_device() {
    // An independent property, not the twin: every row of the device result sums to 1.
    let ctx = crate::harness::ctx();
    let (rows, n) = (3, 777);
    let x = Rng::new(3).vec(rows * n, -50.0, 50.0);
    let tx = ctx.upload(&[rows, n], &x).unwrap();
    let ty = ctx.empty(&[rows, n], DType::F32).unwrap();
    let mut s = ctx.step("softmax sum");
    ops::softmax(&mut s, &tx, &ty, 1.0, Choice::Auto).unwrap();
    s.submit().unwrap();
    let y: Vec<f32> = ctx.read(&ty).unwrap();
    for r in y.chunks(n) {
        let sum: f32 = r.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
    }
}

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
            ops::rope(step, &r, &tx, &tp, out, Choice::Force(&v.name))
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

#[test]
fn rope_every_variant() {
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
            rope_case(v, r, i as u64).assert();
        }
    }
}

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
    let (mut q_out, mut kc, mut vc) = (vec![0.0; t * qw], kc0.clone(), vc0.clone());
    rope::cpu_qkv(&r, &q, &k, &vv, &pos, &mut q_out, &mut kc, &mut vc);
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
            let tq_out = ctx.empty(&[t * qw], DType::F32)?;
            let (tkc, tvc) = (
                ctx.upload(&[positions * kv], &kc0)?,
                ctx.upload(&[positions * kv], &vc0)?,
            );
            ops::rope_qkv(
                step,
                &r,
                &tq,
                &tk,
                &tv,
                &tp,
                &tq_out,
                &tkc,
                &tvc,
                Choice::Force(&v.name),
            )?;
            ops::copy_into(step, &tq_out, out, 0)?;
            ops::copy_into(step, &tkc, out, t * qw)?;
            ops::copy_into(step, &tvc, out, t * qw + positions * kv)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

#[test]
fn rope_qkv_every_variant() {
    for v in variants("rope_qkv") {
        let mode = if v.name == "neox" {
            RopeMode::Neox
        } else {
            RopeMode::Normal
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
            for fused in [false, true] {
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
                };
                rope_qkv_case(v, r, fused, positions, i as u64).assert();
            }
        }
    }
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
    };
    let (mut q_out, mut kc, mut vc) = (vec![0.0; 32], vec![0.0; 48], vec![0.0; 48]);
    rope::cpu_qkv(&r, &q, &k, &v, &pos, &mut q_out, &mut kc, &mut vc);
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
    softmax::cpu(&w[..k], &mut s, k, 1.0, 256);
    assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let mut rn = vec![0.0; k];
    rmsnorm::cpu(&w[..k], &vec![1.0; k], &mut rn, k, 0.0, 256);
    let ms: f32 = rn.iter().map(|v| v * v).sum::<f32>() / k as f32;
    assert!((ms - 1.0).abs() < 1e-4);
}

fn pick<'a>(vs: &[&'a Variant], i: usize) -> &'a Variant {
    vs[i % vs.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_matmul(m in 1usize..90, n in 1usize..90, k in 1usize..70, vi in 0usize..12, seed in any::<u64>()) {
        let v = pick(&variants("matmul"), vi);
        let k = if v.define("DIRECT").is_some() { k.next_multiple_of(4) } else { k };
        let r = matmul_case(v, m, n, k, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn prop_matvec(n in 1usize..200, k in 1usize..700, vi in 0usize..20, seed in any::<u64>()) {
        let v = pick(&variants("matvec"), vi);
        let k = if v.define("VEC4").is_some() { k.next_multiple_of(4) } else { k };
        let case = matvec_case(v, n, k, seed);
        let r = case.check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn prop_qmatvec(n in 1usize..40, blocks in 1usize..5, batch in 1usize..30, fi in 0usize..8, kind in 0usize..3, half in any::<bool>(), seed in any::<u64>()) {
        let f = BlockFormat::ALL[fi];
        let b = if batch == 1 { 1 } else { 8 };
        let name = format!("{}_b{b}_{}{}", DType::Block(f).name(), ["lanes", "shared", "subgroup"][kind], if half { "_f16" } else { "" });
        let v = variant::find("qmatvec", &name).unwrap();
        let r = qmatvec_case(v, n, blocks * f.block_len(), batch, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn prop_qmatmul(m in 1usize..80, n in 1usize..80, blocks in 1usize..4, fi in 0usize..8, seed in any::<u64>()) {
        let f = BlockFormat::ALL[fi];
        let v = variant::find("qmatmul", &format!("{}_4x4", DType::Block(f).name())).unwrap();
        let r = qmatmul_case(v, m, n, blocks * f.block_len(), seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn prop_rows(rows in 1usize..6, n in 1usize..1100, vi in 0usize..4, seed in any::<u64>()) {
        let r = rmsnorm_case(pick(&variants("rmsnorm"), vi), rows, n, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let r = softmax_case(pick(&variants("softmax"), vi), rows, n, 0.5, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn prop_elementwise(n in 1usize..5000, nb_div in 1usize..4, vi in 0usize..4, seed in any::<u64>()) {
        let nb = if n % nb_div == 0 { n / nb_div } else { n };
        let r = binary_case(pick(&variants("binary"), vi), n, nb, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let r = copy_case(variant::find("copy", "u32").unwrap(), n, seed).check();
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn prop_rope(tokens in 1usize..9, n_heads in 1usize..5, half in 1usize..40, rot in 1usize..40, neox in any::<bool>(), seed in any::<u64>()) {
        let head_dim = 2 * half;
        let n_dims = 2 * rot.min(half);
        let mode = if neox { RopeMode::Neox } else { RopeMode::Normal };
        let v = variant::find("rope", if neox { "neox" } else { "normal" }).unwrap();
        let r = Rope { mode, tokens, n_heads, head_dim, n_dims, freq_base: 10_000.0, freq_scale: 1.0 };
        let res = rope_case(v, r, seed).check();
        prop_assert!(res.is_ok(), "{}", res.unwrap_err());
    }
}
