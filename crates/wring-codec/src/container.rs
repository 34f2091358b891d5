//! The `.wrg` bitstream, format version 2: a fixed header (magic, format version, signal kind, shape,
//! sample rate, transform, tuning and quantizer step), each channel's packet tree as split flags, one small
//! header per leaf subband (its largest magnitude and its reconstruction offsets), the range-coded payload,
//! and a CRC-32 of everything before it. Every number read is checked before it sizes anything, so a
//! truncated, corrupted or hostile stream is an error, never a panic or an unbounded allocation. Version 1
//! streams (a fixed full packet tree and one Laplace model per subband, wring before December 2026) are
//! refused with an error that says so.

use wring_runtime::kernels::wavelet::{Mode, Wavelet};

use crate::CodecError;
use crate::tree::{BitReader, BitWriter, Tree};

/// The first four bytes of every stream.
pub const MAGIC: &[u8; 4] = b"WRG\x00";
/// The format version this build writes and reads.
pub const VERSION: u8 = 2;
/// The most samples (pixels times channels) a stream may describe: 2^28, about a 16k x 16k RGB image.
pub const MAX_SAMPLES: u64 = 1 << 28;

/// The largest quantizer step a stream may declare.
pub const MAX_STEP: f32 = 65_536.0;

/// The largest index magnitude a stream may carry; keeps hostile headers from building huge models.
pub const MAX_INDEX: u32 = 1 << 20;

/// What the stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An 8-bit image, gray (1 channel) or RGB (3), coded in YCoCg.
    Image,
    /// 16-bit PCM audio.
    Audio,
}

/// What the quantizer steps are tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tune {
    /// One step for every subband of a channel: the least squared error for the rate (PSNR).
    #[default]
    Psnr,
    /// Coarser steps for the finest scales and more so for colour, where the eye is least sensitive
    /// (a contrast-sensitivity weighting like JPEG 2000's visual weights): better MS-SSIM, lower PSNR.
    Visual,
    /// Audio only: each band's step follows the threshold of hearing at its frequency and, more gently,
    /// its own loudness (so quantization noise follows the spectrum, as in perceptual audio coders), and
    /// bands quantized away entirely are refilled with noise of their energy: a lower SNR for a spectrum
    /// closer to the original's.
    Hearing,
}

impl Tune {
    /// Every tuning, in the stream's numbering.
    pub const ALL: [Tune; 3] = [Tune::Psnr, Tune::Visual, Tune::Hearing];

    /// The name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Tune::Psnr => "psnr",
            Tune::Visual => "visual",
            Tune::Hearing => "hearing",
        }
    }
}

/// One leaf subband's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BandHeader {
    /// Largest |value| coded in the subband (0: every value is zero and nothing is coded).
    pub max: u32,
    /// Reconstruction offsets toward zero, in 1/256 of a step, for magnitude 1 and for larger ones: where
    /// the coefficients that quantized to them lay on average (below the interval's middle, since the
    /// coefficients are Laplace-like).
    pub offsets: [u8; 2],
    /// The band's step is the stream's times 2^(scale / 4) (hearing-tuned streams; 0 otherwise).
    pub scale: i8,
    /// For a band whose values are all zero in a hearing-tuned stream: the RMS of the noise the decoder
    /// fills it with, in 1/128 of the band's step (0 otherwise).
    pub noise: u8,
}

/// The largest |scale| of a band (a step 256 times the stream's either way).
pub const MAX_SCALE: i8 = 32;

/// Everything before the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Image or audio.
    pub kind: Kind,
    /// Channels (1 or 3 for images, 1..=16 for audio).
    pub channels: usize,
    /// Transform.
    pub wavelet: Wavelet,
    /// Boundary mode of the transform.
    pub mode: Mode,
    /// The deepest level of the packet trees.
    pub levels: usize,
    /// What the steps are tuned for.
    pub tune: Tune,
    /// Width (images) or samples per channel (audio).
    pub width: usize,
    /// Height (images; 1 for audio).
    pub height: usize,
    /// Samples per second (audio; 0 for images).
    pub sample_rate: u32,
    /// Quantizer step of the first channel; the others and the subbands scale it by fixed weights.
    pub step: f32,
    /// One packet tree per channel.
    pub trees: Vec<Tree>,
    /// One per leaf subband: channel by channel, each channel's leaves in coding order.
    pub bands: Vec<BandHeader>,
}

