//! The wavelet codec: images (8-bit gray or RGB; RGB goes through YCoCg) and 16-bit PCM audio, each
//! channel transformed by a wavelet packet tree on the GPU, quantized with a dead-zone uniform quantizer
//! (one step for the stream, scaled per channel), and entropy coded (see `entropy`).

use wring_runtime::Context;
use wring_runtime::kernels::wavelet::{Mode, Wavelet};

use crate::container::{self, Header, Kind};
use crate::entropy::{self, SubbandHeader};
use crate::{CodecError, Packet};

/// An 8-bit image, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// width * height * channels bytes.
    pub pixels: Vec<u8>,
}

impl Image {
    /// The pixels as f32 planes \[channel\]\[row\]\[column\], untransformed.
    pub fn planes(&self) -> Vec<f32> {
        deinterleave(&self.pixels, self.channels, f32::from)
    }
}

/// Interleaved samples to channel-major planes.
fn deinterleave<T: Copy>(samples: &[T], channels: usize, f: impl Fn(T) -> f32) -> Vec<f32> {
    let n = samples.len() / channels.max(1);
    let mut planes = vec![0f32; samples.len()];
    for (i, frame) in samples.chunks_exact(channels).enumerate() {
        for (c, &v) in frame.iter().enumerate() {
            planes[c * n + i] = f(v);
        }
    }
    planes
}

/// 16-bit PCM audio, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: usize,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

impl Audio {
    /// The samples as f32 planes \[channel\]\[sample\].
    pub fn planes(&self) -> Vec<f32> {
        deinterleave(&self.samples, self.channels, f32::from)
    }
}

/// A decoded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An image stream.
    Image(Image),
    /// An audio stream.
    Audio(Audio),
}

/// How hard to compress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// 1 (smallest) to 100 (best): sets the quantizer step directly.
    Quality(f32),
    /// A target size in bits per pixel (images) or kilobits per second (audio); the step is searched so
    /// that the stream is at most that large.
    Target(f64),
}

impl Rate {
    /// The rate a command or binding asked for: a target (bpp or kbps) wins over a quality; neither is
    /// quality 75.
    pub fn choose(quality: Option<f32>, target: Option<f64>) -> Rate {
        match (quality, target) {
            (_, Some(t)) => Rate::Target(t),
            (Some(q), None) => Rate::Quality(q),
            (None, None) => Rate::Quality(75.0),
        }
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Quality or target rate.
    pub rate: Rate,
    /// The transform's wavelet (default CDF 9/7, `bior4.4`).
    pub wavelet: Wavelet,
    /// Packet levels (default: 3 for images, 6 for audio, fewer for small signals).
    pub levels: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rate: Rate::Quality(75.0),
            wavelet: Wavelet::Bior4_4,
            levels: None,
        }
    }
}

impl Options {
    /// Checks the settings before any work: a quality from 1 to 100, a positive finite target rate, at most
    /// 12 levels (the container's limit). They come from command lines, where `nan` parses as a number.
    pub fn check(&self) -> Result<(), CodecError> {
        match self.rate {
            Rate::Quality(q) if !(1.0..=100.0).contains(&q) => {
                return Err(CodecError::Request(format!(
                    "quality {q} must be from 1 to 100"
                )));
            }
            Rate::Target(t) if !(t.is_finite() && t > 0.0) => {
                return Err(CodecError::Request(format!(
                    "target rate {t} must be a positive finite number"
                )));
            }
            _ => {}
        }
        if let Some(l) = self.levels.filter(|&l| l > 12) {
            return Err(CodecError::Request(format!(
                "{l} levels requested; the format holds at most 12"
            )));
        }
        Ok(())
    }
}

/// The quantizer step of a quality: 0.5 at 100, doubling every 12.5 points below.
pub fn step_of_quality(q: f32) -> f32 {
    0.5 * 2f32.powf((100.0 - q.clamp(1.0, 100.0)) / 12.5)
}

/// Per-channel step multipliers. Image error is judged on RGB: YCoCg's inverse gives R, G, B errors that
/// weigh Y, Co, Cg by 3, 2 and 3, so each channel's step goes as 1/sqrt of its weight (normalized to Y).
fn channel_weights(kind: Kind, channels: usize) -> Vec<f32> {
    match (kind, channels) {
        (Kind::Image, 3) => vec![1.0, (3.0f32 / 2.0).sqrt(), 1.0],
        _ => vec![1.0; channels],
    }
}

