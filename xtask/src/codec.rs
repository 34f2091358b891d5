//! `cargo xtask bench codec`: rate-distortion of the wavelet codec on real photos against JPEG (the `image`
//! crate's encoder), JPEG 2000 (openjpeg's `opj_compress`), JPEG XL (`cjxl`), AVIF (`avifenc`) and WebP
//! (`cwebp`) at matched rates, each external tool at two effort settings when installed, with PSNR (RGB and
//! luma), MS-SSIM and the Bjøntegaard delta rate of wring against each over 0.25..1 bpp; speech SNR
//! against kbps, and the speed of the packet transform against the adapter's copy bandwidth. Photos come
//! from `bench-data/*.png` (tools/fixtures/bench_photos.py saves scikit-image's astronaut, coffee, chelsea
//! and camera there) or, without them, the test fixture crop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use wring_codec::{Decoded, Image, Options, Rate, Tune};
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
    /// PSNR of the luma (BT.601 weights).
    pub psnr_y: f64,
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

/// The report as Markdown tables: the summary lines, every image point, every speech point.
pub fn summary_md(r: &CodecReport, command: &str, date: &str, cpu: &str) -> String {
    use std::fmt::Write as _;
    let mut md = format!(
        "# Rate-distortion against JPEG, JPEG 2000, JPEG XL, AVIF, WebP and Opus, {date}\n\n\
         Command: `{command}`  \nAdapter: {}  \nHost CPU: {cpu}  \nTools: {}  \n\
         Each external tool is searched to its largest stream within each target rate. This file is written \
         by the bench from codec.json.\n\n## Summary\n\n",
        r.adapter,
        if r.tools.is_empty() {
            "versions unknown".to_string()
        } else {
            r.tools.join(", ")
        }
    );
    for line in &r.summary {
        let _ = writeln!(md, "- {line}");
    }
    md.push_str("\n## Points\n\n| photo | codec | bpp | PSNR-RGB dB | PSNR-Y dB | MS-SSIM | encode ms |\n|---|---|---|---|---|---|---|\n");
    for (name, points) in &r.images {
        let mut sorted: Vec<&Point> = points.iter().collect();
        sorted.sort_by(|a, b| a.codec.cmp(&b.codec).then(a.bpp.total_cmp(&b.bpp)));
        for p in sorted {
            let _ = writeln!(
                md,
                "| {name} | {} | {:.3} | {:.2} | {:.2} | {:.4} | {:.0} |",
                p.codec, p.bpp, p.psnr, p.psnr_y, p.ms_ssim, p.encode_ms
            );
        }
    }
    md.push_str("\n## Speech\n\n| codec | target kbps | kbps spent | SNR dB | log-spectral distance dB |\n|---|---|---|---|---|\n");
    for p in &r.speech {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.2} | {:.2} |",
            p.codec, p.target_kbps, p.kbps, p.snr, p.lsd
        );
    }
    md
}

/// One speech coding: the rate asked and spent, SNR and log-spectral distance against the original.
#[derive(Debug, Serialize)]
pub struct SpeechPoint {
    pub codec: String,
    pub target_kbps: f64,
    pub kbps: f64,
    pub snr: f64,
    /// Log-spectral distance in dB: the RMS over frequency of 10 log10 of the power spectra's ratio,
    /// averaged over 256-sample Hann-windowed frames at a 128-sample hop (frames of near-silence left out).
    pub lsd: f64,
}

fn snr(a: &[i16], b: &[i16]) -> f64 {
    let sig: f64 = a.iter().map(|&v| f64::from(v).powi(2)).sum();
    let noise: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    10.0 * (sig / noise.max(1e-12)).log10()
}