impl Header {
    /// Children per split: 4 for images, 2 for audio.
    pub fn arity(&self) -> usize {
        match self.kind {
            Kind::Image => 4,
            Kind::Audio => 2,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads from a byte slice, with an error for every read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| CodecError::Corrupt("the stream is truncated".into()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Corrupt(
            "a variable-length number runs past 64 bits".into(),
        ))
    }
}

fn bad(what: impl Into<String>) -> CodecError {
    CodecError::Corrupt(what.into())
}

/// Serializes a stream.
pub fn write(h: &Header, payload: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + h.bands.len() * 3 + payload.len() * 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(match h.kind {
        Kind::Image => 0,
        Kind::Audio => 1,
    });
    out.push(h.channels as u8);
    out.push(
        Wavelet::ALL
            .iter()
            .position(|&w| w == h.wavelet)
            .expect("a known wavelet") as u8,
    );
    out.push(
        Mode::ALL
            .iter()
            .position(|&m| m == h.mode)
            .expect("a known mode") as u8,
    );
    out.push(h.levels as u8);
    out.push(
        Tune::ALL
            .iter()
            .position(|&t| t == h.tune)
            .expect("a known tuning") as u8,
    );
    for v in [
        h.width as u32,
        h.height as u32,
        h.sample_rate,
        h.step.to_bits(),
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut bits = BitWriter::default();
    for t in &h.trees {
        t.write(&mut bits);
    }
    out.extend_from_slice(&bits.bytes);
    for b in &h.bands {
        put_varint(&mut out, u64::from(b.max));
        if b.max > 0 {
            out.extend_from_slice(&b.offsets);
        }
        if h.tune == Tune::Hearing {
            out.push(b.scale as u8);
            if b.max == 0 {
                out.push(b.noise);
            }
        }
    }
    put_varint(&mut out, payload.len() as u64);
    for w in payload {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses and checks a stream; `check` validates the shape a header declares before its trees are read
/// (so the caller's transform, not this parser, decides which shapes and depths are possible).
pub fn read(
    bytes: &[u8],
    check: impl Fn(&Header) -> Result<(), CodecError>,
) -> Result<(Header, Vec<u32>), CodecError> {
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(bad("not a wring stream (bad magic)"));
    }
    if bytes.len() < 8 {
        return Err(bad("the stream is truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad(
            "checksum mismatch: the stream is truncated or corrupted",
        ));
    }
    let mut r = Reader { bytes: body, at: 4 };
    let version = r.u8()?;
    if version == 1 {
        return Err(CodecError::Unsupported(format!(
            "format version 1 (wring's first codec, a fixed packet tree); this build reads version \
             {VERSION}: decode it with an older wring and encode it again"
        )));
    }
    if version != VERSION {
        return Err(CodecError::Unsupported(format!(
            "format version {version}; this build reads version {VERSION}"
        )));
    }
    let kind = match r.u8()? {
        0 => Kind::Image,
        1 => Kind::Audio,
        k => return Err(bad(format!("unknown signal kind {k}"))),
    };
    let channels = usize::from(r.u8()?);
    let wavelet = *Wavelet::ALL
        .get(usize::from(r.u8()?))
        .ok_or_else(|| bad("unknown wavelet"))?;
    let mode = *Mode::ALL
        .get(usize::from(r.u8()?))
        .ok_or_else(|| bad("unknown boundary mode"))?;
    let levels = usize::from(r.u8()?);
    let tune = *Tune::ALL
        .get(usize::from(r.u8()?))
        .ok_or_else(|| bad("unknown tuning"))?;
    let (width, height, sample_rate, step) = (
        r.u32()? as usize,
        r.u32()? as usize,
        r.u32()?,
        f32::from_bits(r.u32()?),
    );
    let channels_ok = match kind {
        Kind::Image => channels == 1 || channels == 3,
        Kind::Audio => (1..=16).contains(&channels) && height == 1,
    };
    let tune_ok = match kind {
        Kind::Image => tune != Tune::Hearing,
        Kind::Audio => tune != Tune::Visual,
    };
    if !tune_ok {
        return Err(bad(format!(
            "tuning {} does not apply to {}",
            tune.name(),
            if kind == Kind::Image {
                "images"
            } else {
                "audio"
            }
        )));
    }
    if !channels_ok || width == 0 || height == 0 || levels > 12 {
        return Err(bad(format!(
            "implausible shape: {channels} channels of {width} x {height}, {levels} levels"
        )));
    }
    // In u128: three channels of 2^32 - 1 squared overflow u64 (and would wrap under the limit).
    if (channels as u128) * (width as u128) * (height as u128) > u128::from(MAX_SAMPLES) {
        return Err(bad(format!(
            "{channels} x {width} x {height} samples exceed the format's limit of {MAX_SAMPLES}"
        )));
    }
    // hound refuses (by panicking) a WAV of rate 0; no real audio is above 768 kHz.
    if kind == Kind::Audio && !(1..=768_000).contains(&sample_rate) {
        return Err(bad(format!("implausible sample rate {sample_rate} Hz")));
    }
    // The encoder's steps stay below 2^12; the bound keeps every dequantized coefficient (an index of at
    // most 2^20 times the step and the largest weight) finite in f32.
    if !(step.is_finite() && step > 0.0 && step <= MAX_STEP) {
        return Err(bad(format!(
            "quantizer step {step} is not a positive number up to {MAX_STEP}"
        )));
    }
    let mut header = Header {
        kind,
        channels,
        wavelet,
        mode,
        levels,
        tune,
        width,
        height,
        sample_rate,
        step,
        trees: Vec::new(),
        bands: Vec::new(),
    };
    check(&header)?;
    let mut bits = BitReader::new(&body[r.at..]);
    for _ in 0..channels {
        header
            .trees
            .push(Tree::read(header.arity(), levels, &mut bits)?);
    }
    r.at += bits.bytes_used();
    let n: usize = header.trees.iter().map(Tree::leaf_count).sum();
    // Each band header takes at least one byte, so a count beyond the remaining bytes is a lie.
    if n > body.len() - r.at {
        return Err(bad("the stream is truncated (subband headers)"));
    }
    let mut bands = Vec::with_capacity(n);
    for _ in 0..n {
        let max = r.varint()?;
        if max > u64::from(MAX_INDEX) {
            return Err(bad(format!(
                "a subband magnitude bound of {max} exceeds {MAX_INDEX}"
            )));
        }
        let offsets = if max > 0 {
            let o = r.take(2)?;
            if o.iter().any(|&v| v > 128) {
                return Err(bad("a reconstruction offset is above half a step"));
            }
            [o[0], o[1]]
        } else {
            [0, 0]
        };
        let (mut scale, mut noise) = (0i8, 0u8);
        if tune == Tune::Hearing {
            scale = r.u8()? as i8;
            if !(-MAX_SCALE..=MAX_SCALE).contains(&scale) {
                return Err(bad(format!(
                    "a band's step scale {scale} is beyond +-{MAX_SCALE}"
                )));
            }
            if max == 0 {
                noise = r.u8()?;
                if noise > 128 {
                    return Err(bad("a band's noise level is above a step"));
                }
            }
        }
        bands.push(BandHeader {
            max: max as u32,
            offsets,
            scale,
            noise,
        });
    }
    header.bands = bands;
    let words = r.varint()?;
    let rest = (body.len() - r.at) as u64;
    if words.checked_mul(4) != Some(rest) {
        return Err(bad(format!(
            "the payload claims {words} words but {rest} bytes follow"
        )));
    }
    let payload = r
        .take(rest as usize)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((header, payload))
}
