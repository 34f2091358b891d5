//! `kv_ems_score` and `kv_ems_compact`: EMS's score accumulation and evict-then-merge.
//!
//! kv_ems_score: random softmax rows and a random earlier state; the accumulated state (acc, seen, obs)
//! against the twin. Budget NMSE 1e-10 (sums of a few products in the twin's order).
//!
//! kv_ems_compact: a random cache and state; the kept slots' keys and values and their state against the
//! twin. Budget NMSE 1e-8: norms and cosines are f32 sums whose order the twin follows, but an adapter may
//! fuse their multiply-adds; a cosine tie broken the other way would move a merge and show far above it.

use wring::kernels::kv::{EmsLayout, KvEmsCompact, KvEmsScore, ems};
use wring::kernels::tensor::CopyWords;
use wring::kernels::{Choice, DType, Variant, check::Tolerance};

use crate::harness::{Case, Rng, copy_into, guarded_upload};
use crate::kernels::{Planned, planned, variants};

/// SmolLM2's heads (9 query heads over 3 of 64 dimensions), or a small shape (4 over 2 of 8).
fn layout(small: bool, capacity: usize, budget: usize, window: usize) -> EmsLayout {
    let (n_heads, n_kv_heads, head_dim) = if small { (4, 2, 8) } else { (9, 3, 64) };
    EmsLayout {
        n_heads,
        n_kv_heads,
        head_dim,
        capacity,
        budget,
        window,
    }
}

/// A state whose scores are valid: acc and obs in [0, 2), seen a whole count in [1, 40]; the scratch
/// arrays random.
fn random_state(l: &EmsLayout, rng: &mut Rng) -> Vec<u32> {
    let a = l.n_kv_heads * l.capacity;
    let mut s: Vec<u32> = (0..l.state_words())
        .map(|_| rng.next_u64() as u32)
        .collect();
    for i in 0..a {
        s[i] = rng.uniform(0.0, 2.0).to_bits();
        s[a + i] = ((1 + rng.next_u64() % 40) as f32).to_bits();
        s[2 * a + i] = rng.uniform(0.0, 0.2).to_bits();
    }
    s
}

/// The state's f32 arrays (acc, seen, obs), copied into `out` at `at`.
fn copy_scores(
    step: &mut wring::runtime::Step<'_>,
    l: &EmsLayout,
    state: &wring::runtime::Tensor,
    out: &wring::runtime::Tensor,
    at: usize,
) -> wring::runtime::Result<()> {
    let unit = CopyWords {
        words: 3 * l.n_kv_heads * l.capacity,
        src_offset: 0,
        dst_offset: at,
    };
    step.run(&unit, &[("src", state), ("dst", out)])
}

fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

