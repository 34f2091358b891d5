//! The `.wrg` bitstream: a fixed header (magic, format version, signal kind, shape, sample rate, transform
//! and quantizer parameters), one small header per subband, the entropy-coded payload, and a CRC-32 of
//! everything before it. Every number read is checked before it sizes anything, so a truncated, corrupted
//! or hostile stream is an error, never a panic or an unbounded allocation.

use wring_runtime::kernels::wavelet::{Mode, Wavelet};

use crate::CodecError;
use crate::entropy::{MAX_INDEX, SubbandHeader};

/// The first four bytes of every stream.
pub const MAGIC: &[u8; 4] = b"WRG\x00";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// The most samples (pixels times channels) a stream may describe: 2^28, about a 16k x 16k RGB image.
pub const MAX_SAMPLES: u64 = 1 << 28;

/// The largest quantizer step a stream may declare.
pub const MAX_STEP: f32 = 65_536.0;

/// What the stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An 8-bit image, gray (1 channel) or RGB (3), coded in YCoCg.
    Image,
    /// 16-bit PCM audio.
    Audio,
}

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
    /// Packet levels.
    pub levels: usize,
    /// Width (images) or samples per channel (audio).
    pub width: usize,
    /// Height (images; 1 for audio).
    pub height: usize,
    /// Samples per second (audio; 0 for images).
    pub sample_rate: u32,
    /// Quantizer step of the first channel; the others scale it by fixed per-channel weights.
    pub step: f32,
    /// One per subband, channel-major.
    pub subbands: Vec<SubbandHeader>,
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
    let mut out = Vec::with_capacity(64 + h.subbands.len() * 2 + payload.len() * 4);
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
    for v in [
        h.width as u32,
        h.height as u32,
        h.sample_rate,
        h.step.to_bits(),
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for s in &h.subbands {
        put_varint(&mut out, u64::from(s.max));
        if s.max > 0 {
            put_varint(&mut out, u64::from(s.mean));
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

/// Parses and checks a stream; `subbands_of` gives the subband count a header implies (so the caller's
/// transform, not this parser, decides the layout).
pub fn read(
    bytes: &[u8],
    subbands_of: impl Fn(&Header) -> Result<usize, CodecError>,
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
    // most 2^31 times the step and a channel weight) finite in f32.
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
        width,
        height,
        sample_rate,
        step,
        subbands: Vec::new(),
    };
    let n = subbands_of(&header)?;
    // Each subband header takes at least one byte, so a count beyond the remaining bytes is a lie.
    if n > body.len() - r.at {
        return Err(bad("the stream is truncated (subband headers)"));
    }
    let mut subbands = Vec::with_capacity(n);
    for _ in 0..n {
        let max = r.varint()?;
        if max > u64::from(MAX_INDEX) {
            return Err(bad(format!(
                "a subband index bound of {max} exceeds {MAX_INDEX}"
            )));
        }
        let mean = if max > 0 { r.varint()? } else { 0 };
        let mean = u16::try_from(mean).map_err(|_| bad("a subband mean is out of range"))?;
        subbands.push(SubbandHeader {
            max: max as u32,
            mean,
        });
    }
    header.subbands = subbands;
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
