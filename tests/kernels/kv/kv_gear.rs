//! `kv_gear` and `kv_gear_load`: GEAR blocks (codes, outliers, low-rank factors) written and completed.
//!
//! `kv_gear` is checked through what the cache gives back: the GPU's store, read by `kv_load` and
//! `kv_gear_load` on the same adapter, against the twins of all three. Budget: four code steps of the
//! coarsest group over the output's energy (kv_store's two for the codes, doubled because a code that
//! moves also moves the residual the power iteration factors; the factors themselves differ by f32
//! summation and fused multiply-adds, far below that), at least NMSE 1e-9.
//!
//! `kv_gear_load` starts from a valid random store (outlier lists of random indices, random factors) and
//! random outputs; budget NMSE 1e-10 (a rank-r dot product of f16 numbers per entry).

use wring::kernels::kv::{KvGear, KvGearLoad, KvLayout, KvLoad, cache, gear};
use wring::kernels::{Choice, DType, Variant, check::Tolerance};

use super::{code_step_budget, gear_layout, random_store, read_case, variant_bits};
use crate::harness::{Case, Rng, copy_into, guarded_upload};
use crate::kernels::{Planned, planned, variant, variants};

/// Keys and values of `n` entries with the structure GEAR is for: a smooth part, a few large outliers.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = rng.uniform(-1.0, 1.0) + 0.5 * ((i % 13) as f32 * 0.3).sin();
            if rng.next_u64().is_multiple_of(97) {
                8.0 * x
            } else {
                x
            }
        })
        .collect()
}

/// The twins' read-back of a GEAR cache whose first `upto` positions are blocks.
fn twin_back(l: KvLayout, store: &[u32], upto: usize) -> Vec<f32> {
    let n = upto * l.kv;
    let (mut k, mut v) = (vec![0.0; n], vec![0.0; n]);
    let load = KvLoad {
        layout: l,
        compressed: upto,
        upto,
    };
    cache::cpu_load(&load, store, &mut k, &mut v);
    let complete = KvGearLoad {
        layout: l,
        compressed: upto,
    };
    gear::cpu_gear_load(&complete, store, &mut k, &mut v);
    [k, v].concat()
}

