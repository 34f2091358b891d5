//! Wavelet packet transforms against pywavelets on real data (a photo crop, an RGB crop, speech; recorded
//! by tools/fixtures/wavelet_reference.py) and against the CPU twins on odd shapes, through the harness.
//!
//! Error budget: coefficients within 1e-5 of pywavelets relative to the largest coefficient of the case
//! (pywavelets computes in f64, wring in f32 with taps accumulated in order: the error observed is ~1e-7),
//! reconstruction within 1e-5 relative to the largest sample. GPU against twin: NMSE 1e-10 (the same
//! arithmetic in the same order; only the device's fused multiply-adds may differ).
//!
//! f16 variants (samples stored as f16, filters and sums in f32): against pywavelets within 4e-3 relative
//! per case (each level rounds its output to f16, 2^-11 relative, and the input is rounded once; two
//! levels of bior4.4 observed ~1e-3); GPU against the twin NMSE 1e-6, because a fused multiply-add can move
//! a sum across an f16 rounding boundary and change one stored value by an f16 ulp.

use half::f16;
use wring::codec::Packet;
use wring::kernels::DType;
use wring::kernels::wavelet::{Mode, Wavelet};

use crate::fixture::{self, Fixture};
use crate::harness::ctx;

/// max |a - b| / max |b|, after checking that a is finite.
fn relative_error(a: &[f32], b: &[f32], what: &str) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    assert!(a.iter().all(|v| v.is_finite()), "{what}: NaN or Inf");
    let scale = b
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| {
        m.max((f64::from(x) - f64::from(y)).abs())
    }) / scale
}

/// Each recorded case: its name, the input, pywavelets' coefficients, and the transform.
fn fixture_cases(fx: &Fixture) -> Vec<(String, &[f32], &[f32], Packet)> {
    let index = &fx.index;
    let cases = index["cases"].as_array().unwrap().iter().map(|case| {
        let (x, xshape) = fx.array(&index["inputs"][case["input"].as_str().unwrap()]);
        let (want, _) = fx.array(&case["coeffs"]);
        let wavelet = Wavelet::from_name(case["wavelet"].as_str().unwrap()).unwrap();
        let mode = Mode::from_name(case["mode"].as_str().unwrap()).unwrap();
        let level = case["level"].as_u64().unwrap() as usize;
        let p = Packet::new(wavelet, mode, level, xshape[0], &xshape[1..]).unwrap();
        (
            format!(
                "{} {} {} level {level}",
                case["input"],
                wavelet.name(),
                mode.name()
            ),
            x,
            want,
            p,
        )
    });
    cases.collect()
}

#[test]
fn filters_are_pywavelets() {
    let fx = fixture::load("wavelet_reference");
    let index = &fx.index;
    for w in Wavelet::ALL {
        let want = &index["filters"][w.name()];
        for (name, got) in ["dec_lo", "dec_hi", "rec_lo", "rec_hi"]
            .iter()
            .zip(w.filters())
        {
            let want: Vec<f64> = want[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            // serde_json's default float parsing may be one ulp off the printed value.
            assert_eq!(got.len(), want.len(), "{} {name}", w.name());
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= 1e-15 * e.abs().max(1e-300),
                    "{} {name}: {g} vs {e}",
                    w.name()
                );
            }
        }
    }
}

/// Every wavelet, mode and level on the three real inputs: the GPU's coefficients and the twin's against
/// pywavelets, and the GPU's inverse of pywavelets' coefficients against the input.
#[test]
fn packets_match_pywavelets_on_real_data() {
    let fx = fixture::load("wavelet_reference");
    let ctx = ctx();
    let mut worst = (0f64, 0f64);
    for (name, x, want, p) in fixture_cases(&fx) {
        let mut step = ctx.step(&name);
        let tx = ctx.upload(&[x.len()], x).unwrap();
        let coeffs = p.forward(ctx, &mut step, &tx).unwrap();
        let tw = ctx.upload(&[want.len()], want).unwrap();
        let back = p.inverse(ctx, &mut step, &tw).unwrap();
        step.submit().unwrap();
        let got: Vec<f32> = ctx.read(&coeffs).unwrap();
        let e = relative_error(&got, want, &name);
        assert!(
            e <= 1e-5,
            "{name}: GPU coefficients off by {e:.2e} relative"
        );
        let e_twin = relative_error(&p.forward_cpu(x), want, &name);
        assert!(
            e_twin <= 1e-5,
            "{name}: twin coefficients off by {e_twin:.2e} relative"
        );
        let rec: Vec<f32> = ctx.read(&back).unwrap();
        let r = relative_error(&rec, x, &name);
        assert!(r <= 1e-5, "{name}: reconstruction off by {r:.2e} relative");
        worst = (worst.0.max(e), worst.1.max(r));
    }
    eprintln!(
        "worst relative error against pywavelets: coefficients {:.2e}, reconstruction {:.2e}",
        worst.0, worst.1
    );
}