/// See [`SpeechPoint::lsd`]; a direct DFT (the clip is short).
fn lsd(a: &[i16], b: &[i16]) -> f64 {
    const N: usize = 256;
    let window: Vec<f64> = (0..N)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N as f64).cos())
        .collect();
    let power = |x: &[i16]| -> Vec<f64> {
        (0..=N / 2)
            .map(|k| {
                let (mut re, mut im) = (0.0, 0.0);
                for (i, (&v, w)) in x.iter().zip(&window).enumerate() {
                    let ph = -2.0 * std::f64::consts::PI * (k * i) as f64 / N as f64;
                    re += f64::from(v) * w * ph.cos();
                    im += f64::from(v) * w * ph.sin();
                }
                re * re + im * im + 1.0
            })
            .collect()
    };
    let (mut total, mut frames) = (0.0f64, 0.0f64);
    let n = a.len().min(b.len());
    for start in (0..n.saturating_sub(N)).step_by(N / 2) {
        let fa = &a[start..start + N];
        if fa.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / (N as f64) < 100.0 {
            continue;
        }
        let (pa, pb) = (power(fa), power(&b[start..start + N]));
        let d: f64 = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (10.0 * (x / y).log10()).powi(2))
            .sum::<f64>()
            / pa.len() as f64;
        total += d.sqrt();
        frames += 1.0;
    }
    total / frames.max(1.0)
}

