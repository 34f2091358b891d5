//! The wavelet codec: images (8-bit gray or RGB; RGB goes through YCoCg) and 16-bit PCM audio. Each
//! channel is transformed by a wavelet packet tree the encoder chooses (best-basis search between the
//! dyadic and the full packet tree) on the GPU, quantized with rate-distortion optimised choices per
//! coefficient, and range coded with a context model (see `model`). The transform runs level by level over
//! the full packet layout (`Packet` with one level at a time), so any tree is a choice of which bands of
//! which level to keep: no per-tree kernel is needed.

use wring_runtime::Context;
use wring_runtime::kernels::wavelet::{Mode, Wavelet};

use crate::container::{self, BandHeader, Header, Kind, MAX_INDEX, MAX_SCALE, Tune};
use crate::model::{self, Band, Costs, Models, Side};
use crate::tree::Tree;
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
    /// The packet trees' deepest level (default: 6 for images, 9 for audio, fewer for small signals).
    pub levels: Option<usize>,
    /// Which packet trees: chosen per channel by rate-distortion cost (the default), or fixed.
    pub tree: TreeShape,
    /// What the quantizer steps are tuned for: PSNR, the eye (images) or the ear (audio).
    pub tune: Tune,
}

/// How the encoder picks each channel's packet tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreeShape {
    /// The tree of least rate-distortion cost at the stream's step (best-basis search).
    #[default]
    Best,
    /// The dyadic (Mallat) tree, as JPEG 2000 uses.
    Dyadic,
    /// The full packet tree, as WaLLoC uses.
    Full,
}

impl TreeShape {
    /// Every shape.
    pub const ALL: [TreeShape; 3] = [TreeShape::Best, TreeShape::Dyadic, TreeShape::Full];

