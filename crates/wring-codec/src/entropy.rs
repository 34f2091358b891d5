//! Dead-zone uniform quantization of wavelet packet coefficients and their entropy coding with
//! constriction's ANS coder. Each coefficient is coded with a leakily quantized Laplace model whose scale
//! is predicted from the magnitudes of neighbours already coded in the same subband (left, above, above-left,
//! above-right in 2-D; the two previous samples in 1-D) and the subband's mean magnitude, sent in the
//! header. Encoder and decoder compute the same predictions from the same integers.

use constriction::UnwrapInfallible as _;
use constriction::stream::model::DefaultLeakyQuantizer;
use constriction::stream::stack::DefaultAnsCoder;
use constriction::stream::{Decode as _, Encode as _};
use probability::distribution::Laplace;

use crate::CodecError;

/// Indices are rounded toward zero by this much more than plain rounding: a dead zone around zero, where
/// most high-frequency coefficients fall.
const DEAD_ZONE: f32 = 0.2;

/// Quantizes `c / step` with a dead zone: `sign(c) * floor(|c| / step + 0.5 - DEAD_ZONE)`.
pub fn quantize(c: &[f32], step: f32) -> Vec<i32> {
    c.iter()
        .map(|&v| {
            (v.abs() / step + 0.5 - DEAD_ZONE)
                .floor()
                .max(0.0)
                .copysign(v) as i32
        })
        .collect()
}

/// Reconstructs `q * step`, nudged toward zero, where a Laplace-distributed coefficient's mean lies within
/// its quantization interval.
pub fn dequantize(q: &[i32], step: f32) -> Vec<f32> {
    q.iter()
        .map(|&v| {
            if v == 0 {
                0.0
            } else {
                (v.abs() as f32 - 0.1).copysign(v as f32) * step
            }
        })
        .collect()
}

/// What the decoder needs to know of one subband before its symbols: the largest magnitude (the model's
/// support) and the mean magnitude in 1/256 units (the scale prior).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubbandHeader {
    /// Largest |q| in the subband (0: every index is zero and nothing is coded).
    pub max: u32,
    /// Mean |q| times 256, saturated.
    pub mean: u16,
}

/// The largest index magnitude a stream may carry; keeps hostile headers from building huge models.
pub const MAX_INDEX: u32 = 1 << 20;

impl SubbandHeader {
    /// The header of a subband's indices.
    pub fn of(q: &[i32]) -> SubbandHeader {
        let max = q.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        let mean =
            q.iter().map(|v| f64::from(v.unsigned_abs())).sum::<f64>() / q.len().max(1) as f64;
        SubbandHeader {
            max,
            mean: (mean * 256.0).round().min(f64::from(u16::MAX)) as u16,
        }
    }
}

/// The lowpass subband's prediction of the value at (y, x) from decoded neighbours: LOCO-I's median edge
/// detector in 2-D, the previous value in 1-D. Every other subband is predicted as zero.
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

/// The Laplace scale for the symbol at (y, x) of a subband [h][w] (h = 1 for 1-D signals) from already
/// decoded neighbours.
fn scale(q: &[i32], y: usize, x: usize, w: usize, two_d: bool, mean: f64) -> f64 {
    let at = |yy: usize, xx: usize| f64::from(q[yy * w + xx].unsigned_abs());
    let ctx = if two_d {
        let left = if x > 0 { at(y, x - 1) } else { 0.0 };
        let (up, up_left, up_right) = if y > 0 {
            (
                at(y - 1, x),
                if x > 0 { at(y - 1, x - 1) } else { 0.0 },
                if x + 1 < w { at(y - 1, x + 1) } else { 0.0 },
            )
        } else {
            (0.0, 0.0, 0.0)
        };
        (2.0 * left + 2.0 * up + up_left + up_right) / 6.0
    } else {
        let l1 = if x > 0 { at(0, x - 1) } else { 0.0 };
        let l2 = if x > 1 { at(0, x - 2) } else { 0.0 };
        (2.0 * l1 + l2) / 3.0
    };
    (0.12 + 0.75 * ctx + 0.35 * mean).max(0.05)
}

/// The residuals a subband is coded as: the indices minus their predictions (only the lowpass subband,
/// `lowpass`, has non-zero predictions).
fn residuals(band: &[i32], w: usize, two_d: bool, lowpass: bool) -> Vec<i32> {
    if !lowpass {
        return band.to_vec();
    }
    (0..band.len())
        .map(|i| band[i] - predict(band, i / w, i % w, w, two_d))
        .collect()
}

