//! The KV-cache family's case generators, and the store every case starts from.

pub mod kv_load;
pub mod kv_rotate;
pub mod kv_store;

use half::f16;
use wring::kernels::kv::KvLayout;

use crate::harness::Rng;

/// A layer's cache filled with valid random content: codes anywhere, statistics of a positive f16 scale
/// up to 0.1 and a minimum in [-1, 1], ring values in [-2, 2] (random words would hold NaN and infinite
/// f16 values, which no store writes).
pub fn random_store(l: &KvLayout, rng: &mut Rng) -> Vec<u32> {
    let words = l.words();
    let pair = |a: f32, b: f32| {
        u32::from(f16::from_f32(a).to_bits()) | (u32::from(f16::from_f32(b).to_bits()) << 16)
    };
    let mut store: Vec<u32> = (0..words).map(|_| rng.next_u64() as u32).collect();
    // The statistics and the ring lie after the codes; every word there is rewritten as a valid pair.
    let code_words = if l.quantized() {
        2 * l.capacity * l.kv * l.bits as usize / 32
    } else {
        0
    };
    let ring_words = l.ring() * l.kv;
    let stats_end = words - ring_words;
    for w in &mut store[code_words..stats_end] {
        *w = pair(rng.uniform(0.001, 0.1), rng.uniform(-1.0, 1.0));
    }
    for w in &mut store[stats_end..] {
        *w = pair(rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0));
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

/// The bits a variant stores.
pub fn variant_bits(name: &str) -> u32 {
    match name {
        "q8" => 8,
        "q4" => 4,
        "q2" => 2,
        _ => 16,
    }
}
