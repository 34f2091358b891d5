//! `kv_store`: a step's keys and values written into a layer's compressed cache. The store is checked
//! through what it holds: the GPU's store is read back by `kv_load` (checked on its own against its twin)
//! over every position the step leaves filled, and compared with the twins of both. Each case starts from
//! a valid random store, so positions the step does not write must come back as they were.
//!
//! Budget: two codes off by one. The twin's arithmetic is the shader's (f16 rounding of the statistics,
//! one division, halves rounded up), but an adapter may divide with 2.5 ulp of error, and a quotient that
//! close to a half moves a code by one step of its group's scale; random inputs make that rare, and any
//! systematic error (a wrong rounding, a wrong channel or group) is far above it.

use wring::kernels::kv::{KvLoad, KvStore, cache};
use wring::kernels::{Choice, DType, Variant, check::Tolerance};

use super::{code_step_budget, layout, random_store, variant_bits};
use crate::harness::{Case, Rng, copy_into, guarded_upload};
use crate::kernels::{Planned, planned, variants};

fn store_case(v: &'static Variant, u: KvStore, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let l = u.layout;
    let mut store = random_store(&l, &mut rng);
    let n = u.pos * l.kv;
    let (k, vv) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
    let initial = store.clone();
    cache::cpu_store(&u, &k, &vv, &mut store);
    let back = KvLoad {
        layout: l,
        compressed: u.upto,
        upto: u.pos,
    };
    let (mut k_out, mut v_out) = (vec![0.0; n], vec![0.0; n]);
    cache::cpu_load(&back, &store, &mut k_out, &mut v_out);
    let expected = [k_out, v_out].concat();
    let budget = code_step_budget(&l, &expected, 2.0, 1e-10);
    Case {
        name: format!("kv_store variant={} {u:?} seed={seed}", v.name),
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
            // Zeroed as the twin's: a low-rank ring's read-back leaves positions before `upto` alone.
            let zeros = vec![0f32; n];
            let (ok, ov) = (
                guarded_upload(ctx, &[n], &zeros)?,
                guarded_upload(ctx, &[n], &zeros)?,
            );
            step.run(&back, &[("store", &ts), ("k", &ok), ("v", &ov)])?;
            copy_into(step, &ok, out, 0)?;
            copy_into(step, &ov, out, n)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_store") {
        let bits = variant_bits(&v.name);
        // (small channels, capacity, compressed, pos0, pos): a streaming step that compresses two key
        // groups, a prefill from empty, a decode step that completes a group, small channels whose ring
        // wraps; f16: steps with no codes.
        let shapes: &[(bool, usize, usize, usize, usize)] = if bits == 16 {
            &[
                (false, 40, 0, 5, 9),
                (true, 16, 0, 0, 16),
                (true, 9, 0, 8, 9),
            ]
        } else {
            &[
                (false, 160, 32, 100, 130),
                (false, 160, 0, 0, 100),
                (false, 160, 64, 128, 129),
                (true, 40, 8, 20, 27),
                (true, 40, 0, 0, 3),
            ]
        };
        for (i, &(small, capacity, compressed, pos0, pos)) in shapes.iter().enumerate() {
            let u = KvStore::after_step(layout(bits, small, capacity), compressed, pos0, pos);
            out.push(planned(v, move || store_case(v, u, 10 + i as u64)));
        }
        if bits == 16 {
            // The ring of a low-rank cache: a step that moves positions [8, 16) out of the ring.
            let u = KvStore::after_step(super::ring_layout(40), 8, 20, 27);
            out.push(planned(v, move || store_case(v, u, 17)));
        }
    }
    out
}

/// The twin's round trip is within half a code step of every input (plus the f16 rounding of the
/// statistics), at every width, and the positions it does not compress stay exact to f16.
#[test]
fn kv_store_round_trip_error_is_half_a_step() {
    for bits in [2, 4, 8] {
        let l = layout(bits, false, 160);
        let u = KvStore::after_step(l, 0, 0, 100);
        assert_eq!(u.upto, 64, "two whole key groups are 32 positions old");
        let mut rng = Rng::new(u64::from(bits));
        let n = u.pos * l.kv;
        let (k, v) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
        let mut store = vec![0u32; l.words()];
        cache::cpu_store(&u, &k, &v, &mut store);
        let back = KvLoad {
            layout: l,
            compressed: u.upto,
            upto: u.pos,
        };
        let (mut k2, mut v2) = (vec![0.0; n], vec![0.0; n]);
        cache::cpu_load(&back, &store, &mut k2, &mut v2);
        let half_step = 0.5 * 4.0 / ((1u32 << bits) - 1) as f32 * 1.002 + 2e-3;
        for (i, (a, b)) in k.iter().chain(&v).zip(k2.iter().chain(&v2)).enumerate() {
            let p = (i % n) / l.kv;
            let bound = if p < u.upto { half_step } else { 2e-3 };
            assert!(
                (a - b).abs() <= bound,
                "{bits} bits, value {i}: {a} came back as {b}"
            );
        }
    }
}

/// Refusals: a step that would leave more positions uncompressed than the ring holds, and a compressed
/// count that is not a whole number of key groups.
#[test]
fn kv_store_refuses_steps_that_do_not_fit() {
    let l = layout(4, false, 160);
    let caps = crate::harness::ctx().caps();
    let plan = |u: KvStore| wring::kernels::Kernel::plan(&u, caps, Choice::Auto);
    let over = KvStore {
        layout: l,
        compressed: 0,
        upto: 0,
        pos0: 0,
        pos: 100,
    };
    assert!(plan(over).is_err(), "100 positions in a ring of 64");
    let ragged = KvStore {
        upto: 70,
        ..KvStore::after_step(l, 0, 0, 100)
    };
    assert!(plan(ragged).is_err(), "70 is not a whole number of groups");
    assert!(plan(KvStore::after_step(l, 0, 0, 100)).is_ok());
}