fn gear_case(v: &'static Variant, u: KvGear, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let l = u.layout;
    let initial = random_store(&l, &mut rng);
    let n = u.upto * l.kv;
    let (k, vv) = (inputs(&mut rng, n), inputs(&mut rng, n));
    let mut store = initial.clone();
    gear::cpu_gear(&u, &k, &vv, &mut store);
    // Blocks before `compressed` are the random store's: read back as they are, on both sides.
    let expected = twin_back(l, &store, u.upto);
    let budget = code_step_budget(&l, &expected, 4.0, 1e-9);
    Case {
        name: format!("kv_gear variant={} {u:?} seed={seed}", v.name),
        tol: Tolerance::Nmse(budget),
        out_dtype: DType::F32,
        out_shape: vec![2 * n],
        expected,
        record: Box::new(move |ctx, step, out| {
            let ts = guarded_upload(ctx, &[initial.len()], &initial)?;
            let (tk, tv) = (ctx.upload(&[n], &k)?, ctx.upload(&[n], &vv)?);
            step.run_with(
                &u,
                Choice::Force(&v.name),
                &[("k", &tk), ("v", &tv), ("store", &ts)],
            )?;
            let zeros = vec![0f32; n];
            let (ok, ov) = (
                guarded_upload(ctx, &[n], &zeros)?,
                guarded_upload(ctx, &[n], &zeros)?,
            );
            let load = KvLoad {
                layout: l,
                compressed: u.upto,
                upto: u.upto,
            };
            step.run(&load, &[("store", &ts), ("k", &ok), ("v", &ov)])?;
            let complete = KvGearLoad {
                layout: l,
                compressed: u.upto,
            };
            step.run(&complete, &[("store", &ts), ("k", &ok), ("v", &ov)])?;
            copy_into(step, &ok, out, 0)?;
            copy_into(step, &ov, out, n)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

fn load_case(v: &'static Variant, u: KvGearLoad, seed: u64) -> Case<'static> {
    let n = u.compressed * u.layout.kv;
    read_case(v, u, &u.layout, n, seed, gear::cpu_gear_load)
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_gear") {
        let bits = variant_bits(&v.name);
        // (small, capacity, compressed, upto, outliers, rank): the recipe on SmolLM2's heads (two blocks
        // after one), outliers alone, low rank alone, small blocks at rank 4 with many outliers.
        let shapes: &[(bool, usize, usize, usize, usize, usize)] = &[
            (false, 256, 64, 192, 41, 2),
            (false, 128, 0, 64, 41, 0),
            (false, 128, 0, 64, 0, 2),
            (true, 40, 8, 32, 6, 4),
        ];
        for (i, &(small, capacity, compressed, upto, outliers, rank)) in shapes.iter().enumerate() {
            let u = KvGear {
                layout: gear_layout(bits, small, capacity, outliers, rank),
                compressed,
                upto,
            };
            out.push(planned(v, move || gear_case(v, u, 30 + i as u64)));
        }
    }
    out
}

/// `kv_gear_load`'s cases (its own catalogue entry, `kv_gear_load.rs`).
pub fn load_cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_gear_load") {
        let shapes: &[(bool, usize, usize, usize, usize)] = &[
            (false, 256, 192, 41, 2),
            (false, 128, 64, 0, 2),
            (true, 40, 40, 6, 4),
        ];
        for (i, &(small, capacity, compressed, outliers, rank)) in shapes.iter().enumerate() {
            let u = KvGearLoad {
                layout: gear_layout(2, small, capacity, outliers, rank),
                compressed,
            };
            out.push(planned(v, move || load_case(v, u, 40 + i as u64)));
        }
    }
    out
}

/// On data with a few large outliers and a low-rank structure, each part of the twin does its job: S
/// brings the outliers back exactly and shrinks the error, L shrinks it further, and Q + L + S beats Q.
#[test]
fn gear_twin_parts_each_reduce_the_error() {
    let mut rng = Rng::new(5);
    let capacity = 128;
    let n = capacity * 192;
    // Rank-1 structure per head plus noise, and spikes.
    let a: Vec<f32> = rng.vec(capacity, -1.0, 1.0);
    let b: Vec<f32> = rng.vec(192, -1.0, 1.0);
    let mut x: Vec<f32> = (0..n)
        .map(|i| a[i / 192] * b[i % 192] + rng.uniform(-0.05, 0.05))
        .collect();
    for i in (0..n).step_by(211) {
        x[i] *= 20.0;
    }
    let err = |outliers: usize, rank: usize| {
        let l = gear_layout(2, false, capacity, outliers, rank);
        let l = if outliers == 0 && rank == 0 {
            KvLayout {
                rank: 0,
                ..gear_layout(2, false, capacity, 0, 1)
            }
        } else {
            l
        };
        let mut store = vec![0u32; l.words()];
        let back = if l.gear() {
            let u = KvGear {
                layout: l,
                compressed: 0,
                upto: capacity,
            };
            gear::cpu_gear(&u, &x, &x, &mut store);
            twin_back(l, &store, capacity)
        } else {
            let u = wring::kernels::kv::KvStore::after_step(l, 0, 0, capacity);
            cache::cpu_store(&u, &x, &x, &mut store);
            let load = KvLoad {
                layout: l,
                compressed: capacity,
                upto: capacity,
            };
            let (mut k, mut v) = (vec![0.0; n], vec![0.0; n]);
            cache::cpu_load(&load, &store, &mut k, &mut v);
            [k, v].concat()
        };
        let e: f64 = back[..n]
            .iter()
            .zip(&x)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        e / n as f64
    };
    let (q, qs, ql, qls) = (err(0, 0), err(41, 0), err(0, 2), err(41, 2));
    assert!(qs < 0.5 * q, "outliers: {qs} against {q}");
    assert!(ql < q, "low rank: {ql} against {q}");
    assert!(
        qls < qs && qls < ql,
        "all three: {qls} against {qs} and {ql}"
    );
    // The outliers come back exactly: the largest spike is an outlier of its block.
    let l = gear_layout(2, false, capacity, 41, 2);
    let mut store = vec![0u32; l.words()];
    gear::cpu_gear(
        &KvGear {
            layout: l,
            compressed: 0,
            upto: capacity,
        },
        &x,
        &x,
        &mut store,
    );
    let back = twin_back(l, &store, capacity);
    let top = (0..n).max_by(|&i, &j| x[i].total_cmp(&x[j])).unwrap();
    assert_eq!(back[top], half::f16::from_f32(x[top]).to_f32());
}

/// GEAR's side data is counted in the bytes per position: at 2 bits with the recipe (41 outliers a side,
/// rank 2) on SmolLM2's heads, 922.5 + 1,440 / 30 layers ... per layer 30.75 B of outliers and 48 B of
/// factors, beside 96 B of codes and 24 B of statistics.
#[test]
fn gear_bytes_per_position_count_outliers_and_factors() {
    let l = gear_layout(2, false, 256, 41, 2);
    assert_eq!(gear::side_bytes_per_position(&l), 30.75 + 48.0);
    assert_eq!(l.bytes_per_position(), 96.0 + 24.0 + 30.75 + 48.0);
    let caps = crate::harness::ctx().caps();
    let plan = |u: KvGear| wring::kernels::Kernel::plan(&u, caps, Choice::Auto);
    assert!(
        plan(KvGear {
            layout: l,
            compressed: 0,
            upto: 64
        })
        .is_ok()
    );
    assert!(
        plan(KvGear {
            layout: l,
            compressed: 0,
            upto: 70
        })
        .is_err(),
        "not whole blocks"
    );
    let plain = KvLayout {
        outliers: 0,
        rank: 0,
        ..l
    };
    assert!(
        plan(KvGear {
            layout: plain,
            compressed: 0,
            upto: 64
        })
        .is_err(),
        "nothing for GEAR"
    );
    let too_many = KvLayout {
        outliers: 2049,
        ..l
    };
    assert!(
        plan(KvGear {
            layout: too_many,
            compressed: 0,
            upto: 64
        })
        .is_err()
    );
    let rank = KvLayout { rank: 5, ..l };
    assert!(
        plan(KvGear {
            layout: rank,
            compressed: 0,
            upto: 64
        })
        .is_err()
    );
    let _ = variant("kv_gear_load", "f32");
}
