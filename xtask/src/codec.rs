//! `cargo xtask bench codec`: rate-distortion of the wavelet codec on real photos against JPEG (the `image`
//! crate's encoder) and JPEG 2000 (openjpeg's `opj_compress`, when installed) at matched rates, speech SNR
//! against kbps, and the speed of the packet transform against the adapter's copy bandwidth. Photos come
//! from `bench-data/*.png` (tools/fixtures/bench_photos.py saves scikit-image's astronaut, coffee, chelsea
//! and camera there) or, without them, the test fixture crop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use wring_codec::{Decoded, Image, Options, Rate};
use wring_runtime::kernels::DType;
use wring_runtime::kernels::tensor::CopyWords;
use wring_runtime::kernels::wavelet::{Mode, Wavelet};
use wring_runtime::{Context, ContextOptions};

const TARGETS: [f64; 7] = [0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0];

#[derive(Debug, Serialize)]
pub struct Point {
    pub codec: String,
    pub bpp: f64,
    pub psnr: f64,
    /// MS-SSIM of the luma (BT.601 weights), Wang, Simoncelli and Bovik 2003.
    pub ms_ssim: f64,
    /// Wall time of one encode at this rate (wring: with its rate search; JPEG: the final quality only;
    /// JPEG 2000: the opj_compress process, which includes reading the PNG).
    pub encode_ms: f64,
}

/// Luma planes of an 8-bit gray or RGB image.
fn luma(img: &Image, pixels: &[u8]) -> Vec<f64> {
    pixels
        .chunks_exact(img.channels)
        .map(|p| {
            if let [r, g, b] = *p {
                0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b)
            } else {
                f64::from(p[0])
            }
        })
        .collect()
}