/// Levels that keep the last level's subbands at least 8 samples wide (or the caller's choice).
fn default_levels(dims: &[usize], wanted: Option<usize>, default: usize) -> usize {
    wanted.unwrap_or_else(|| {
        let smallest = dims.iter().copied().min().unwrap_or(1);
        (0..=default)
            .rev()
            .find(|&j| smallest >> j >= 8)
            .unwrap_or(0)
    })
}

/// The packet transform a header describes. Its coefficient count is bounded by the samples it
/// transforms: more levels than the signal has samples for (12 levels of a 1x1 image: 16.7 million
/// subbands), or a boundary mode that grows bands level after level, would otherwise size the decoder's
/// allocations from one header byte. Encoder and decoder apply the same bound.
fn packet_of(h: &Header) -> Result<Packet, CodecError> {
    let dims: Vec<usize> = match h.kind {
        Kind::Image => vec![h.height, h.width],
        Kind::Audio => vec![h.width],
    };
    let samples = h.channels * dims.iter().product::<usize>();
    // 4^levels subbands of at least one coefficient each, checked before the packet is built.
    let min_subbands = 1u128 << (h.levels * 2 * dims.len()).min(120);
    let limit = 2 * samples as u128 + 4096 * h.channels as u128;
    if min_subbands * h.channels as u128 > limit {
        return Err(CodecError::Request(format!(
            "{} levels of a {dims:?} signal make {min_subbands} subbands per channel, more than its samples can fill",
            h.levels
        )));
    }
    let p = Packet::new(h.wavelet, h.mode, h.levels, h.channels, &dims)?;
    if p.coeff_len() as u128 > limit {
        return Err(CodecError::Request(format!(
            "{} levels of {} in {} mode turn {samples} samples into {} coefficients; at most {limit} are allowed",
            h.levels,
            h.wavelet.name(),
            h.mode.name(),
            p.coeff_len()
        )));
    }
    Ok(p)
}

/// Planes [channel][samples] of an image in the coded color space: Y centred on zero, Co and Cg.
fn image_planes(img: &Image) -> Vec<f32> {
    let n = img.width * img.height;
    let mut planes = vec![0f32; img.channels * n];
    for (i, px) in img.pixels.chunks_exact(img.channels).enumerate() {
        if let [r, g, b] = *px {
            let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
            planes[i] = 0.25 * r + 0.5 * g + 0.25 * b - 128.0;
            planes[n + i] = 0.5 * r - 0.5 * b;
            planes[2 * n + i] = -0.25 * r + 0.5 * g - 0.25 * b;
        } else {
            planes[i] = f32::from(px[0]) - 128.0;
        }
    }
    planes
}

fn planes_to_image(planes: &[f32], h: &Header) -> Image {
    let n = h.width * h.height;
    let to_u8 = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    let mut pixels = Vec::with_capacity(n * h.channels);
    for i in 0..n {
        if h.channels == 3 {
            let (y, co, cg) = (planes[i] + 128.0, planes[n + i], planes[2 * n + i]);
            pixels.extend_from_slice(&[to_u8(y + co - cg), to_u8(y + cg), to_u8(y - co - cg)]);
        } else {
            pixels.push(to_u8(planes[i] + 128.0));
        }
    }
    Image {
        width: h.width,
        height: h.height,
        channels: h.channels,
        pixels,
    }
}

/// Runs the packet transform on the GPU, one step.
fn transform(ctx: &Context, p: &Packet, x: &[f32], forward: bool) -> Result<Vec<f32>, CodecError> {
    let mut step = ctx.step(if forward {
        "wpt forward"
    } else {
        "wpt inverse"
    });
    let t = ctx.upload(&[x.len()], x)?;
    let y = if forward {
        p.forward(ctx, &mut step, &t)?
    } else {
        p.inverse(ctx, &mut step, &t)?
    };
    step.submit()?;
    Ok(ctx.read(&y)?)
}

/// The last level's subband as [rows][columns] (one row for 1-D signals), and whether it is 2-D.
fn band_shape(p: &Packet) -> (usize, usize, bool) {
    let last = p.level_dims().pop().expect("level 0");
    if let [n] = last[..] {
        (1, n, false)
    } else {
        (last[0], last[1], true)
    }
}