fn score_case(v: &'static Variant, u: KvEmsScore, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let l = u.layout;
    let state0 = random_state(&l, &mut rng);
    let n = u.cache_pos + u.tokens;
    let probs = rng.vec(u.tokens * l.n_heads * n, 0.0, 0.1);
    let mut state = state0.clone();
    ems::cpu_score(&u, &probs, &mut state);
    let expected = as_f32(&state[..3 * l.n_kv_heads * l.capacity]);
    Case {
        name: format!("kv_ems_score variant={} {u:?} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-10),
        out_dtype: DType::F32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let tp = ctx.upload(&[probs.len()], &probs)?;
            let ts = guarded_upload(ctx, &[state0.len()], &state0)?;
            step.run_with(
                &u,
                Choice::Force(&v.name),
                &[("probs", &tp), ("state", &ts)],
            )?;
            copy_scores(step, &l, &ts, out, 0)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

fn compact_case(v: &'static Variant, u: KvEmsCompact, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let l = u.layout;
    let state0 = random_state(&l, &mut rng);
    let values = l.capacity * l.n_kv_heads * l.head_dim;
    let (k0, v0) = (rng.vec(values, -2.0, 2.0), rng.vec(values, -2.0, 2.0));
    let (mut k, mut vv, mut state) = (k0.clone(), v0.clone(), state0.clone());
    ems::cpu_compact(&u, &mut k, &mut vv, &mut state);
    // Slots past the budget hold what was there (moved-from rows): compared too, as the twin leaves them.
    let expected = [k, vv, as_f32(&state[..3 * l.n_kv_heads * l.capacity])].concat();
    Case {
        name: format!("kv_ems_compact variant={} {u:?} seed={seed}", v.name),
        tol: Tolerance::Nmse(1e-8),
        out_dtype: DType::F32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let tk = guarded_upload(ctx, &[values], &k0)?;
            let tv = guarded_upload(ctx, &[values], &v0)?;
            let ts = guarded_upload(ctx, &[state0.len()], &state0)?;
            step.run_with(
                &u,
                Choice::Force(&v.name),
                &[("k", &tk), ("v", &tv), ("state", &ts)],
            )?;
            copy_into(step, &tk, out, 0)?;
            copy_into(step, &tv, out, values)?;
            copy_scores(step, &l, &ts, out, 2 * values)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_ems_score") {
        // (small, capacity, budget, cache_pos, tokens): a streaming step after a full budget, a prefill,
        // one decode token, small heads.
        let shapes: &[(bool, usize, usize, usize, usize)] = &[
            (false, 320, 256, 256, 32),
            (false, 320, 256, 0, 40),
            (false, 320, 256, 256, 1),
            (true, 64, 16, 16, 20),
        ];
        for (i, &(small, capacity, budget, cache_pos, tokens)) in shapes.iter().enumerate() {
            let u = KvEmsScore {
                layout: layout(small, capacity, budget, 32.min(budget - 1)),
                cache_pos,
                tokens,
            };
            out.push(planned(v, move || score_case(v, u, 50 + i as u64)));
        }
    }
    out
}

/// `kv_ems_compact`'s cases (its own catalogue entry, `kv_ems_compact.rs`).
pub fn compact_cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_ems_compact") {
        // (small, capacity, budget, window, n): a streaming step past the budget (32 removed: 16 merged,
        // 16 evicted), a decode token past it (one merged), a long prefill, small heads.
        let shapes: &[(bool, usize, usize, usize, usize)] = &[
            (false, 320, 256, 32, 288),
            (false, 320, 256, 32, 257),
            (false, 1024, 128, 32, 1000),
            (true, 64, 16, 4, 40),
        ];
        for (i, &(small, capacity, budget, window, n)) in shapes.iter().enumerate() {
            let u = KvEmsCompact {
                layout: layout(small, capacity, budget, window),
                n,
            };
            out.push(planned(v, move || compact_case(v, u, 60 + i as u64)));
        }
    }
    out
}

/// The twin does what EMS says on a hand-made head: the best scored old slot stays, a slot whose key
/// points the same way as a center is merged into it (the center keeps its key norm, its value becomes
/// the weighted mean), the worst is dropped, and the window is kept as it is.
#[test]
fn ems_twin_keeps_merges_and_evicts() {
    // One head of 2 dimensions; budget 2 with a window of 1: one center, 4 slots -> 2 removed (1 merged,
    // 1 evicted).
    let l = EmsLayout {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 2,
        capacity: 4,
        budget: 2,
        window: 1,
    };
    let mut k = vec![2.0, 0.0, 1.0, 0.1, 0.0, 1.0, 5.0, 5.0];
    let mut v = vec![1.0, 1.0, 3.0, 3.0, 9.0, 9.0, 7.0, 7.0];
    let mut state = vec![0u32; l.state_words()];
    // acc / seen: slot 0 scores 0.6, slot 1 0.3, slot 2 0.1; slot 3 is the window.
    for (j, acc) in [0.6f32, 0.3, 0.1, 0.0].iter().enumerate() {
        state[j] = acc.to_bits();
        state[4 + j] = 1.0f32.to_bits();
    }
    ems::cpu_compact(
        &KvEmsCompact { layout: l, n: 4 },
        &mut k,
        &mut v,
        &mut state,
    );
    // Slot 0 (the center) took in slot 1 (cosine ~1); slot 2 (orthogonal, lowest) is gone; slot 3 moved
    // to slot 1.
    let norm = (k[0] * k[0] + k[1] * k[1]).sqrt();
    assert!(
        (norm - 2.0).abs() < 1e-5,
        "the center keeps its key norm: {norm}"
    );
    assert!(
        k[1] > 0.0 && k[1] < 0.1,
        "its direction moves toward the merged key: {:?}",
        &k[..2]
    );
    let w0 = 0.6 + 1e-6;
    let w1 = 0.3 + 1e-6;
    assert!(
        (v[0] - (w0 * 1.0 + w1 * 3.0) / (w0 + w1)).abs() < 1e-5,
        "{}",
        v[0]
    );
    assert_eq!(
        (k[2], k[3], v[2]),
        (5.0, 5.0, 7.0),
        "the window's slot moved down"
    );
    assert!(
        (f32::from_bits(state[0]) - 0.9).abs() < 1e-6,
        "the center's attention adds up"
    );
}
