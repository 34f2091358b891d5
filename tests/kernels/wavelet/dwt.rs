//! `dwt`: one level of the wavelet transform along one axis, through whole packet transforms (every
//! level's launches use the variant of the direction, sample type and filter length, so every wavelet
//! forces its taps' variants). Budget against the twins: NMSE 1e-10 in f32 (the same arithmetic in the same
//! order; only the device's fused multiply-adds may differ), 1e-6 in f16 (a fused multiply-add can move a
//! sum across an f16 rounding boundary and change one stored value by an f16 ulp). Checks against
//! pywavelets live in `tests/wavelet.rs`.

use half::f16;
use wring::codec::Packet;
use wring::kernels::check::Tolerance;
use wring::kernels::wavelet::{Mode, Wavelet};
use wring::kernels::{DType, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variant};

/// The dwt variant every launch of `p` in one direction uses.
fn packet_variant(p: &Packet, forward: bool) -> &'static Variant {
    let name = format!(
        "{}_{}_t{}",
        if forward { "forward" } else { "inverse" },
        p.dtype.name(),
        p.wavelet.taps()
    );
    variant("dwt", &name)
}

fn planned_packet(p: Packet, forward: bool, seed: u64) -> Planned {
    let v = packet_variant(&p, forward);
    planned(v, move || packet_case(p.clone(), forward, seed))
}

fn packet_case(p: Packet, forward: bool, seed: u64) -> Case<'static> {
    let mut rng = Rng::new(seed);
    let f16 = p.dtype == DType::F16;
    let mut input = rng.vec(
        if forward {
            p.signal_len()
        } else {
            p.coeff_len()
        },
        -4.0,
        4.0,
    );
    if f16 {
        input
            .iter_mut()
            .for_each(|v| *v = f16::from_f32(*v).to_f32());
    }
    let expected = if forward {
        p.forward_cpu(&input)
    } else {
        p.inverse_cpu(&input)
    };
    Case {
        name: format!("dwt packet forward={forward} {p:?} seed={seed}"),
        tol: Tolerance::Nmse(if f16 { 1e-6 } else { 1e-10 }),
        out_dtype: p.dtype,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let tx = if f16 {
                ctx.upload(
                    &[input.len()],
                    &input.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
                )?
            } else {
                ctx.upload(&[input.len()], &input)?
            };
            p.run_into(ctx, step, &tx, forward, out)
                .map_err(|e| match e {
                    wring::codec::CodecError::Runtime(e) => e,
                    other => wring::runtime::Error::Shape(other.to_string()),
                })
        }),
        needs_f16: f16,
        needs_subgroup: false,
    }
}

/// GPU against the twins, both directions, on shapes the fixtures do not reach: 1x1 images, single
/// samples, odd sizes, tall and wide images, many channels, deep trees; f16 on every shape with
/// periodization, the mode the codec uses.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    let shapes: &[(usize, &[usize], usize)] = &[
        (1, &[1, 1], 3),
        (1, &[1], 4),
        (2, &[7], 2),
        (3, &[5, 9], 2),
        (40, &[3, 2], 1),
        (1, &[1, 33], 2),
        (2, &[64, 48], 3),
        (5, &[257], 5),
    ];
    let mut seed = 0;
    for &(channels, dims, levels) in shapes {
        for w in Wavelet::ALL {
            for mode in Mode::ALL {
                let p = Packet::new(w, mode, levels, channels, dims).unwrap();
                for forward in [true, false] {
                    seed += 1;
                    out.push(planned_packet(p.clone(), forward, seed));
                    // f16 on every shape with periodization, the mode the codec uses.
                    if mode == Mode::Periodization {
                        let p16 = p.clone().with_dtype(DType::F16).unwrap();
                        out.push(planned_packet(p16, forward, seed));
                    }
                }
            }
        }
    }
    out
}