/// Quantizes and codes coefficients at one step; returns the stream.
fn code_at(h: &mut Header, p: &Packet, coeffs: &[f32]) -> Result<Vec<u8>, CodecError> {
    let weights = channel_weights(h.kind, h.channels);
    let per_channel = coeffs.len() / h.channels;
    let mut q = Vec::with_capacity(coeffs.len());
    for (c, w) in coeffs.chunks_exact(per_channel).zip(&weights) {
        q.extend(entropy::quantize(c, h.step * w));
    }
    let (bh, bw, two_d) = band_shape(p);
    let (subbands, payload) = entropy::encode(&q, p.subbands(), bh, bw, two_d)?;
    h.subbands = subbands;
    Ok(container::write(h, &payload))
}

/// Encodes planes [channel][dims] (already in the coded color space) with `rate`.
fn encode_planes(
    ctx: &Context,
    mut h: Header,
    planes: &[f32],
    rate: Rate,
    target_bits: impl Fn(f64) -> f64,
) -> Result<Vec<u8>, CodecError> {
    let p = packet_of(&h)?;
    let coeffs = transform(ctx, &p, planes, true)?;
    match rate {
        Rate::Quality(q) => {
            h.step = step_of_quality(q);
            code_at(&mut h, &p, &coeffs)
        }
        Rate::Target(t) => {
            let budget = target_bits(t) / 8.0;
            // Bisection on log2(step): the size falls as the step grows.
            let (mut lo, mut hi) = (-4.0f32, 12.0f32);
            let mut best = None;
            for _ in 0..18 {
                let mid = 0.5 * (lo + hi);
                h.step = mid.exp2();
                let s = code_at(&mut h, &p, &coeffs)?;
                if s.len() as f64 <= budget {
                    hi = mid;
                    best = Some(s);
                } else {
                    lo = mid;
                }
            }
            match best {
                Some(s) => Ok(s),
                None => {
                    h.step = hi.exp2();
                    code_at(&mut h, &p, &coeffs)
                }
            }
        }
    }
}

/// Encodes an image.
pub fn encode_image(ctx: &Context, img: &Image, opts: &Options) -> Result<Vec<u8>, CodecError> {
    opts.check()?;
    if !(img.channels == 1 || img.channels == 3)
        || img.width == 0
        || img.height == 0
        || img.pixels.len() != img.width * img.height * img.channels
    {
        return Err(CodecError::Request(format!(
            "an image must be gray or RGB with width*height*channels bytes, got {}x{}x{} and {} bytes",
            img.width,
            img.height,
            img.channels,
            img.pixels.len()
        )));
    }
    let levels = default_levels(&[img.height, img.width], opts.levels, 3);
    let h = Header {
        kind: Kind::Image,
        channels: img.channels,
        wavelet: opts.wavelet,
        mode: Mode::Periodization,
        levels,
        width: img.width,
        height: img.height,
        sample_rate: 0,
        step: 1.0,
        subbands: Vec::new(),
    };
    let pixels = (img.width * img.height) as f64;
    encode_planes(ctx, h, &image_planes(img), opts.rate, |bpp| bpp * pixels)
}

/// Encodes audio.
pub fn encode_audio(ctx: &Context, a: &Audio, opts: &Options) -> Result<Vec<u8>, CodecError> {
    opts.check()?;
    if a.channels == 0
        || a.channels > 16
        || a.samples.is_empty()
        || !a.samples.len().is_multiple_of(a.channels)
        || a.sample_rate == 0
    {
        return Err(CodecError::Request(
            "audio needs 1 to 16 channels, a sample rate and whole frames".into(),
        ));
    }
    let n = a.samples.len() / a.channels;
    let planes = a.planes();
    let h = Header {
        kind: Kind::Audio,
        channels: a.channels,
        wavelet: opts.wavelet,
        mode: Mode::Periodization,
        levels: default_levels(&[n], opts.levels, 6),
        width: n,
        height: 1,
        sample_rate: a.sample_rate,
        step: 1.0,
        subbands: Vec::new(),
    };
    let seconds = n as f64 / f64::from(a.sample_rate);
    encode_planes(ctx, h, &planes, opts.rate, |kbps| kbps * 1000.0 * seconds)
}

/// Resource limits of decoding. A stream's shape is not bounded by its length (an all-black image codes
/// to a few bytes at any size), so the decoder refuses shapes above a limit instead; it allocates about
/// 20 bytes per declared sample (indices, coefficients, planes, output), about 640 MiB at the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most samples (pixels times channels, or audio samples times channels) a stream may declare.
    pub max_samples: u64,
}