/// Opus (`opusenc --hard-cbr --bitrate`, constant bitrate so that it spends what it is asked, decoded by `opusdec --rate` at the clip's rate) on a WAV file.
fn opus_at(path: &Path, reference: &wring_codec::Audio, kbps: f64) -> Option<SpeechPoint> {
    let tmp = std::env::temp_dir().join(format!("wring-opus-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).ok()?;
    let (coded, back) = (tmp.join("x.opus"), tmp.join("x.wav"));
    let run = |cmd: &mut std::process::Command| cmd.output().ok().filter(|o| o.status.success());
    run(std::process::Command::new("opusenc")
        .args(["--quiet", "--hard-cbr", "--bitrate", &format!("{kbps}")])
        .arg(path)
        .arg(&coded))?;
    run(std::process::Command::new("opusdec")
        .args(["--quiet", "--rate", &reference.sample_rate.to_string()])
        .arg(&coded)
        .arg(&back))?;
    let bytes = std::fs::metadata(&coded).ok()?.len();
    let out = wring_codec::io::read_wav(&back).ok()?;
    std::fs::remove_dir_all(&tmp).ok();
    let seconds = reference.samples.len() as f64 / f64::from(reference.sample_rate);
    Some(SpeechPoint {
        codec: "opus (opusenc)".into(),
        target_kbps: kbps,
        kbps: bytes as f64 * 8.0 / 1000.0 / seconds,
        snr: snr(&reference.samples, &out.samples),
        lsd: lsd(&reference.samples, &out.samples),
    })
}

#[derive(Debug, Serialize)]
pub struct CodecReport {
    pub adapter: String,
    /// The anchors' packages and versions, as the system's package manager reports them.
    pub tools: Vec<String>,
    pub images: Vec<(String, Vec<Point>)>,
    pub speech: Vec<SpeechPoint>,
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

/// PSNR of the luma planes.
fn psnr_y(img: &Image, other: &[u8]) -> f64 {
    let (a, b) = (luma(img, &img.pixels), luma(img, other));
    let mse = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

fn photos(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
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
        psnr_y: psnr_y(img, &pixels),
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
        psnr_y: psnr_y(img, &dec.pixels),
        ms_ssim: ms_ssim(img, &dec.pixels),
        encode_ms,
    })
}

/// An image codec the bench runs as processes (Debian's packages: `libjxl-tools`, `libavif-bin`, `webp`),
/// at one effort setting: its encoder takes the photo and a quality parameter, its decoder writes a PNG.
struct Anchor {
    /// The curve's name in the report: the tool and its setting.
    label: String,
    /// The encoder's program.
    encoder: &'static str,
    /// The stream's extension, which the decoder reads.
    ext: &'static str,
    /// The decoder's program.
    decoder: &'static str,
    /// Arguments of one encode at parameter `q` from `input` to `output`.
    args: fn(q: f64, effort: u32, input: &str, output: &str) -> Vec<String>,
    /// Arguments of one decode from `input` to `output`.
    dec_args: fn(input: &str, output: &str) -> Vec<String>,
    /// The effort setting passed to `args`.
    effort: u32,
    /// The quality parameter searched.
    search: Search,
}

/// A quality parameter's range: `rising` when a larger parameter gives a larger stream, `integer` when
/// the tool takes whole numbers only.
struct Search {
    lo: f64,
    hi: f64,
    rising: bool,
    integer: bool,
}

/// The anchors of issue 35: JPEG XL (libjxl's `cjxl`, distance searched, efforts 3 and 7), AVIF (libavif's
/// `avifenc` with aom, a constant quantizer searched, speeds 6 and 4; speed 2 took 3.7 s an encode of a 512 x 512 photo here) and WebP (`cwebp`, quality searched,
/// methods 4 and 6). The versions are Debian 12's: cjxl 0.7, avifenc 0.11.1 (aom 3.6), cwebp 1.2.
fn anchors() -> Vec<Anchor> {
    let jxl = |effort| Anchor {
        label: format!("jpeg xl (cjxl -e {effort})"),
        encoder: "cjxl",
        ext: "jxl",
        decoder: "djxl",
        args: |q, e, i, o| {
            vec![
                i.into(),
                o.into(),
                "-d".into(),
                format!("{q:.4}"),
                "-e".into(),
                e.to_string(),
            ]
        },
        dec_args: |i, o| vec![i.into(), o.into()],
        effort,
        search: Search {
            lo: 0.05,
            hi: 25.0,
            rising: false,
            integer: false,
        },
    };
    let avif = |speed| Anchor {
        label: format!("avif (avifenc -s {speed})"),
        encoder: "avifenc",
        ext: "avif",
        decoder: "avifdec",
        args: |q, s, i, o| {
            let q = format!("{}", q.round() as i64);
            vec![
                "-s".into(),
                s.to_string(),
                "-j".into(),
                "all".into(),
                "--min".into(),
                q.clone(),
                "--max".into(),
                q,
                i.into(),
                o.into(),
            ]
        },
        dec_args: |i, o| vec![i.into(), o.into()],
        effort: speed,
        search: Search {
            lo: 0.0,
            hi: 63.0,
            rising: false,
            integer: true,
        },
    };
    let webp = |method| Anchor {
        label: format!("webp (cwebp -m {method})"),
        encoder: "cwebp",
        ext: "webp",
        decoder: "dwebp",
        args: |q, m, i, o| {
            vec![
                "-quiet".into(),
                "-q".into(),
                format!("{q:.3}"),
                "-m".into(),
                m.to_string(),
                i.into(),
                "-o".into(),
                o.into(),
            ]
        },
        dec_args: |i, o| vec!["-quiet".into(), i.into(), "-o".into(), o.into()],
        effort: method,
        search: Search {
            lo: 0.0,
            hi: 100.0,
            rising: true,
            integer: false,
        },
    };
    vec![jxl(3), jxl(7), avif(6), avif(4), webp(4), webp(6)]
}

/// Whether a program can be started.
fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok()
}

/// The anchor's largest stream within `bpp` (bisection over its parameter, 12 encodes at most), decoded
/// and measured; `None` when the tool is missing or no setting fits.
fn anchor_at(a: &Anchor, path: &Path, img: &Image, bpp: f64) -> Option<Point> {
    let pixels = (img.width * img.height) as f64;
    let budget = (bpp * pixels / 8.0) as u64;
    let tmp = std::env::temp_dir().join(format!("wring-anchor-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).ok()?;
    let out = tmp.join(format!("x.{}", a.ext));
    // The best fitting stream so far, kept as it was written, so it is decoded without encoding it again.
    let kept = tmp.join(format!("best.{}", a.ext));
    let input = path.display().to_string();
    let encode = |q: f64| -> Option<(u64, f64)> {
        let t = Instant::now();
        let ok = std::process::Command::new(a.encoder)
            .args((a.args)(q, a.effort, &input, &out.display().to_string()))
            .output()
            .ok()?
            .status
            .success();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        ok.then(|| std::fs::metadata(&out).ok().map(|m| (m.len(), ms)))
            .flatten()
    };
    // Keep the parameter of the largest stream within the budget; move towards larger streams from it.
    let (mut small, mut big) = if a.search.rising {
        (a.search.lo, a.search.hi)
    } else {
        (a.search.hi, a.search.lo)
    };
    let mut best: Option<(f64, u64, f64)> = None;
    for _ in 0..12 {
        let mid = if a.search.integer {
            ((small + big) / 2.0).round()
        } else {
            (small + big) / 2.0
        };
        let (size, ms) = encode(mid)?;
        if size <= budget {
            if best.is_none_or(|b| size > b.1) {
                best = Some((mid, size, ms));
                std::fs::copy(&out, &kept).ok()?;
            }
            small = mid;
        } else {
            big = mid;
        }
        if a.search.integer && (small - big).abs() <= 1.0 {
            break;
        }
    }
    if best.is_none() {
        // The smallest stream the tool makes may still fit.
        let (size, ms) = encode(small)?;
        if size <= budget {
            best = Some((small, size, ms));
            std::fs::copy(&out, &kept).ok()?;
        }
    }
    let (_, size, encode_ms) = best?;
    let back = tmp.join("back.png");
    let ok = std::process::Command::new(a.decoder)
        .args((a.dec_args)(
            &kept.display().to_string(),
            &back.display().to_string(),
        ))
        .output()
        .ok()?
        .status
        .success();
    if !ok {
        return None;
    }
    let dec = wring_codec::io::read_image(&back).ok()?;
    if dec.pixels.len() != img.pixels.len() {
        return None;
    }
    Some(Point {
        codec: a.label.clone(),
        bpp: size as f64 * 8.0 / pixels,
        psnr: psnr(&img.pixels, &dec.pixels),
        psnr_y: psnr_y(img, &dec.pixels),
        ms_ssim: ms_ssim(img, &dec.pixels),
        encode_ms,
    })
}

/// The Bjøntegaard delta rate of curve `test` against curve `anchor` (points of PSNR against bpp): the mean
/// difference of log rate over the PSNR range both cover, each curve's log rate a cubic in PSNR fitted by
/// least squares (exact through four points, as VCEG-M33 has it), as a fraction (-0.1: 10 % fewer bits for
/// the same PSNR). `None` with fewer than four points on a curve or no common range.
pub fn bd_rate(anchor: &[(f64, f64)], test: &[(f64, f64)]) -> Option<f64> {
    fn fit(points: &[(f64, f64)]) -> Option<[f64; 4]> {
        if points.len() < 4 {
            return None;
        }
        // Normal equations of log(rate) = c0 + c1 p + c2 p^2 + c3 p^3, PSNR centred for conditioning.
        let mut a = [[0.0f64; 5]; 4];
        for &(bpp, psnr) in points {
            let y = bpp.ln();
            let pow = [1.0, psnr, psnr * psnr, psnr * psnr * psnr];
            for i in 0..4 {
                for j in 0..4 {
                    a[i][j] += pow[i] * pow[j];
                }
                a[i][4] += pow[i] * y;
            }
        }
        for c in 0..4 {
            let pivot = (c..4).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))?;
            a.swap(c, pivot);
            if a[c][c].abs() < 1e-300 {
                return None;
            }
            for r in 0..4 {
                if r != c {
                    let (f, pivot_row) = (a[r][c] / a[c][c], a[c]);
                    for (v, p) in a[r].iter_mut().zip(pivot_row).skip(c) {
                        *v -= f * p;
                    }
                }
            }
        }
        Some([
            a[0][4] / a[0][0],
            a[1][4] / a[1][1],
            a[2][4] / a[2][2],
            a[3][4] / a[3][3],
        ])
    }
    let integral = |c: &[f64; 4], lo: f64, hi: f64| {
        let f = |p: f64| {
            c[0] * p + c[1] * p * p / 2.0 + c[2] * p.powi(3) / 3.0 + c[3] * p.powi(4) / 4.0
        };
        f(hi) - f(lo)
    };
    let centre = anchor.iter().chain(test).map(|p| p.1).sum::<f64>()
        / (anchor.len() + test.len()).max(1) as f64;
    let shift = |v: &[(f64, f64)]| v.iter().map(|&(r, p)| (r, p - centre)).collect::<Vec<_>>();
    let (a, t) = (shift(anchor), shift(test));
    let range = |v: &[(f64, f64)]| {
        v.iter()
            .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)))
    };
    let ((alo, ahi), (tlo, thi)) = (range(&a), range(&t));
    let (lo, hi) = (alo.max(tlo), ahi.min(thi));
    if hi <= lo {
        return None;
    }
    let (ca, ct) = (fit(&a)?, fit(&t)?);
    let mean = (integral(&ct, lo, hi) - integral(&ca, lo, hi)) / (hi - lo);
    Some(mean.exp() - 1.0)
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
    // Each codec once (points come target by target, so equal names are not adjacent).
    let mut codecs: Vec<&str> = points.iter().map(|p| p.codec.as_str()).collect();
    codecs.sort_unstable();
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
pub fn run(
    quick: bool,
    dir: Option<&Path>,
    held_out: Option<&Path>,
) -> Result<CodecReport, String> {
    let photo_dir = held_out.unwrap_or(Path::new("bench-data"));
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let ctx = Context::new(ContextOptions {
        profile: true,
        ..Default::default()
    })
    .map_err(|x| e(&x))?;
    let mut report = CodecReport {
        adapter: ctx.label(),
        tools: [
            "libopenjp2-tools",
            "libjxl-tools",
            "libavif-bin",
            "webp",
            "opus-tools",
            "espeak-ng",
        ]
        .iter()
        .filter_map(|p| {
            let out = std::process::Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}", p])
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            Some(format!(
                "{p} {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        })
        .collect(),
        images: Vec::new(),
        speech: Vec::new(),
        transform: Vec::new(),
        summary: Vec::new(),
    };
    let (mut gain_jpeg, mut gap_j2k, mut ssim_jpeg) = (Vec::new(), Vec::new(), Vec::new());
    // The external anchors whose tools are installed (`sudo apt-get install libjxl-tools libavif-bin webp
    // libopenjp2-tools`); each missing one is named once.
    let anchors: Vec<Anchor> = anchors()
        .into_iter()
        .filter(|a| {
            let ok = have(a.encoder) && have(a.decoder);
            if !ok {
                println!("{} is not installed: {} is left out", a.encoder, a.label);
            }
            ok
        })
        .collect();
    // Per anchor, each photo's BD-rate of wring against it over 0.25..1 bpp, and wring's PSNR minus the
    // anchor's at 0.25, 0.5 and 1 bpp.
    let mut bd: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut gaps: std::collections::BTreeMap<(String, u32), Vec<f64>> = Default::default();
    for path in photos(photo_dir) {
        let img = wring_codec::io::read_image(&path).map_err(|x| e(&x))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut points = Vec::new();
        for &bpp in if quick { &TARGETS[1..5] } else { &TARGETS[..] } {
            // wring tuned for PSNR (the row every comparison uses) and for the eye (MS-SSIM beside it).
            for (tune, label) in [
                (Tune::Psnr, "wring"),
                (Tune::Visual, "wring (--tune visual)"),
            ] {
                let t0 = Instant::now();
                let s = wring_codec::encode_image(
                    &ctx,
                    &img,
                    &Options {
                        rate: Rate::Target(bpp),
                        tune,
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
                    codec: label.into(),
                    bpp: s.len() as f64 * 8.0 / (img.width * img.height) as f64,
                    psnr: psnr(&img.pixels, &out.pixels),
                    psnr_y: psnr_y(&img, &out.pixels),
                    ms_ssim: ms_ssim(&img, &out.pixels),
                    encode_ms: enc * 1e3,
                };
                println!(
                    "{name} {bpp:>5} bpp: {label} {:.3} bpp {:.2} dB MS-SSIM {:.4} (encode {:.0} ms with rate search, decode {:.0} ms)",
                    p.bpp,
                    p.psnr,
                    p.ms_ssim,
                    enc * 1e3,
                    dec * 1e3
                );
                points.push(p);
            }
            for other in [jpeg_at(&img, bpp), j2k_at(&path, &img, bpp)]
                .into_iter()
                .chain(anchors.iter().map(|a| anchor_at(a, &path, &img, bpp)))
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
        // Bjøntegaard delta rate over the points of the 0.25..1 bpp targets (found from below, so a point
        // of the 1 bpp target may sit a little under it).
        let curve_of = |c: &str| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter(|p| p.codec == c && p.bpp >= 0.2 && p.bpp <= 1.05)
                .map(|p| (p.bpp, p.psnr))
                .collect()
        };
        let mut labels: Vec<String> = points
            .iter()
            .filter(|p| !p.codec.starts_with("wring"))
            .map(|p| p.codec.clone())
            .collect();
        labels.sort();
        labels.dedup();
        for label in labels {
            if let Some(r) = bd_rate(&curve_of(&label), &curve_of("wring")) {
                println!(
                    "{name}: wring's BD-rate against {label}: {:+.1} %",
                    100.0 * r
                );
                bd.entry(label.clone()).or_default().push(r);
            }
            for target in [0.25, 0.5, 1.0] {
                if let (Some(w), Some(o)) = (
                    psnr_at(&curve("wring"), target),
                    psnr_at(&curve(&label), target),
                ) {
                    gaps.entry((label.clone(), (target * 100.0) as u32))
                        .or_default()
                        .push(w - o);
                }
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
    for (label, v) in &bd {
        let gap = |t: u32| gaps.get(&(label.clone(), t)).map_or(f64::NAN, |g| mean(g));
        report.summary.push(format!(
            "wring against {label}: BD-rate (PSNR-RGB, 0.25..1 bpp) mean {:+.1} % over {} photos; PSNR difference at 0.25 / 0.5 / 1 bpp {:+.2} / {:+.2} / {:+.2} dB",
            100.0 * mean(v),
            v.len(),
            gap(25),
            gap(50),
            gap(100)
        ));
    }
    // Speed at 4 megapixels: the first photo tiled 4 x 4 (2048 x 2048 when it is 512 x 512), one encode
    // at quality 75 without a rate search and its decode, the stream's time from bytes to pixels.
    if held_out.is_some() {
        return Ok(report);
    }
    if let Some(path) = photos(photo_dir).first() {
        let img = wring_codec::io::read_image(path).map_err(|x| e(&x))?;
        let (w, h, c) = (img.width * 4, img.height * 4, img.channels);
        let mut pixels = vec![0u8; w * h * c];
        for y in 0..h {
            for x in 0..w {
                let from = ((y % img.height) * img.width + x % img.width) * c;
                pixels[(y * w + x) * c..][..c].copy_from_slice(&img.pixels[from..from + c]);
            }
        }
        let big = Image {
            width: w,
            height: h,
            channels: c,
            pixels,
        };
        let t0 = Instant::now();
        let s = wring_codec::encode_image(
            &ctx,
            &big,
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
        // The device-free half alone: parsing and context-model decoding into coefficients.
        let t2 = Instant::now();
        wring_codec::decode_coefficients(&s, &Default::default()).map_err(|x| e(&x))?;
        let entropy = t2.elapsed().as_secs_f64();
        let mpix = (w * h) as f64 / 1e6;
        report.summary.push(format!(
            "{w}x{h} ({mpix:.1} Mpixel, the first photo tiled) at quality 75 ({:.2} bpp): encode {:.0} ms = {:.1} Mpixel/s, decode {:.0} ms = {:.1} Mpixel/s, of which entropy decoding {:.0} ms and the inverse transform with its transfers the rest",
            s.len() as f64 * 8.0 / (mpix * 1e6),
            enc * 1e3,
            mpix / enc,
            dec * 1e3,
            mpix / dec,
            entropy * 1e3
        ));
        println!("{}", report.summary.last().expect("pushed"));
    }
    // Speech: SNR and log-spectral distance against kbps, beside Opus at the same bitrates (Opus's file
    // size includes its Ogg container, about 1 kB on this short clip, which is counted as spent).
    // bench-data/speech.wav (tools/fixtures/bench_photos.py, 22 s of espeak-ng) when present, else the
    // test fixture's quarter second, on which Opus's container overhead dominates its rate.
    let speech_path = [
        Path::new("bench-data/speech.wav"),
        Path::new("tests/fixtures/speech_12000.wav"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or("no speech clip")?;
    let speech = wring_codec::io::read_wav(speech_path).map_err(|x| e(&x))?;
    let seconds = speech.samples.len() as f64 / f64::from(speech.sample_rate);
    if !have("opusenc") || !have("opusdec") {
        println!("opusenc is not installed: opus is left out");
    }
    for kbps in [16.0, 32.0, 64.0, 128.0] {
        let mut points = Vec::new();
        for (tune, label) in [
            (Tune::Psnr, "wring"),
            (Tune::Hearing, "wring (--tune hearing)"),
        ] {
            let s = wring_codec::encode_audio(
                &ctx,
                &speech,
                &Options {
                    rate: Rate::Target(kbps),
                    tune,
                    ..Options::default()
                },
            )
            .map_err(|x| e(&x))?;
            let Ok(Decoded::Audio(out)) = wring_codec::decode(&ctx, &s) else {
                return Err("decode failed".into());
            };
            points.push(SpeechPoint {
                codec: label.into(),
                target_kbps: kbps,
                kbps: s.len() as f64 * 8.0 / 1000.0 / seconds,
                snr: snr(&speech.samples, &out.samples),
                lsd: lsd(&speech.samples, &out.samples),
            });
        }
        points.extend(opus_at(speech_path, &speech, kbps));
        for p in points {
            println!(
                "speech {kbps} kbps: {} {:.1} kbps SNR {:.2} dB LSD {:.2} dB",
                p.codec, p.kbps, p.snr, p.lsd
            );
            report.summary.push(format!(
                "speech at {kbps} kbps: {} spends {:.1} kbps, SNR {:.2} dB, log-spectral distance {:.2} dB",
                p.codec, p.kbps, p.snr, p.lsd
            ));
            report.speech.push(p);
        }
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

#[cfg(test)]
mod tests {
    use super::bd_rate;

    /// Four points of a plausible rate-distortion curve.
    fn anchor() -> Vec<(f64, f64)> {
        vec![(0.25, 28.1), (0.5, 31.0), (0.75, 33.2), (1.0, 34.9)]
    }

    #[test]
    fn bd_rate_is_zero_for_the_same_curve_and_the_rate_ratio_for_a_scaled_one() {
        let a = anchor();
        assert!(bd_rate(&a, &a).unwrap().abs() < 1e-9);
        // The same PSNR at 90 % of the bits everywhere is a BD-rate of -10 %.
        let cheaper: Vec<(f64, f64)> = a.iter().map(|&(r, p)| (0.9 * r, p)).collect();
        assert!((bd_rate(&a, &cheaper).unwrap() + 0.1).abs() < 1e-9);
        // 1 dB better everywhere costs fewer bits: negative.
        let better: Vec<(f64, f64)> = a.iter().map(|&(r, p)| (r, p + 1.0)).collect();
        assert!(bd_rate(&a, &better).unwrap() < -0.05);
        // Too few points, or no common PSNR range: no figure.
        assert!(bd_rate(&a[..3], &a).is_none());
        let apart: Vec<(f64, f64)> = a.iter().map(|&(r, p)| (r, p + 20.0)).collect();
        assert!(bd_rate(&a, &apart).is_none());
    }
}
