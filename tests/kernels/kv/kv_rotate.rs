//! `kv_rotate`: the orthonormal Hadamard rotation of query and key head vectors in place. Output: all of q
//! then all of the key cache (positions before the step's must survive), both sentinel-guarded. Budget:
//! NMSE 1e-10 (the twin runs the shader's butterfly stages in the same order; only the final scaling could
//! be fused differently).

use wring::kernels::kv::{KvRotate, rotate};
use wring::kernels::{Choice, DType, Variant, check::Tolerance};

use crate::harness::{Case, Rng, copy_into, guarded_upload};
use crate::kernels::{Planned, planned, variants};

fn rotate_case(v: &'static Variant, u: KvRotate, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let hd = u.head_dim;
    let (q0, k0) = (
        rng.vec(u.rows_q * hd, -2.0, 2.0),
        rng.vec((u.k_first + u.rows_k) * hd, -2.0, 2.0),
    );
    let (mut q, mut k) = (q0.clone(), k0.clone());
    rotate::cpu(&u, &mut q, &mut k);
    let expected = [q, k].concat();
    Case {
        name: format!("kv_rotate variant={} {u:?} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-10),
        out_dtype: DType::F32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let (tq, tk) = (
                guarded_upload(ctx, &[q0.len()], &q0)?,
                guarded_upload(ctx, &[k0.len()], &k0)?,
            );
            step.run_with(&u, Choice::Force(&v.name), &[("q", &tq), ("k", &tk)])?;
            copy_into(step, &tq, out, 0)?;
            copy_into(step, &tk, out, q0.len())
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_rotate") {
        // (head_dim, rows_q, k_first, rows_k): SmolLM2's decode and a prefill step after 5 positions,
        // the smallest head, the largest (more butterflies than invocations), and keys from the first position.
        for (i, &(head_dim, rows_q, k_first, rows_k)) in [
            (64, 9, 21, 3),
            (64, 27, 15, 9),
            (2, 3, 1, 2),
            (256, 4, 2, 2),
            (128, 2, 0, 1),
        ]
        .iter()
        .enumerate()
        {
            let u = KvRotate {
                head_dim,
                rows_q,
                k_first,
                rows_k,
            };
            out.push(planned(v, move || rotate_case(v, u, i as u64)));
        }
    }
    out
}

/// The twin's rotation is orthonormal and its own inverse (the normalized Sylvester matrix is symmetric),
/// so it keeps every dot product: the property that leaves attention unchanged.
#[test]
fn hadamard_keeps_dot_products_and_inverts_itself() {
    let mut rng = Rng::new(9);
    let (a, b) = (rng.vec(64, -1.0, 1.0), rng.vec(64, -1.0, 1.0));
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let (mut ra, mut rb) = (a.clone(), b.clone());
    rotate::hadamard(&mut ra);
    rotate::hadamard(&mut rb);
    assert!((dot(&a, &b) - dot(&ra, &rb)).abs() < 1e-5);
    rotate::hadamard(&mut ra);
    for (x, y) in a.iter().zip(&ra) {
        assert!((x - y).abs() < 1e-6);
    }
    // A single large channel is spread evenly: |x| / 8 on all 64.
    let mut spike = vec![0.0; 64];
    spike[5] = 8.0;
    rotate::hadamard(&mut spike);
    assert!(spike.iter().all(|x| (x.abs() - 1.0).abs() < 1e-6));
}
