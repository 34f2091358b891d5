//! The KV-cache family's case generators, and the store every case starts from.

pub mod attn_paged;
pub mod kv_ems;
pub mod kv_ems_compact;
pub mod kv_ems_score;
pub mod kv_gear;
pub mod kv_gear_load;
pub mod kv_load;
pub mod kv_paged_seal;
pub mod kv_paged_store;
pub mod kv_rotate;
pub mod kv_store;

use half::f16;
use wring::kernels::kv::KvLayout;
use wring::kernels::{Choice, DType, Kernel, Variant, check::Tolerance};

use crate::harness::{Case, Rng, copy_into, guarded_upload};

/// A case of a kernel that reads a layer's cache (`store`, from a valid random one) into `n` keys and
/// `n` values that start random (positions it leaves alone must keep them), against `twin`; budget NMSE
/// 1e-10 (each value is a few multiply-adds of stored f16 numbers; an adapter may fuse them).
pub fn read_case<U: Kernel + std::fmt::Debug + 'static>(
    v: &'static Variant,
    u: U,
    layout: &KvLayout,
    n: usize,
    seed: u64,
    twin: impl Fn(&U, &[u32], &mut [f32], &mut [f32]),
) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let store = random_store(layout, &mut rng);
    let (k0, v0) = (rng.vec(n, -3.0, 3.0), rng.vec(n, -3.0, 3.0));
    let (mut k, mut vv) = (k0.clone(), v0.clone());
    twin(&u, &store, &mut k, &mut vv);
    let expected = [k, vv].concat();
    Case {
        name: format!("{} variant={} {u:?} seed={seed}", u.kernel(), v.name),
        tol: Tolerance::Nmse(1e-10),
        out_dtype: DType::F32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let ts = ctx.upload(&[store.len()], &store)?;
            let (tk, tv) = (
                guarded_upload(ctx, &[n], &k0)?,
                guarded_upload(ctx, &[n], &v0)?,
            );
            step.run_with(
                &u,
                Choice::Force(&v.name),
                &[("store", &ts), ("k", &tk), ("v", &tv)],
            )?;
            copy_into(step, &tk, out, 0)?;
            copy_into(step, &tv, out, n)
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

/// A layer's cache filled with valid random content: codes anywhere, statistics of a positive f16 scale
/// up to 0.1 and a minimum in [-1, 1], ring values in [-2, 2] (random words would hold NaN and infinite
/// f16 values, which no store writes).
pub fn random_store(l: &KvLayout, rng: &mut Rng) -> Vec<u32> {
    let words = l.words();
    let pair = |a: f32, b: f32| {
        u32::from(f16::from_f32(a).to_bits()) | (u32::from(f16::from_f32(b).to_bits()) << 16)
    };
    let mut store: Vec<u32> = (0..words).map(|_| rng.next_u64() as u32).collect();
    // [codes, key stats, value stats, ring keys, ring values, GEAR outliers, GEAR factors, end]: every
    // word after the codes is rewritten as a valid pair, outliers as a value and an index in the block.
    let o = l.offsets();
    for w in &mut store[o[2]..o[4]] {
        *w = pair(rng.uniform(0.001, 0.1), rng.uniform(-1.0, 1.0));
    }
    for w in &mut store[o[4]..o[6]] {
        *w = pair(rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0));
    }
    // Each list names distinct entries of its block (kv_gear writes no entry twice; a repeated index
    // would make the GPU's concurrent writes race).
    let block = l.group * l.value_group;
    let list = 2 * l.outliers;
    if list > 0 {
        for unit in store[o[6]..o[7]].chunks_mut(list) {
            let mut entries: Vec<u32> = (0..block as u32).collect();
            for (j, w) in unit.iter_mut().enumerate() {
                let pick = j + (rng.next_u64() % (block - j) as u64) as usize;
                entries.swap(j, pick);
                *w = (pair(rng.uniform(-8.0, 8.0), 0.0) & 0xffff) | (entries[j] << 16);
            }
        }
    }
    for w in &mut store[o[7]..o[8]] {
        *w = pair(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5));
    }
    store
}

/// A layout with SmolLM2's channels (3 heads of 64) or a small one, at `bits`.
pub fn layout(bits: u32, small: bool, capacity: usize) -> KvLayout {
    let (kv, value_group, group, window) = if small {
        (16, 16, 8, 4)
    } else {
        (192, 64, 32, 32)
    };
    KvLayout {
        bits,
        kv,
        value_group,
        capacity,
        group: if bits == 16 { 1 } else { group },
        window: if bits == 16 { capacity } else { window },
        outliers: 0,
        rank: 0,
    }
}

/// A GEAR layout: SmolLM2's channels in blocks of 64 tokens x 64 channels with 41 outliers a side (2 %)
/// and rank 2 (the reference recipe), or two heads of 16 channels in blocks of 8 tokens (2-bit codes fill
/// a word with 16 channels); no
/// window (GEAR compresses its 64-token buffer when it is full).
pub fn gear_layout(
    bits: u32,
    small: bool,
    capacity: usize,
    outliers: usize,
    rank: usize,
) -> KvLayout {
    let (kv, value_group, group) = if small { (32, 16, 8) } else { (192, 64, 64) };
    KvLayout {
        kv,
        value_group,
        group,
        window: 0,
        outliers,
        rank,
        ..layout(bits, small, capacity)
    }
}

/// The ring of a low-rank cache: 16 bits, small channels, a window of 4 and groups of 8 (12 slots).
pub fn ring_layout(capacity: usize) -> KvLayout {
    KvLayout {
        window: 4,
        group: 8,
        ..layout(16, true, capacity)
    }
}

/// An NMSE budget of `codes` values each off by one code step of the coarsest group (a range of 4: inputs
/// in [-2, 2]) over the energy of `expected`, at least `floor`; no steps in f16.
pub fn code_step_budget(l: &KvLayout, expected: &[f32], codes: f64, floor: f64) -> f64 {
    let step = if l.quantized() {
        4.0 / ((1u32 << l.bits) - 1) as f64
    } else {
        0.0
    };
    let energy: f64 = expected.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (codes * step * step / energy).max(floor)
}

/// The bits a variant stores.
pub fn variant_bits(name: &str) -> u32 {
    match name {
        "q8" => 8,
        "q4" => 4,
        "q2" => 2,
        _ => 16,
    }
}