    /// The name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            TreeShape::Best => "best",
            TreeShape::Dyadic => "dyadic",
            TreeShape::Full => "full",
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rate: Rate::Quality(75.0),
            wavelet: Wavelet::Bior4_4,
            levels: None,
            tree: TreeShape::Best,
            tune: Tune::Psnr,
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

/// Levels that keep the deepest subbands at least 4 samples wide (or the caller's choice).
fn default_levels(dims: &[usize], wanted: Option<usize>, default: usize) -> usize {
    wanted.unwrap_or_else(|| {
        let smallest = dims.iter().copied().min().unwrap_or(1);
        (0..=default)
            .rev()
            .find(|&j| smallest >> j >= 4)
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
    let min_subbands = 1u128 << (h.levels * dims.len()).min(120);
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

/// The rate-distortion trade-off: a bit is worth this many squared steps of distortion. At high rate a
/// uniform quantizer's distortion falls by 2 ln 2 of itself per bit, Δ²/12 * 2 ln 2 ≈ 0.1155 Δ². On the
/// bench photos 0.07 to 0.14 code within 0.05 dB of each other; 0.2 loses 0.2 dB and 0.04 loses 0.15 dB.
const LAMBDA: f32 = 0.11;

/// Where the encoder expects the coefficients that quantize to magnitude 1 and to larger magnitudes to lie
/// below the interval's middle (in steps), for its choices; the stream carries the measured offsets.
const GUESS: [f32; 2] = [0.15, 0.05];

/// The full packet layout behind a header's trees: each level's band shape.
struct Layout {
    arity: usize,
    channels: usize,
    dims: Vec<Vec<usize>>,
}

impl Layout {
    fn of(h: &Header) -> Result<Layout, CodecError> {
        Ok(Layout {
            arity: h.arity(),
            channels: h.channels,
            dims: packet_of(h)?.level_dims(),
        })
    }

    /// A band's (rows, columns) at depth `d` (one row for 1-D signals).
    fn shape(&self, d: usize) -> (usize, usize) {
        match self.dims[d][..] {
            [n] => (1, n),
            [h, w] => (h, w),
            _ => unreachable!("1-D or 2-D"),
        }
    }

    fn two_d(&self) -> bool {
        self.dims[0].len() == 2
    }

    fn band_len(&self, d: usize) -> usize {
        self.dims[d].iter().product()
    }

    fn bands(&self, d: usize) -> usize {
        self.arity.pow(d as u32)
    }

    /// Samples in level `d`'s array: every band of every channel.
    fn level_len(&self, d: usize) -> usize {
        self.channels * self.bands(d) * self.band_len(d)
    }

    /// The one-level packet transform between level `d` and level `d + 1` (every band of level `d` split).
    fn step_down(&self, h: &Header, d: usize) -> Result<Packet, CodecError> {
        Packet::new(
            h.wavelet,
            h.mode,
            1,
            h.channels * self.bands(d),
            &self.dims[d],
        )
    }

    /// Where band `i` of channel `c` lies in level `d`'s array.
    fn band(&self, d: usize, c: usize, i: usize) -> std::ops::Range<usize> {
        let start = (c * self.bands(d) + i) * self.band_len(d);
        start..start + self.band_len(d)
    }
}

/// Every level of the full packet transform of `planes`, level 0 being the planes: one level at a time on
/// the GPU, each read back before the next is computed so that device memory stays at two levels.
fn analyse(
    ctx: &Context,
    h: &Header,
    lay: &Layout,
    planes: &[f32],
) -> Result<Vec<Vec<f32>>, CodecError> {
    let mut out = vec![planes.to_vec()];
    let mut cur = ctx.upload(&[planes.len()], planes)?;
    for j in 1..=h.levels {
        let p = lay.step_down(h, j - 1)?;
        let mut step = ctx.step("wpt analysis");
        let y = p.forward(ctx, &mut step, &cur)?;
        step.submit()?;
        out.push(ctx.read(&y)?);
        cur = y;
    }
    Ok(out)
}

/// The inverse of [`analyse`] for a tree's leaves: `levels[d]` holds depth `d`'s leaves at their places in
/// the level's array with zeros elsewhere (or is empty when no leaf is that deep). Going up a level, the
/// inverse of one level turns every split band's children back into the band and every leaf's absent
/// children (zeros) into zeros, so adding the leaves of the level above completes it. One step on the GPU.
fn synthesise(
    ctx: &Context,
    h: &Header,
    lay: &Layout,
    levels: &[Vec<f32>],
) -> Result<Vec<f32>, CodecError> {
    use wring_runtime::kernels::DType;
    use wring_runtime::kernels::tensor::{Binary, BinaryOp};
    let deepest = (0..levels.len())
        .rev()
        .find(|&d| !levels[d].is_empty())
        .ok_or_else(|| CodecError::Corrupt("the packet trees have no leaves".into()))?;
    if deepest == 0 {
        return Ok(levels[0].clone());
    }
    let mut step = ctx.step("wpt synthesis");
    let mut cur = ctx.upload(&[levels[deepest].len()], &levels[deepest])?;
    for j in (1..=deepest).rev() {
        let y = lay.step_down(h, j - 1)?.inverse(ctx, &mut step, &cur)?;
        cur = if levels[j - 1].is_empty() {
            y
        } else {
            let n = levels[j - 1].len();
            let leaves = ctx.upload(&[n], &levels[j - 1])?;
            let sum = ctx.empty(&[n], DType::F32)?;
            step.run(
                &Binary {
                    op: BinaryOp::Add,
                    dtype: DType::F32,
                    n,
                    nb: n,
                },
                &[("a", &y), ("b", &leaves), ("c", &sum)],
            )?;
            sum
        };
    }
    step.submit()?;
    Ok(ctx.read(&cur)?)
}

/// The step multiplier of a band for a tuning: 1 for PSNR; for visual tuning, coarser steps for the two
/// finest scales' detail bands (more for diagonal ones) and more again for colour, after the contrast
/// sensitivity weights JPEG 2000 encoders use for viewing at arm's length.
fn tune_weight(h: &Header, c: usize, d: usize, i: usize) -> f32 {
    if h.tune == Tune::Psnr || h.kind != Kind::Image || d == 0 {
        return 1.0;
    }
    let k = h.arity();
    let digit = |level: usize| (i / k.pow((d - level) as u32)) % k;
    let chroma = if c > 0 { 1.5 } else { 1.0 };
    let w = match (digit(1), d >= 2) {
        (3, _) => 2.2,
        (1 | 2, _) => 1.6,
        (_, true) => match digit(2) {
            3 => 1.35,
            1 | 2 => 1.15,
            _ => return 1.0,
        },
        _ => return 1.0,
    };
    w * chroma
}

/// The quantizer step of band `i` at depth `d` of channel `c`.
fn band_step(h: &Header, c: usize, d: usize, i: usize, scale: i8) -> f32 {
    h.step
        * channel_weights(h.kind, h.channels)[c]
        * tune_weight(h, c, d, i)
        * (f32::from(scale) / 4.0).exp2()
}

/// The centre frequency of band `i` at depth `d` of a 1-D packet tree, as a fraction of the Nyquist
/// frequency. A highpass split mirrors the spectrum, so the band's place in frequency is the Gray decoding
/// of its path: each bit is the path's bit XOR every bit before it.
fn band_frequency(d: usize, i: usize) -> f64 {
    let (mut g, mut prev) = (0usize, 0usize);
    for k in (0..d).rev() {
        let f = prev ^ ((i >> k) & 1);
        g = 2 * g + f;
        prev = f;
    }
    (g as f64 + 0.5) / (1usize << d) as f64
}

/// Terhardt's approximation of the absolute threshold of hearing, in dB SPL, at `khz` kilohertz.
fn threshold_of_hearing(khz: f64) -> f64 {
    let f = khz.max(0.02);
    3.64 * f.powf(-0.8) - 6.5 * (-0.6 * (f - 3.3).powi(2)).exp() + 1e-3 * f.powi(4)
}

/// The step scale (in quarter octaves) of a band of a hearing-tuned stream: half the threshold of
/// hearing's rise above its minimum at the band's frequency (so that bands the ear hears least are coarsest,
/// at most 8 times), times the band's loudness against the channel's to the power 0.2 (louder bands mask
/// more of their own noise; at most 8 times either way).
fn hearing_scale(sample_rate: u32, d: usize, i: usize, energy: f64, reference: f64) -> i8 {
    let khz = band_frequency(d, i) * f64::from(sample_rate) / 2000.0;
    let ath = 10f64
        .powf((threshold_of_hearing(khz) + 5.0) / 40.0)
        .clamp(1.0, 8.0);
    let mask = ((energy + 1.0) / (reference + 1.0))
        .powf(0.2)
        .clamp(0.125, 8.0);
    (4.0 * (ath * mask).log2())
        .round()
        .clamp(-f64::from(MAX_SCALE), f64::from(MAX_SCALE)) as i8
}

/// The scale of band (d, i) of channel c when the stream is hearing-tuned (0 otherwise), from the band's
/// coefficients and the channel's mean energy.
fn scale_of(h: &Header, x: &[f32], reference: f64, d: usize, i: usize) -> i8 {
    if h.tune != Tune::Hearing {
        return 0;
    }
    let energy =
        x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    hearing_scale(h.sample_rate, d, i, energy, reference)
}

/// Each channel's mean energy per sample (level 0 holds the signal).
fn channel_energy(h: &Header, levels: &[Vec<f32>]) -> Vec<f64> {
    levels[0]
        .chunks_exact(levels[0].len() / h.channels)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / c.len() as f64)
        .collect()
}

/// Fills a band the encoder quantized away with noise of the recorded RMS (a deterministic generator
/// seeded by the band's place, so decoding is repeatable).
fn fill_noise(out: &mut [f32], rms: f32, seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let amplitude = rms * 3f32.sqrt();
    for o in out {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let u = (s >> 40) as f32 / (1u64 << 24) as f32;
        *o = amplitude * (2.0 * u - 1.0);
    }
}

/// The lowpass band's prediction of the value at (y, x) from decoded neighbours: LOCO-I's median edge
/// detector in 2-D, the previous value in 1-D.
fn predict(q: &[i32], y: usize, x: usize, w: usize, two_d: bool) -> i32 {
    let at = |yy: usize, xx: usize| q[yy * w + xx];
    match (two_d, y > 0, x > 0) {
        (false, _, true) => at(0, x - 1),
        (_, false, false) | (false, true, false) => 0,
        (true, false, true) => at(y, x - 1),
        (true, true, false) => at(y - 1, x),
        (true, true, true) => {
            let (a, b, c) = (at(y, x - 1), at(y - 1, x), at(y - 1, x - 1));
            if c >= a.max(b) {
                a.min(b)
            } else if c <= a.min(b) {
                a.max(b)
            } else {
                a + b - c
            }
        }
    }
}

/// A lowpass band's prediction residuals.
fn residuals(q: &[i32], w: usize, two_d: bool) -> Vec<i32> {
    (0..q.len())
        .map(|i| q[i] - predict(q, i / w, i % w, w, two_d))
        .collect()
}

/// The estimated cost (squared steps of distortion plus `LAMBDA` per bit) of coding a band as a leaf: the
/// conditional entropy of its quantized values given a small neighbourhood context (what the context
/// model will exploit), their signs and escapes, and the cost of learning the statistics.
fn leaf_cost(x: &[f32], inv: f32, w: usize, two_d: bool, lowpass: bool) -> f64 {
    const SYMBOLS: usize = 16;
    let mut q: Vec<i32> = if lowpass {
        x.iter().map(|&v| (v * inv).round() as i32).collect()
    } else {
        x.iter()
            .map(|&v| ((v.abs() * inv + 0.5 - 0.22).max(0.0) as i32) * if v < 0.0 { -1 } else { 1 })
            .collect()
    };
    let mut dist = 0.0f64;
    for (&v, &m) in x.iter().zip(&q) {
        let a = v.abs() * inv;
        let rec = if m == 0 {
            0.0
        } else if lowpass {
            m.unsigned_abs() as f32
        } else {
            m.unsigned_abs() as f32 - GUESS[usize::from(m.unsigned_abs() > 1)]
        };
        dist += f64::from((a - rec) * (a - rec));
    }
    if lowpass {
        q = residuals(&q, w, two_d);
    }
    let mut hist = [[0u32; SYMBOLS]; 4];
    let mut extra = 0.0f64;
    for (i, &v) in q.iter().enumerate() {
        let (y, xx) = (i / w, i % w);
        let left = if xx > 0 { q[i - 1].unsigned_abs() } else { 0 };
        let other = if two_d {
            if y > 0 { q[i - w].unsigned_abs() } else { 0 }
        } else if xx > 1 {
            q[i - 2].unsigned_abs()
        } else {
            0
        };
        let ctx = (left + other).min(3) as usize;
        let m = v.unsigned_abs();
        hist[ctx][(m as usize).min(SYMBOLS - 1)] += 1;
        if m > 0 {
            extra += 1.0;
        }
        if m as usize >= SYMBOLS - 1 {
            extra += 2.0 * f64::from(m - (SYMBOLS as u32 - 2)).log2() + 1.0;
        }
    }
    let mut bits = extra;
    for h in &hist {
        let n: u32 = h.iter().sum();
        if n == 0 {
            continue;
        }
        let nf = f64::from(n);
        let mut used = 0.0;
        for &c in h {
            if c > 0 {
                bits -= f64::from(c) * (f64::from(c) / nf).log2();
                used += 1.0;
            }
        }
        bits += 0.5 * used * (nf + 1.0).log2();
    }
    // The context model codes a detail band in fewer bits than this estimate's conditional entropy (it
    // also sees the parent, the luma band and a wider neighbourhood); 0.8 to 0.85 of the estimate chose the
    // trees that coded the bench photos best (0.1 dB above 1.0 at 0.5 bpp; 0.7 and 0.92 lose 0.05 dB).
    let scale = if lowpass { 1.0 } else { DETAIL_RATE };
    dist + f64::from(LAMBDA) * bits * scale
}

/// See [`leaf_cost`].
const DETAIL_RATE: f64 = 0.82;

/// The tree a channel is coded with at the header's step.
fn choose_tree(
    h: &Header,
    lay: &Layout,
    levels: &[Vec<f32>],
    c: usize,
    shape: TreeShape,
    reference: f64,
) -> Tree {
    let (k, depth) = (lay.arity, h.levels);
    match shape {
        TreeShape::Dyadic => Tree::dyadic(k, depth),
        TreeShape::Full => Tree::full(k, depth),
        TreeShape::Best => {
            // A split adds a tree flag and (k - 1) band headers of about two bytes each.
            let split_cost = f64::from(LAMBDA) * (1.0 + 16.0 * (k - 1) as f64);
            Tree::best(k, depth, split_cost, &mut |d, i| {
                let (_, w) = lay.shape(d);
                let x = &levels[d][lay.band(d, c, i)];
                leaf_cost(
                    x,
                    1.0 / band_step(h, c, d, i, scale_of(h, x, reference, d, i)),
                    w,
                    lay.two_d(),
                    Tree::is_lowpass(i),
                )
            })
        }
    }
}

/// The encoder's choice at one position: among rounding to nearest, rounding down and zero, the value of
/// least distortion plus `LAMBDA` times its bits under the model's current state.
fn rdo(x: f32, costs: &Costs<'_>, max: u32) -> i32 {
    let a = x.abs();
    let hi = ((a + 0.5) as u32).min(max);
    if hi == 0 {
        return 0;
    }
    let sign = if x < 0.0 { -1 } else { 1 };
    let mut best = (a * a + LAMBDA * costs.bits(0), 0u32);
    for m in [hi.saturating_sub(1), hi] {
        if m == 0 {
            continue;
        }
        let rec = m as f32 - GUESS[usize::from(m > 1)];
        let j = (a - rec) * (a - rec) + LAMBDA * costs.bits(sign * m as i32);
        if j < best.0 {
            best = (j, m);
        }
    }
    sign * best.1 as i32
}

/// The reconstruction offsets of a band's values (in 1/256 of a step): how far below each magnitude the
/// coefficients that took it lay on average, for magnitude 1 and for larger ones.
fn offsets(x: &[f32], q: &[i32], inv: f32) -> [u8; 2] {
    let mut sum = [0f64; 2];
    let mut n = [0f64; 2];
    for (&v, &m) in x.iter().zip(q) {
        let m = m.unsigned_abs();
        if m > 0 {
            let k = usize::from(m > 1);
            sum[k] += f64::from(m as f32 - v.abs() * inv);
            n[k] += 1.0;
        }
    }
    [0, 1].map(|k| {
        if n[k] == 0.0 {
            0
        } else {
            ((sum[k] / n[k]).clamp(0.0, 0.5) * 256.0).round() as u8
        }
    })
}

fn dequantize(m: i32, step: f32, offsets: [u8; 2]) -> f32 {
    let a = m.unsigned_abs();
    if a == 0 {
        return 0.0;
    }
    let off = f32::from(offsets[usize::from(a > 1)]) / 256.0;
    (a as f32 - off).copysign(m as f32) * step
}

/// A coded band's values, kept for the bands it conditions (its children and the chroma bands).
type Coded = std::collections::HashMap<(usize, usize, usize), Vec<i32>>;

/// The context-model view of leaf (d, i) of channel c.
fn band_of<'a>(
    h: &Header,
    lay: &Layout,
    coded: &'a Coded,
    c: usize,
    d: usize,
    i: usize,
    max: u32,
) -> Band<'a> {
    let (bh, bw) = lay.shape(d);
    let side = |cc: usize, dd: usize, ii: usize| {
        let (sh, sw) = lay.shape(dd);
        coded.get(&(cc, dd, ii)).map(|v| Side {
            values: v,
            h: sh,
            w: sw,
        })
    };
    let lowpass = Tree::is_lowpass(i);
    Band {
        h: bh,
        w: bw,
        two_d: lay.two_d(),
        class: usize::from(c > 0) + if lowpass { 2 } else { 0 },
        orientation: i % lay.arity,
        parent: if lowpass {
            None
        } else {
            h.trees[c].parent(d, i).and_then(|(pd, pi)| side(c, pd, pi))
        },
        cross: if c > 0 && !lowpass && h.trees[0].is_leaf(d, i) {
            side(0, d, i)
        } else {
            None
        },
        max,
    }
}

/// Quantizes and codes the analysed levels at the header's step; returns the stream.
fn code_at(
    h: &mut Header,
    lay: &Layout,
    levels: &[Vec<f32>],
    shape: TreeShape,
) -> Result<Vec<u8>, CodecError> {
    let energy = channel_energy(h, levels);
    h.trees = (0..h.channels)
        .map(|c| choose_tree(h, lay, levels, c, shape, energy[c]))
        .collect();
    h.bands.clear();
    let mut models = Models::default();
    let mut enc = model::Encoder(Default::default());
    let mut coded = Coded::new();
    let mut check = model::Check::default();
    let too_big = |max: u32| {
        CodecError::Request(format!(
            "a quantized value of {max} exceeds the format's {MAX_INDEX}; use a larger step"
        ))
    };
    for c in 0..h.channels {
        let leaves: Vec<(usize, usize)> = h.trees[c].leaves().collect();
        for (d, i) in leaves {
            let x = &levels[d][lay.band(d, c, i)];
            let scale = scale_of(h, x, energy[c], d, i);
            let inv = 1.0 / band_step(h, c, d, i, scale);
            let (_, w) = lay.shape(d);
            let mut vals = vec![0i32; x.len()];
            let stored = if Tree::is_lowpass(i) {
                let q: Vec<i32> = x.iter().map(|&v| (v * inv).round() as i32).collect();
                let res = residuals(&q, w, lay.two_d());
                let max = res.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
                if max > MAX_INDEX {
                    return Err(too_big(max));
                }
                let band = band_of(h, lay, &coded, c, d, i, max);
                model::code_band(&mut enc, &mut models, &band, &mut vals, |j, _| res[j])?;
                check.add(&vals);
                h.bands.push(BandHeader {
                    max,
                    scale,
                    ..BandHeader::default()
                });
                q
            } else {
                let max = x
                    .iter()
                    .map(|&v| (v.abs() * inv + 0.5) as u32)
                    .max()
                    .unwrap_or(0);
                if max > MAX_INDEX {
                    return Err(too_big(max));
                }
                let band = band_of(h, lay, &coded, c, d, i, max);
                model::code_band(&mut enc, &mut models, &band, &mut vals, |j, costs| {
                    rdo(x[j] * inv, costs, max)
                })?;
                check.add(&vals);
                // A hearing-tuned band quantized away entirely keeps its energy as noise.
                let noise = if h.tune == Tune::Hearing && vals.iter().all(|&v| v == 0) {
                    let ms = x.iter().map(|&v| f64::from(v * inv).powi(2)).sum::<f64>()
                        / x.len().max(1) as f64;
                    (ms.sqrt() * 128.0).round().min(128.0) as u8
                } else {
                    0
                };
                h.bands.push(BandHeader {
                    max,
                    offsets: offsets(x, &vals, inv),
                    scale,
                    noise,
                });
                vals
            };
            coded.insert((c, d, i), stored);
        }
    }
    check.seal(&mut enc)?;
    Ok(container::write(h, &model::finish(enc)))
}

/// Encodes planes [channel][dims] (already in the coded color space) with `rate`.
fn encode_planes(
    ctx: &Context,
    mut h: Header,
    planes: &[f32],
    opts: &Options,
    target_bits: impl Fn(f64) -> f64,
) -> Result<Vec<u8>, CodecError> {
    let lay = Layout::of(&h)?;
    let levels = analyse(ctx, &h, &lay, planes)?;
    match opts.rate {
        Rate::Quality(q) => {
            h.step = step_of_quality(q);
            code_at(&mut h, &lay, &levels, opts.tree)
        }
        Rate::Target(t) => {
            let budget = target_bits(t) / 8.0;
            // Bisection on log2(step): the size falls as the step grows (nearly monotonically: the
            // encoder's choices can wobble it, so the largest stream within the budget is kept).
            let (mut lo, mut hi) = (-4.0f32, 12.0f32);
            let mut best: Option<Vec<u8>> = None;
            for _ in 0..16 {
                let mid = 0.5 * (lo + hi);
                h.step = mid.exp2();
                let s = code_at(&mut h, &lay, &levels, opts.tree)?;
                if s.len() as f64 <= budget {
                    hi = mid;
                    if best.as_ref().is_none_or(|b| b.len() < s.len()) {
                        best = Some(s);
                    }
                } else {
                    lo = mid;
                }
            }
            match best {
                Some(s) => Ok(s),
                None => {
                    h.step = hi.exp2();
                    code_at(&mut h, &lay, &levels, opts.tree)
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
    if opts.tune == Tune::Hearing {
        return Err(CodecError::Request(
            "--tune hearing is for audio; images take psnr or visual".into(),
        ));
    }
    let levels = default_levels(&[img.height, img.width], opts.levels, 6);
    let h = Header {
        kind: Kind::Image,
        channels: img.channels,
        wavelet: opts.wavelet,
        mode: Mode::Periodization,
        levels,
        tune: opts.tune,
        width: img.width,
        height: img.height,
        sample_rate: 0,
        step: 1.0,
        trees: Vec::new(),
        bands: Vec::new(),
    };
    let pixels = (img.width * img.height) as f64;
    encode_planes(ctx, h, &image_planes(img), opts, |bpp| bpp * pixels)
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
    if opts.tune == Tune::Visual {
        return Err(CodecError::Request(
            "--tune visual is for images; audio takes psnr or hearing".into(),
        ));
    }
    let n = a.samples.len() / a.channels;
    let planes = a.planes();
    let h = Header {
        kind: Kind::Audio,
        channels: a.channels,
        wavelet: opts.wavelet,
        mode: Mode::Periodization,
        levels: default_levels(&[n], opts.levels, 9),
        tune: opts.tune,
        width: n,
        height: 1,
        sample_rate: a.sample_rate,
        step: 1.0,
        trees: Vec::new(),
        bands: Vec::new(),
    };
    let seconds = n as f64 / f64::from(a.sample_rate);
    encode_planes(ctx, h, &planes, opts, |kbps| kbps * 1000.0 * seconds)
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

/// What entropy decoding gives: each level of the full packet layout with the trees' leaves at their
/// places (zeros elsewhere), or empty where no leaf is that deep.
#[derive(Debug, Clone, PartialEq)]
pub struct Coefficients {
    /// Per depth, the level's dequantized leaves.
    pub levels: Vec<Vec<f32>>,
    /// Per depth, the length a level's array has when it holds any leaf.
    pub level_lens: Vec<usize>,
}

/// The part of decoding that needs no device: parses and checks the container, decodes every leaf band
/// with the context model and dequantizes, giving the header and the coefficients the inverse transform
/// takes. Everything a stranger's bytes can reach before the GPU is here, so this is what the `.wrg` fuzz
/// target runs.
pub fn decode_coefficients(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(Header, Coefficients), CodecError> {
    let corrupt = |e: CodecError| CodecError::Corrupt(e.to_string());
    let (h, payload) = container::read(bytes, |h| {
        let samples = (h.channels * h.width) as u64 * h.height as u64;
        if samples > limits.max_samples {
            return Err(CodecError::Request(format!(
                "the stream declares {samples} samples; the decoder's limit is {} (Limits::max_samples)",
                limits.max_samples
            )));
        }
        packet_of(h).map(|_| ()).map_err(corrupt)
    })?;
    let lay = Layout::of(&h).map_err(corrupt)?;
    let coded_values: usize = h
        .trees
        .iter()
        .flat_map(|t| t.leaves())
        .zip(&h.bands)
        .filter(|(_, b)| b.max > 0)
        .map(|((d, _), _)| lay.band_len(d))
        .sum();
    model::check_payload(payload.len(), coded_values)?;
    let level_lens: Vec<usize> = (0..=h.levels).map(|d| lay.level_len(d)).collect();
    let mut levels: Vec<Vec<f32>> = vec![Vec::new(); h.levels + 1];
    for t in &h.trees {
        for (d, _) in t.leaves() {
            if levels[d].is_empty() {
                levels[d] = vec![0.0; level_lens[d]];
            }
        }
    }
    let mut dec = model::decoder(payload)?;
    let mut check = model::Check::default();
    let mut models = Models::default();
    let mut coded = Coded::new();
    let mut headers = h.bands.iter();
    for c in 0..h.channels {
        for (d, i) in h.trees[c].leaves() {
            let bh = *headers
                .next()
                .ok_or_else(|| CodecError::Corrupt("fewer band headers than leaves".into()))?;
            let step = band_step(&h, c, d, i, bh.scale);
            let (_, w) = lay.shape(d);
            let range = lay.band(d, c, i);
            let mut vals = vec![0i32; range.len()];
            let band = band_of(&h, &lay, &coded, c, d, i, bh.max);
            model::code_band(&mut dec, &mut models, &band, &mut vals, |_, _| 0)?;
            check.add(&vals);
            let out = &mut levels[d][range];
            if Tree::is_lowpass(i) {
                // Undo the prediction in coding order, so each prediction sees the values it saw when
                // encoding; a crafted payload's residuals can walk a prediction chain past i32, which is an
                // error, not a wrap.
                for j in 0..vals.len() {
                    let p = predict(&vals, j / w, j % w, w, lay.two_d());
                    vals[j] = vals[j].checked_add(p).ok_or_else(|| {
                        CodecError::Corrupt("the entropy-coded payload is malformed".into())
                    })?;
                }
                for (o, &v) in out.iter_mut().zip(&vals) {
                    *o = v as f32 * step;
                }
            } else if bh.max == 0 && bh.noise > 0 {
                let seed = ((c * 64 + d) as u64) << 32 | i as u64;
                fill_noise(out, f32::from(bh.noise) / 128.0 * step, seed);
            } else {
                for (o, &v) in out.iter_mut().zip(&vals) {
                    *o = dequantize(v, step, bh.offsets);
                }
            }
            coded.insert((c, d, i), vals);
        }
    }
    check.seal(&mut dec)?;
    Ok((h, Coefficients { levels, level_lens }))
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
    let (h, coeffs) = decode_coefficients(bytes, limits)?;
    let lay = Layout::of(&h)?;
    let planes = synthesise(ctx, &h, &lay, &coeffs.levels)?;
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