/// The f16 twin of pywavelets' result: the same transform on f16 samples, checked against the f64
/// reference, GPU and twin alike.
#[test]
fn f16_packets_match_pywavelets_on_real_data() {
    let fx = fixture::load("wavelet_reference");
    let ctx = ctx();
    if !ctx.caps().f16 {
        eprintln!("skipped: the adapter has no SHADER_F16");
        return;
    }
    let mut worst = (0f64, 0f64);
    let mut cases = 0;
    for (name, x, want, p) in fixture_cases(&fx) {
        let p = p.with_dtype(DType::F16).unwrap();
        let name = format!("f16 {name}");
        let halves = |v: &[f32]| v.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
        let mut step = ctx.step(&name);
        let tx = ctx.upload(&[x.len()], &halves(x)).unwrap();
        let coeffs = p.forward(ctx, &mut step, &tx).unwrap();
        let tw = ctx.upload(&[want.len()], &halves(want)).unwrap();
        let back = p.inverse(ctx, &mut step, &tw).unwrap();
        step.submit().unwrap();
        let widen = |v: Vec<f16>| v.into_iter().map(f32::from).collect::<Vec<_>>();
        let got = widen(ctx.read(&coeffs).unwrap());
        let e = relative_error(&got, want, &name);
        assert!(
            e <= 4e-3,
            "{name}: GPU coefficients off by {e:.2e} relative"
        );
        let rounded: Vec<f32> = halves(x).into_iter().map(f32::from).collect();
        let e_twin = relative_error(&p.forward_cpu(&rounded), want, &name);
        assert!(
            e_twin <= 4e-3,
            "{name}: twin coefficients off by {e_twin:.2e} relative"
        );
        let r = relative_error(&widen(ctx.read(&back).unwrap()), x, &name);
        assert!(r <= 4e-3, "{name}: reconstruction off by {r:.2e} relative");
        worst = (worst.0.max(e), worst.1.max(r));
        cases += 1;
    }
    assert!(cases > 100);
    eprintln!(
        "f16: worst relative error against pywavelets: coefficients {:.2e}, reconstruction {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn packet_shapes_are_checked() {
    assert!(Packet::new(Wavelet::Haar, Mode::Zero, 1, 1, &[]).is_err());
    assert!(Packet::new(Wavelet::Haar, Mode::Zero, 1, 1, &[2, 0]).is_err());
    assert!(Packet::new(Wavelet::Haar, Mode::Zero, 1, 0, &[2]).is_err());
    assert!(Packet::new(Wavelet::Haar, Mode::Periodization, 17, 1, &[2]).is_err());
    assert!(
        Packet::new(Wavelet::Db4, Mode::Symmetric, 16, 1, &[100_000, 100_000]).is_err(),
        "sizes beyond 32-bit indexing"
    );
    let p = Packet::new(Wavelet::Bior4_4, Mode::Periodization, 2, 3, &[27, 34]).unwrap();
    assert_eq!(p.level_dims(), vec![vec![27, 34], vec![14, 17], vec![7, 9]]);
    assert_eq!(p.coeff_len(), 3 * 16 * 63);
    let ctx = ctx();
    let mut step = ctx.step("bad");
    let wrong = ctx.upload(&[5], &[0f32; 5]).unwrap();
    assert!(
        p.forward(ctx, &mut step, &wrong)
            .unwrap_err()
            .to_string()
            .contains("elements")
    );
    assert!(p.clone().with_dtype(DType::U32).is_err());
    let halves = p.clone().with_dtype(DType::F16).unwrap();
    let f32_input = ctx
        .upload(&[p.signal_len()], &vec![0f32; p.signal_len()])
        .unwrap();
    assert!(
        halves
            .forward(ctx, &mut step, &f32_input)
            .unwrap_err()
            .to_string()
            .contains("f16"),
        "an f32 tensor given to an f16 transform"
    );
}