/// Codes every subband's indices (slices of \[h\]\[w\], `per_channel` subbands per channel with the lowpass one
/// first, as the packet transform orders them) onto one ANS stack; returns the headers and the words. A
/// subband's header describes its residuals.
pub fn encode(
    q: &[i32],
    per_channel: usize,
    h: usize,
    w: usize,
    two_d: bool,
) -> Result<(Vec<SubbandHeader>, Vec<u32>), CodecError> {
    let size = h * w;
    let res: Vec<Vec<i32>> = q
        .chunks_exact(size)
        .enumerate()
        .map(|(b, band)| residuals(band, w, two_d, b % per_channel == 0))
        .collect();
    let headers: Vec<SubbandHeader> = res.iter().map(|r| SubbandHeader::of(r)).collect();
    let mut coder = DefaultAnsCoder::new();
    // ANS is a stack: encode the last symbol first so that the decoder meets them in order.
    for (band, hdr) in res.iter().zip(&headers).rev() {
        if hdr.max == 0 {
            continue;
        }
        if hdr.max > MAX_INDEX {
            return Err(CodecError::Request(format!(
                "an index of {} exceeds the format's {MAX_INDEX}; use a larger step",
                hdr.max
            )));
        }
        let r = hdr.max as i32;
        let quantizer = DefaultLeakyQuantizer::new(-r..=r);
        let mean = f64::from(hdr.mean) / 256.0;
        for i in (0..size).rev() {
            let model =
                quantizer.quantize(Laplace::new(0.0, scale(band, i / w, i % w, w, two_d, mean)));
            coder
                .encode_symbol(band[i], model)
                .map_err(|e| CodecError::Request(format!("entropy coding failed: {e}")))?;
        }
    }
    Ok((headers, coder.into_compressed().unwrap_infallible()))
}

/// The fewest bits any symbol of a coded subband (one whose `max` is above 0) can take: the model's
/// Laplace scale is at least 0.12 (see [`scale`]), so no symbol is more likely than
/// P(|x| <= 0.5) = 1 - exp(-0.5 / 0.12), about 0.9845, and each costs at least -log2 of that, about
/// 0.0225 bits. Taken as 0.01 for margin against the quantized probabilities.
const MIN_BITS_PER_CODED_SYMBOL: f64 = 0.01;

/// Checks that `words` of payload can hold the coded subbands before anything is sized by them: an ANS
/// stream carries at most its bits plus its 64-bit state of information, and every symbol of a coded
/// subband consumes at least `MIN_BITS_PER_CODED_SYMBOL`. (All-zero subbands cost nothing and are not
/// bounded by the payload: the declared shape's own limit covers them.)
pub fn check_payload(
    words: usize,
    headers: &[SubbandHeader],
    size: usize,
) -> Result<(), CodecError> {
    let coded = headers.iter().filter(|h| h.max > 0).count() as f64 * size as f64;
    let bits = 32.0 * words as f64 + 64.0;
    if coded * MIN_BITS_PER_CODED_SYMBOL > bits {
        return Err(CodecError::Corrupt(format!(
            "{coded} coded coefficients cannot fit in a payload of {words} words"
        )));
    }
    Ok(())
}

/// Decodes what [`encode`] wrote.
pub fn decode(
    words: Vec<u32>,
    headers: &[SubbandHeader],
    per_channel: usize,
    h: usize,
    w: usize,
    two_d: bool,
) -> Result<Vec<i32>, CodecError> {
    let size = h * w;
    check_payload(words.len(), headers, size)?;
    let corrupt = || CodecError::Corrupt("the entropy-coded payload is malformed".into());
    let mut coder = DefaultAnsCoder::from_compressed(words).map_err(|_| corrupt())?;
    let mut out = vec![0i32; size * headers.len()];
    let mut res = vec![0i32; size];
    for (b, (band, hdr)) in out.chunks_exact_mut(size).zip(headers).enumerate() {
        res.fill(0);
        if hdr.max > 0 {
            let r = hdr.max as i32;
            let quantizer = DefaultLeakyQuantizer::new(-r..=r);
            let mean = f64::from(hdr.mean) / 256.0;
            for i in 0..size {
                let model = quantizer
                    .quantize(Laplace::new(0.0, scale(&res, i / w, i % w, w, two_d, mean)));
                res[i] = coder.decode_symbol(model).map_err(|_| corrupt())?;
            }
        }
        // Undo the prediction in coding order, so each prediction sees the values it saw when encoding.
        let lowpass = b % per_channel == 0;
        for i in 0..size {
            let predicted = if lowpass {
                predict(band, i / w, i % w, w, two_d)
            } else {
                0
            };
            // Residuals of a crafted payload can walk a prediction chain past i32: an error, not a wrap.
            band[i] = res[i].checked_add(predicted).ok_or_else(corrupt)?;
        }
    }
    if !coder.is_empty() {
        return Err(CodecError::Corrupt(
            "the payload has data left over after the last symbol".into(),
        ));
    }
    Ok(out)
}
