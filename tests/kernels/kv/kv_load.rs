//! `kv_load`: a layer's compressed cache materialized as f32 keys and values. Each case starts from a
//! valid random store (codes, statistics, ring) and checks both outputs, sentinel-guarded. Budget: NMSE
//! 1e-10 (each value is one multiply-add of stored f16 numbers; an adapter may fuse it, the twin does not).

use wring::kernels::Variant;
use wring::kernels::kv::{KvLoad, cache};

use super::{layout, read_case, variant_bits};
use crate::harness::Case;
use crate::kernels::{Planned, planned, variants};

fn load_case(v: &'static Variant, u: KvLoad, seed: u64) -> Case<'static> {
    let n = u.upto * u.layout.kv;
    read_case(v, u, &u.layout, n, seed, cache::cpu_load)
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_load") {
        let bits = variant_bits(&v.name);
        // (small channels, capacity, compressed, upto): SmolLM2's channels with codes and a ring, the ring
        // alone, a full ring; small channels whose ring wraps around (positions 24..31 in 12 slots).
        let shapes: &[(bool, usize, usize, usize)] = if bits == 16 {
            &[(false, 40, 0, 37), (true, 16, 0, 16), (true, 9, 0, 1)]
        } else {
            &[
                (false, 160, 64, 104),
                (false, 160, 0, 20),
                (false, 96, 32, 96),
                (true, 40, 24, 31),
                (true, 40, 8, 8),
            ]
        };
        for (i, &(small, capacity, compressed, upto)) in shapes.iter().enumerate() {
            let u = KvLoad {
                layout: layout(bits, small, capacity),
                compressed,
                upto,
            };
            out.push(planned(v, move || load_case(v, u, i as u64)));
        }
        if bits == 16 {
            // The ring of a low-rank cache: 16 bits with a window, positions before `compressed` left
            // alone (rebuilt from features by other kernels).
            let u = KvLoad {
                layout: super::ring_layout(40),
                compressed: 24,
                upto: 31,
            };
            out.push(planned(v, move || load_case(v, u, 7)));
        }
    }
    out
}

/// The twin decodes what it is given: a code of 3 with scale 0.5 and minimum -1 is 0.5, and the ring's
/// f16 pair comes back in order.
#[test]
fn kv_load_twin_decodes_codes_and_ring() {
    let l = layout(4, true, 40);
    let mut store = vec![0u32; l.words()];
    let u = KvLoad {
        layout: l,
        compressed: 8,
        upto: 9,
    };
    // Position 0, channel 1 (4 bits each, channel 0 in the low bits): code 3.
    store[0] = 3 << 4;
    let stat = |d: f32, m: f32| {
        u32::from(half::f16::from_f32(d).to_bits())
            | (u32::from(half::f16::from_f32(m).to_bits()) << 16)
    };
    let (cw, kgroups) = (l.capacity * l.kv * 4 / 32, l.capacity.div_ceil(l.group));
    let k_stats = 2 * cw;
    let v_stats = k_stats + kgroups * l.kv;
    store[k_stats + 1] = stat(0.5, -1.0);
    store[v_stats] = stat(0.25, 2.0);
    let ring_k = v_stats + l.capacity * (l.kv / l.value_group);
    // Position 8 lives in slot 8 % 12 = 8 of the ring.
    store[ring_k + 8 * l.kv / 2] = stat(1.5, -0.75);
    let (mut k, mut v) = (vec![0.0; 9 * 16], vec![0.0; 9 * 16]);
    cache::cpu_load(&u, &store, &mut k, &mut v);
    assert_eq!(k[1], 0.5);
    assert_eq!(k[0], 0.0, "channel 0 has code 0 and a zero statistic");
    assert_eq!(v[0], 2.0, "value code 0 is the minimum");
    assert_eq!((k[8 * 16], k[8 * 16 + 1]), (1.5, -0.75));
}