impl Default for Limits {
    /// 2^25 samples: a 5,792 x 5,792 RGB image or 6 minutes of 48 kHz stereo, and 128 MiB of f32 planes,
    /// the smallest storage binding limit wgpu guarantees on desktop adapters.
    fn default() -> Limits {
        Limits {
            max_samples: 1 << 25,
        }
    }
}

/// The part of decoding that needs no device: parses and checks the container, entropy-decodes every
/// subband and dequantizes, giving the header, the packet layout and the wavelet coefficients the inverse
/// transform takes. Everything a stranger's bytes can reach before the GPU is here, so this is what the
/// `.wrg` fuzz target runs.
pub fn decode_coefficients(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(Header, Packet, Vec<f32>), CodecError> {
    let corrupt = |e: CodecError| CodecError::Corrupt(e.to_string());
    let (h, payload) = container::read(bytes, |h| {
        Ok(h.channels * packet_of(h).map_err(corrupt)?.subbands())
    })?;
    let samples = (h.channels * h.width) as u64 * h.height as u64;
    if samples > limits.max_samples {
        return Err(CodecError::Request(format!(
            "the stream declares {samples} samples; the decoder's limit is {} (Limits::max_samples)",
            limits.max_samples
        )));
    }
    let p = packet_of(&h).map_err(corrupt)?;
    let (bh, bw, two_d) = band_shape(&p);
    let q = entropy::decode(payload, &h.subbands, p.subbands(), bh, bw, two_d)?;
    let weights = channel_weights(h.kind, h.channels);
    let per_channel = q.len() / h.channels;
    let mut coeffs = Vec::with_capacity(q.len());
    for (c, w) in q.chunks_exact(per_channel).zip(&weights) {
        coeffs.extend(entropy::dequantize(c, h.step * w));
    }
    Ok((h, p, coeffs))
}

/// A file's stream and a line saying what it held and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The .wrg stream.
    pub bytes: Vec<u8>,
    /// For example `640x480x3, 0.5012 bpp` or `1 channel(s), 2.00 s, 24.10 kbps`.
    pub summary: String,
}

/// The file extensions [`encode_file`] reads: the batch commands' inputs.
pub const ENCODABLE: [&str; 4] = ["png", "jpg", "jpeg", "wav"];

/// Whether a path names a WAV file (by its extension): the file commands' one rule for audio.
pub fn is_wav(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// Encodes an image file (PNG, JPEG) or a WAV file, chosen by the extension.
pub fn encode_file(
    ctx: &Context,
    path: &std::path::Path,
    opts: &Options,
) -> Result<Encoded, CodecError> {
    if is_wav(path) {
        let a = crate::io::read_wav(path)?;
        let seconds = a.samples.len() as f64 / a.channels as f64 / f64::from(a.sample_rate);
        let bytes = encode_audio(ctx, &a, opts)?;
        let kbps = bytes.len() as f64 * 8.0 / 1000.0 / seconds;
        let summary = format!("{} channel(s), {seconds:.2} s, {kbps:.2} kbps", a.channels);
        Ok(Encoded { bytes, summary })
    } else {
        let img = crate::io::read_image(path)?;
        let bytes = encode_image(ctx, &img, opts)?;
        let bpp = bytes.len() as f64 * 8.0 / (img.width * img.height) as f64;
        let summary = format!(
            "{}x{}x{}, {bpp:.4} bpp",
            img.width, img.height, img.channels
        );
        Ok(Encoded { bytes, summary })
    }
}

/// Decodes a stream within the default [`Limits`].
pub fn decode(ctx: &Context, bytes: &[u8]) -> Result<Decoded, CodecError> {
    decode_with(ctx, bytes, &Limits::default())
}

/// Decodes a stream within `limits`.
pub fn decode_with(ctx: &Context, bytes: &[u8], limits: &Limits) -> Result<Decoded, CodecError> {
    let (h, p, coeffs) = decode_coefficients(bytes, limits)?;
    let planes = transform(ctx, &p, &coeffs, false)?;
    Ok(match h.kind {
        Kind::Image => Decoded::Image(planes_to_image(&planes, &h)),
        Kind::Audio => {
            let n = h.width;
            let mut samples = vec![0i16; planes.len()];
            for c in 0..h.channels {
                for i in 0..n {
                    samples[i * h.channels + c] =
                        planes[c * n + i].round().clamp(-32768.0, 32767.0) as i16;
                }
            }
            Decoded::Audio(Audio {
                sample_rate: h.sample_rate,
                channels: h.channels,
                samples,
            })
        }
    })
}

/// The subband headers' type, for callers inspecting streams.
pub type Subband = SubbandHeader;