/// Mean SSIM terms over the valid positions of an 11x11 Gaussian window (sigma 1.5, shrunk for tiny
/// scales): (luminance * contrast-structure, contrast-structure).
fn ssim_terms(a: &[f64], b: &[f64], w: usize, h: usize) -> (f64, f64) {
    let win = 11.min(w).min(h);
    let g: Vec<f64> = (0..win)
        .map(|i| (-((i as f64 - (win - 1) as f64 / 2.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let norm: f64 = g.iter().sum::<f64>().powi(2);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut ssim, mut cs, mut n) = (0.0, 0.0, 0.0);
    for y in 0..=h - win {
        for x in 0..=w - win {
            let (mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..win {
                for dx in 0..win {
                    let k = g[dy] * g[dx] / norm;
                    let (p, q) = (a[(y + dy) * w + x + dx], b[(y + dy) * w + x + dx]);
                    ma += k * p;
                    mb += k * q;
                    aa += k * p * p;
                    bb += k * q * q;
                    ab += k * p * q;
                }
            }
            let (va, vb, cov) = (aa - ma * ma, bb - mb * mb, ab - ma * mb);
            let c = (2.0 * cov + c2) / (va + vb + c2);
            ssim += (2.0 * ma * mb + c1) / (ma * ma + mb * mb + c1) * c;
            cs += c;
            n += 1.0;
        }
    }
    (ssim / n, cs / n)
}

/// MS-SSIM over 5 scales (2x2 averaging between them) with the published weights.
fn ms_ssim(img: &Image, other: &[u8]) -> f64 {
    const WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
    let (mut a, mut b) = (luma(img, &img.pixels), luma(img, other));
    let (mut w, mut h) = (img.width, img.height);
    let mut out = 1.0;
    for (s, weight) in WEIGHTS.iter().enumerate() {
        let (full, cs) = ssim_terms(&a, &b, w, h);
        out *= if s == WEIGHTS.len() - 1 { full } else { cs }
            .max(0.0)
            .powf(*weight);
        let half = |v: &[f64]| -> Vec<f64> {
            (0..h / 2)
                .flat_map(|y| (0..w / 2).map(move |x| (y, x)))
                .map(|(y, x)| {
                    (v[2 * y * w + 2 * x]
                        + v[2 * y * w + 2 * x + 1]
                        + v[(2 * y + 1) * w + 2 * x]
                        + v[(2 * y + 1) * w + 2 * x + 1])
                        / 4.0
                })
                .collect()
        };
        if w / 2 == 0 || h / 2 == 0 {
            break;
        }
        (a, b) = (half(&a), half(&b));
        (w, h) = (w / 2, h / 2);
    }
    out
}

#[derive(Debug, Serialize)]
pub struct CodecReport {
    pub adapter: String,
    pub images: Vec<(String, Vec<Point>)>,
    pub speech: Vec<(f64, f64)>,
    pub transform: Vec<serde_json::Value>,
    pub summary: Vec<String>,
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

fn photos() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("bench-data")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    if v.is_empty() {
        println!(
            "no bench-data/*.png (run tools/fixtures/bench_photos.py): using the test fixture crop"
        );
        v.push(PathBuf::from("tests/fixtures/astronaut_96x128.png"));
    }
    v
}

/// JPEG from the `image` crate at the largest quality whose size is within `bpp`.
fn jpeg_at(img: &Image, bpp: f64) -> Option<Point> {
    let budget = bpp * (img.width * img.height) as f64 / 8.0;
    let color = if img.channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    let mut best = None;
    for q in 1..=100u8 {
        let mut buf = Vec::new();
        let t = Instant::now();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q)
            .encode(&img.pixels, img.width as u32, img.height as u32, color)
            .ok()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if buf.len() as f64 > budget {
            break;
        }
        best = Some((buf, ms));
    }
    let (buf, encode_ms) = best?;
    let dec = image::load_from_memory(&buf).ok()?;
    let pixels = if img.channels == 3 {
        dec.into_rgb8().into_raw()
    } else {
        dec.into_luma8().into_raw()
    };
    Some(Point {
        codec: "jpeg (image crate)".into(),
        bpp: buf.len() as f64 * 8.0 / (img.width * img.height) as f64,
        psnr: psnr(&img.pixels, &pixels),
        ms_ssim: ms_ssim(img, &pixels),
        encode_ms,
    })
}

/// JPEG 2000 through openjpeg's command-line tools at the rate `bpp`.
fn j2k_at(path: &Path, img: &Image, bpp: f64) -> Option<Point> {
    let tmp = std::env::temp_dir().join(format!("wring-j2k-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).ok()?;
    let (j2k, back) = (tmp.join("x.j2k"), tmp.join("x.png"));
    let ratio = (8 * img.channels) as f64 / bpp;
    let t = Instant::now();
    let ok = std::process::Command::new("opj_compress")
        .args([
            "-i",
            &path.display().to_string(),
            "-o",
            &j2k.display().to_string(),
            "-r",
            &format!("{ratio:.3}"),
        ])
        .output()
        .ok()?
        .status
        .success();
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    let ok = ok
        && std::process::Command::new("opj_decompress")
            .args([
                "-i",
                &j2k.display().to_string(),
                "-o",
                &back.display().to_string(),
            ])
            .output()
            .ok()?
            .status
            .success();
    if !ok {
        return None;
    }
    let size = std::fs::metadata(&j2k).ok()?.len();
    let dec = wring_codec::io::read_image(&back).ok()?;
    Some(Point {
        codec: "jpeg2000 (opj_compress)".into(),
        bpp: size as f64 * 8.0 / (img.width * img.height) as f64,
        psnr: psnr(&img.pixels, &dec.pixels),
        ms_ssim: ms_ssim(img, &dec.pixels),
        encode_ms,
    })
}

/// A quality measure at `bpp` by linear interpolation along a measured curve.
fn value_at(points: &[&Point], bpp: f64, value: impl Fn(&Point) -> f64) -> Option<f64> {
    let mut p: Vec<&&Point> = points.iter().collect();
    p.sort_by(|a, b| a.bpp.total_cmp(&b.bpp));
    p.windows(2)
        .find(|w| w[0].bpp <= bpp && bpp <= w[1].bpp)
        .map(|w| {
            value(w[0])
                + (value(w[1]) - value(w[0])) * (bpp - w[0].bpp) / (w[1].bpp - w[0].bpp).max(1e-12)
        })
}

fn psnr_at(points: &[&Point], bpp: f64) -> Option<f64> {
    value_at(points, bpp, |p| p.psnr)
}

fn plot(path: &Path, name: &str, points: &[Point]) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(l, h), p| {
        (l.min(p.psnr), h.max(p.psnr))
    });
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{name}: PSNR (RGB) against bits per pixel"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..2.1f64, (lo - 1.0)..(hi + 1.0))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("bpp")
        .y_desc("PSNR dB")
        .draw()
        .map_err(|e| e.to_string())?;
    let mut codecs: Vec<&str> = points.iter().map(|p| p.codec.as_str()).collect();
    codecs.dedup();
    for (i, c) in codecs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut series: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.codec == *c)
            .map(|p| (p.bpp, p.psnr))
            .collect();
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*c)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Runs the benchmark; plots go next to the JSON in `dir`.
pub fn run(quick: bool, dir: Option<&Path>) -> Result<CodecReport, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let ctx = Context::new(ContextOptions {
        profile: true,
        ..Default::default()
    })
    .map_err(|x| e(&x))?;
    let mut report = CodecReport {
        adapter: ctx.label(),
        images: Vec::new(),
        speech: Vec::new(),
        transform: Vec::new(),
        summary: Vec::new(),
    };
    let (mut gain_jpeg, mut gap_j2k, mut ssim_jpeg) = (Vec::new(), Vec::new(), Vec::new());
    for path in photos() {
        let img = wring_codec::io::read_image(&path).map_err(|x| e(&x))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut points = Vec::new();
        for &bpp in if quick { &TARGETS[1..5] } else { &TARGETS[..] } {
            let t0 = Instant::now();
            let s = wring_codec::encode_image(
                &ctx,
                &img,
                &Options {
                    rate: Rate::Target(bpp),
                    ..Options::default()
                },
            )
            .map_err(|x| e(&x))?;
            let enc = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let Ok(Decoded::Image(out)) = wring_codec::decode(&ctx, &s) else {
                return Err("decode failed".into());
            };
            let dec = t1.elapsed().as_secs_f64();
            let p = Point {
                codec: "wring".into(),
                bpp: s.len() as f64 * 8.0 / (img.width * img.height) as f64,
                psnr: psnr(&img.pixels, &out.pixels),
                ms_ssim: ms_ssim(&img, &out.pixels),
                encode_ms: enc * 1e3,
            };
            println!(
                "{name} {bpp:>5} bpp: wring {:.3} bpp {:.2} dB MS-SSIM {:.4} (encode {:.0} ms with rate search, decode {:.0} ms)",
                p.bpp,
                p.psnr,
                p.ms_ssim,
                enc * 1e3,
                dec * 1e3
            );
            points.push(p);
            for other in [jpeg_at(&img, bpp), j2k_at(&path, &img, bpp)]
                .into_iter()
                .flatten()
            {
                println!(
                    "{name} {bpp:>5} bpp: {} {:.3} bpp {:.2} dB MS-SSIM {:.4} (encode {:.0} ms)",
                    other.codec, other.bpp, other.psnr, other.ms_ssim, other.encode_ms
                );
                points.push(other);
            }
        }
        // One encode at a fixed quality (no rate search) and its decode: the codec's own speed.
        let t0 = Instant::now();
        let s = wring_codec::encode_image(
            &ctx,
            &img,
            &Options {
                rate: Rate::Quality(75.0),
                ..Options::default()
            },
        )
        .map_err(|x| e(&x))?;
        let enc = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        wring_codec::decode(&ctx, &s).map_err(|x| e(&x))?;
        let dec = t1.elapsed().as_secs_f64();
        let mpix = (img.width * img.height) as f64 / 1e6;
        report.summary.push(format!(
            "{name} single-pass encode at quality 75 ({:.2} bpp): {:.0} ms = {:.1} Mpixel/s, decode {:.0} ms = {:.1} Mpixel/s",
            s.len() as f64 * 8.0 / (mpix * 1e6),
            enc * 1e3,
            mpix / enc,
            dec * 1e3,
            mpix / dec
        ));
        let curve = |c: &str| {
            points
                .iter()
                .filter(|p| p.codec.starts_with(c))
                .collect::<Vec<_>>()
        };
        for bpp in [0.25, 0.5, 0.75, 1.0] {
            if let (Some(w), Some(j)) = (
                psnr_at(&curve("wring"), bpp),
                psnr_at(&curve("jpeg ("), bpp),
            ) {
                gain_jpeg.push(w - j);
            }
            if let (Some(w), Some(j)) = (
                value_at(&curve("wring"), bpp, |p| p.ms_ssim),
                value_at(&curve("jpeg ("), bpp, |p| p.ms_ssim),
            ) {
                ssim_jpeg.push(w - j);
            }
            if let (Some(w), Some(k)) = (
                psnr_at(&curve("wring"), bpp),
                psnr_at(&curve("jpeg2000"), bpp),
            ) {
                gap_j2k.push(w - k);
            }
        }
        if let Some(d) = dir {
            plot(&d.join(format!("rd-{name}.svg")), &name, &points)?;
        }
        report.images.push((name, points));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    report.summary.push(format!(
        "wring - JPEG at 0.25..1 bpp: mean {:+.2} dB, min {:+.2} dB over {} points",
        mean(&gain_jpeg),
        gain_jpeg.iter().copied().fold(f64::MAX, f64::min),
        gain_jpeg.len()
    ));
    report.summary.push(format!(
        "wring - JPEG 2000 at 0.25..1 bpp: mean {:+.2} dB over {} points",
        mean(&gap_j2k),
        gap_j2k.len()
    ));
    report.summary.push(format!(
        "wring - JPEG MS-SSIM at 0.25..1 bpp: mean {:+.4} over {} points",
        mean(&ssim_jpeg),
        ssim_jpeg.len()
    ));
    // Speech: SNR against kbps.
    let speech = wring_codec::io::read_wav(Path::new("tests/fixtures/speech_12000.wav"))
        .map_err(|x| e(&x))?;
    for kbps in [16.0, 32.0, 64.0, 128.0] {
        let s = wring_codec::encode_audio(
            &ctx,
            &speech,
            &Options {
                rate: Rate::Target(kbps),
                ..Options::default()
            },
        )
        .map_err(|x| e(&x))?;
        let Ok(Decoded::Audio(out)) = wring_codec::decode(&ctx, &s) else {
            return Err("decode failed".into());
        };
        let sig: f64 = speech.samples.iter().map(|&v| f64::from(v).powi(2)).sum();
        let noise: f64 = speech
            .samples
            .iter()
            .zip(&out.samples)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let snr = 10.0 * (sig / noise.max(1e-12)).log10();
        println!("speech {kbps} kbps: SNR {snr:.2} dB");
        report.speech.push((kbps, snr));
    }
    // Transform speed: one 2-D level (two launches) and a 3-level packet tree on a large 3-channel image,
    // GPU time from timestamps, against the copy kernel on the same bytes in the same run.
    let (h, w) = if quick { (1024, 1024) } else { (2048, 2048) };
    let n = 3 * h * w;
    let x = ctx
        .upload(&[n], &(0..n).map(|i| (i % 251) as f32).collect::<Vec<_>>())
        .map_err(|x| e(&x))?;
    let y = ctx.empty(&[n], DType::F32).map_err(|x| e(&x))?;
    let gpu_ms = |record: &dyn Fn(&mut wring_runtime::Step<'_>) -> Result<(), String>| -> Result<f64, String> {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut step = ctx.step("bench");
            record(&mut step)?;
            let r = step.submit().map_err(|x| e(&x))?;
            best = best.min(r.times.map(|t| t.iter().map(|l| l.nanos).sum::<f64>()).unwrap_or(f64::NAN) / 1e6);
        }
        Ok(best)
    };
    let copy_ms = gpu_ms(&|s| {
        s.run(&CopyWords::new(n), &[("src", &x), ("dst", &y)])
            .map_err(|x| e(&x))
    })?;
    let copy_gbs = (8 * n) as f64 / copy_ms / 1e6;
    // The f16 variants where the adapter has them: half the bytes, the same arithmetic.
    let x16 = if ctx.caps().f16 {
        Some(
            ctx.upload(
                &[n],
                &(0..n)
                    .map(|i| half::f16::from_f32((i % 251) as f32))
                    .collect::<Vec<_>>(),
            )
            .map_err(|x| e(&x))?,
        )
    } else {
        None
    };
    for (dtype, input) in [(DType::F32, Some(&x)), (DType::F16, x16.as_ref())] {
        let Some(input) = input else { continue };
        for levels in [1usize, 3] {
            let p =
                wring_codec::Packet::new(Wavelet::Bior4_4, Mode::Periodization, levels, 3, &[h, w])
                    .and_then(|p| p.with_dtype(dtype))
                    .map_err(|x| e(&x))?;
            for forward in [true, false] {
                let ms = gpu_ms(&|s| {
                    let r = if forward {
                        p.forward(&ctx, s, input)
                    } else {
                        p.inverse(&ctx, s, input)
                    };
                    r.map(|_| ()).map_err(|x| e(&x))
                })?;
                // Each level reads and writes the whole signal twice (two one-axis passes).
                let bytes = (levels * 2 * 2 * dtype.size() * n) as f64;
                let gbs = bytes / ms / 1e6;
                let line = format!(
                    "bior4.4 {dtype} {} {levels} level(s) {h}x{w}x3: {ms:.1} ms, {gbs:.2} GB/s = {:.0}% of copy ({copy_gbs:.2} GB/s), {:.1} Mpixel/s",
                    if forward { "forward" } else { "inverse" },
                    100.0 * gbs / copy_gbs,
                    (h * w) as f64 / ms / 1e3
                );
                report.transform.push(serde_json::json!({ "dtype": dtype.name(), "levels": levels, "forward": forward, "ms": ms, "gb_per_s": gbs, "copy_gb_per_s": copy_gbs, "fraction_of_copy": gbs / copy_gbs }));
                report.summary.push(line);
            }
        }
    }
    // The same transform in pywavelets on this machine, when Python has it.
    let py = format!(
        "import numpy as np, pywt, time\nx=np.random.rand(3,{h},{w}).astype(np.float32)\nt=time.time()\nfor c in x: pywt.WaveletPacket2D(c,'bior4.4',mode='periodization',maxlevel=3).get_level(3)\nprint((time.time()-t)*1e3)"
    );
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", &py])
        .output()
        && out.status.success()
    {
        let ms: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN);
        report.summary.push(format!(
            "pywavelets WaveletPacket2D bior4.4 3 levels {h}x{w}x3 on the CPU: {ms:.0} ms"
        ));
    }
    for s in &report.summary {
        println!("{s}");
    }
    Ok(report)
}
