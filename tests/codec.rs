//! The wavelet codec on real data (a crop of scikit-image's `astronaut` photo, a quarter second of
//! alsa-utils' speech sample): round trips, rate control, and corrupt or hostile streams, which must be
//! errors and never panics.

use std::path::Path;

use wring::codec::container::{self, BandHeader, Header, Kind, Tune};
use wring::codec::tree::Tree;
use wring::codec::{Decoded, Image, Options, Rate, decode, encode_audio, encode_image, io};
use wring::kernels::wavelet::{Mode, Wavelet};

use crate::harness::ctx;

fn photo() -> Image {
    io::read_image(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/astronaut_96x128.png"
    )))
    .unwrap()
}

/// A quarter second of alsa-utils' speech sample.
fn speech() -> wring::codec::Audio {
    io::read_wav(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/speech_12000.wav"
    )))
    .unwrap()
}

/// Signal-to-noise ratio in dB of `b` as a copy of `a`.
fn snr(a: &[i16], b: &[i16]) -> f64 {
    let signal: f64 = a.iter().map(|&v| f64::from(v).powi(2)).sum();
    let noise: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

fn image_of(d: Decoded) -> Image {
    match d {
        Decoded::Image(i) => i,
        Decoded::Audio(_) => panic!("an image stream decoded as audio"),
    }
}

#[test]
fn images_round_trip_and_quality_orders_rate_and_distortion() {
    let ctx = ctx();
    let img = photo();
    assert_eq!((img.width, img.height, img.channels), (128, 96, 3));
    let mut last = (0usize, 0f64);
    for q in [30.0, 60.0, 90.0] {
        let s = encode_image(
            ctx,
            &img,
            &Options {
                rate: Rate::Quality(q),
                ..Options::default()
            },
        )
        .unwrap();
        let out = image_of(decode(ctx, &s).unwrap());
        assert_eq!(
            (out.width, out.height, out.channels),
            (img.width, img.height, 3)
        );
        let p = psnr(&img.pixels, &out.pixels);
        eprintln!(
            "quality {q}: {} bytes ({:.3} bpp), PSNR {p:.2} dB",
            s.len(),
            s.len() as f64 * 8.0 / (128.0 * 96.0)
        );
        assert!(
            s.len() > last.0 && p > last.1,
            "higher quality must cost more and look better"
        );
        last = (s.len(), p);
    }
    assert!(last.1 > 40.0, "quality 90 reaches {:.2} dB", last.1);
    // Gray images and odd sizes.
    let gray = Image {
        width: 37,
        height: 21,
        channels: 1,
        pixels: img
            .pixels
            .iter()
            .step_by(3)
            .take(37 * 21)
            .copied()
            .collect(),
    };
    let s = encode_image(
        ctx,
        &gray,
        &Options {
            rate: Rate::Quality(95.0),
            ..Options::default()
        },
    )
    .unwrap();
    let out = image_of(decode(ctx, &s).unwrap());
    assert_eq!((out.width, out.height, out.channels), (37, 21, 1));
    assert!(psnr(&gray.pixels, &out.pixels) > 45.0);
}

#[test]
fn bpp_targets_are_met_from_below() {
    let ctx = ctx();
    let img = photo();
    for bpp in [0.25, 1.0] {
        let s = encode_image(
            ctx,
            &img,
            &Options {
                rate: Rate::Target(bpp),
                ..Options::default()
            },
        )
        .unwrap();
        let got = s.len() as f64 * 8.0 / (128.0 * 96.0);
        assert!(
            got <= bpp && got > 0.8 * bpp,
            "asked {bpp} bpp, got {got:.3}"
        );
    }
}

#[test]
fn audio_round_trips() {
    let ctx = ctx();
    let a = speech();
    let s = encode_audio(
        ctx,
        &a,
        &Options {
            rate: Rate::Target(64.0),
            ..Options::default()
        },
    )
    .unwrap();
    let seconds = a.samples.len() as f64 / f64::from(a.sample_rate);
    assert!(s.len() as f64 * 8.0 / 1000.0 / seconds <= 64.0);
    let Decoded::Audio(out) = decode(ctx, &s).unwrap() else {
        panic!("audio decoded as an image")
    };
    assert_eq!(
        (out.sample_rate, out.channels, out.samples.len()),
        (a.sample_rate, a.channels, a.samples.len())
    );
    let snr = snr(&a.samples, &out.samples);
    eprintln!("speech at 64 kbps: SNR {snr:.2} dB");
    assert!(snr > 25.0, "SNR {snr:.2} dB");
}

/// Tuned for hearing, speech keeps less of its waveform (a lower SNR than PSNR tuning's at the same rate:
/// the steps follow the ear, not the squared error), and the bands the quantizer empties are refilled
/// with noise (their levels are in the stream). Each tuning is refused for the other signal.
#[test]
fn hearing_tuning_trades_snr_for_the_spectrum() {
    let ctx = ctx();
    let a = speech();
    let at = |tune: Tune| {
        let s = encode_audio(
            ctx,
            &a,
            &Options {
                rate: Rate::Target(24.0),
                tune,
                ..Options::default()
            },
        )
        .unwrap();
        let Decoded::Audio(out) = decode(ctx, &s).unwrap() else {
            panic!("audio decoded as an image")
        };
        assert_eq!(out.samples.len(), a.samples.len());
        let snr = snr(&a.samples, &out.samples);
        let (h, _) = wring::codec::decode_coefficients(&s, &Default::default()).unwrap();
        let filled = h.bands.iter().filter(|b| b.noise > 0).count();
        eprintln!("{tune:?} at 24 kbps: SNR {snr:.2} dB, {filled} noise-filled bands");
        (snr, filled)
    };
    let (psnr, hearing) = (at(Tune::Psnr), at(Tune::Hearing));
    assert!(
        hearing.0 < psnr.0 && psnr.1 == 0 && hearing.1 > 0,
        "hearing {hearing:?} against psnr {psnr:?}"
    );
    let img = photo();
    let visual_audio = Options {
        tune: Tune::Visual,
        ..Options::default()
    };
    let hearing_image = Options {
        tune: Tune::Hearing,
        ..Options::default()
    };
    assert!(encode_audio(ctx, &a, &visual_audio).is_err());
    assert!(encode_image(ctx, &img, &hearing_image).is_err());
}

#[test]
fn corrupt_and_truncated_streams_are_errors() {
    let ctx = ctx();
    let img = Image {
        width: 16,
        height: 12,
        channels: 3,
        pixels: photo().pixels[..16 * 12 * 3].to_vec(),
    };
    let s = encode_image(
        ctx,
        &img,
        &Options {
            rate: Rate::Quality(80.0),
            ..Options::default()
        },
    )
    .unwrap();
    for len in 0..s.len() {
        assert!(
            decode(ctx, &s[..len]).is_err(),
            "a stream cut to {len} bytes decoded"
        );
    }
    for i in 0..s.len() {
        let mut bad = s.clone();
        bad[i] ^= 0x41;
        assert!(
            decode(ctx, &bad).is_err(),
            "a stream with byte {i} flipped decoded"
        );
    }
    assert!(
        decode(ctx, b"not a stream at all")
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
}

/// Hostile headers with a valid checksum: absurd shapes and counts are refused before anything is sized by
/// them.
#[test]
fn hostile_headers_are_refused() {
    let ctx = ctx();
    let base = Header {
        kind: Kind::Image,
        channels: 3,
        wavelet: Wavelet::Bior4_4,
        mode: Mode::Periodization,
        levels: 1,
        tune: Tune::Psnr,
        width: 8,
        height: 8,
        sample_rate: 0,
        step: 1.0,
        trees: vec![],
        bands: vec![],
    };
    let cases = [
        Header {
            width: 1 << 30,
            height: 1 << 30,
            ..base.clone()
        },
        Header {
            channels: 2,
            ..base.clone()
        },
        Header {
            levels: 40,
            ..base.clone()
        },
        Header {
            step: f32::NAN,
            ..base.clone()
        },
        Header {
            kind: Kind::Audio,
            height: 7,
            ..base.clone()
        },
        // Three packet trees are implied, none present.
        base.clone(),
        // Trees whose every flag splits, with no band headers after them.
        Header {
            trees: vec![Tree::full(4, 1); 3],
            ..base.clone()
        },
        // A 1x1 image of 12 levels in symmetric mode: 16.7 million subbands whose bands grow each level
        // (this used to allocate gigabytes from one header byte).
        Header {
            width: 1,
            height: 1,
            levels: 12,
            mode: Mode::Symmetric,
            ..base.clone()
        },
        // Audio at 0 Hz (hound panicked on writing it) and above any real rate.
        Header {
            kind: Kind::Audio,
            channels: 1,
            height: 1,
            sample_rate: 0,
            ..base.clone()
        },
        Header {
            kind: Kind::Audio,
            channels: 1,
            height: 1,
            sample_rate: 4_000_000_000,
            ..base.clone()
        },
    ];
    for h in cases {
        let start = std::time::Instant::now();
        let e = decode(ctx, &container::write(&h, &[])).unwrap_err();
        assert!(
            start.elapsed().as_secs_f64() < 1.0,
            "{h:?} took {:?}",
            start.elapsed()
        );
        eprintln!("{e}");
        assert!(
            matches!(
                e,
                wring::codec::CodecError::Corrupt(_) | wring::codec::CodecError::Request(_)
            ),
            "{e}"
        );
    }
    let mut future = container::write(&base, &[]);
    future[4] = 9;
    let n = future.len() - 4;
    let crc = crc32(&future[..n]);
    future[n..].copy_from_slice(&crc.to_le_bytes());
    assert!(
        decode(ctx, &future)
            .unwrap_err()
            .to_string()
            .contains("version")
    );
    // A hearing-tuned audio stream whose band headers carry a step scale or a noise level out of range.
    let hearing = |scale: i8, noise: u8| Header {
        kind: Kind::Audio,
        channels: 1,
        tune: Tune::Hearing,
        width: 64,
        height: 1,
        sample_rate: 8000,
        trees: vec![Tree::dyadic(2, 1)],
        bands: vec![
            BandHeader {
                scale,
                noise,
                ..Default::default()
            };
            2
        ],
        ..base.clone()
    };
    for (h, what) in [
        (hearing(100, 0), "scale"),
        (hearing(0, 200), "noise"),
        (
            Header {
                tune: Tune::Hearing,
                ..base.clone()
            },
            "does not apply",
        ),
    ] {
        let e = decode(ctx, &container::write(&h, &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{e}");
    }
    // A stream of the first format is refused by name, with what to do about it.
    future[4] = 1;
    let crc = crc32(&future[..n]);
    future[n..].copy_from_slice(&crc.to_le_bytes());
    let e = decode(ctx, &future).unwrap_err().to_string();
    assert!(e.contains("version 1") && e.contains("older wring"), "{e}");
}

/// CRC-32 (IEEE), bit by bit: an independent check of the container's checksum (and the PNG chunks
/// of the hostile cases).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
