//! The context model of format version 2: every subband's integers are coded in raster order through
//! constriction's range coder as a significance decision, a sign and a magnitude, each conditioned on
//! what the decoder already knows: the magnitudes of causal neighbours in the same subband, the parent
//! coefficient (the same orientation one scale coarser, the way EBCOT's successors and ECECOW condition),
//! and, for the chroma planes, the co-located luma coefficient. The binary decisions use adaptive
//! probabilities (two exponential-decay estimators averaged, as in modern video coders); magnitudes above 1
//! use a geometric distribution (a Laplace density quantized by constriction's leaky quantizer) whose mean
//! is the running mean of earlier magnitudes in the same activity context. Encoder and decoder run the same
//! code ([`code_band`]), so their contexts cannot drift apart.
//!
//! The encoder also chooses each value here (greedy rate-distortion optimised quantisation): it is offered
//! the exact cost in bits of every candidate under the model's current state.

use std::borrow::Borrow;
use std::num::NonZeroU16;

use constriction::stream::model::{
    DecoderModel, DefaultLeakyQuantizer, EncoderModel, EntropyModel,
};
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode as _, Encode as _};
use probability::distribution::Laplace;

use crate::CodecError;

/// Fixed-point precision of the binary models' probabilities.
const BIT_PRECISION: u32 = 16;
const ONE: u32 = 1 << BIT_PRECISION;
/// The least probability either outcome keeps (of 65,536), so no decision ever costs more than 11 bits.
const MIN_P: u32 = 32;

/// An adaptive probability that the next decision is `false`: two estimators, one quick (it follows a
/// change within a few dozen decisions) and one slow (it settles on a stable rate), averaged. Both start
/// as plain frequency counts (a step of 1 / (n + 2) after n decisions) and keep that step once it reaches
/// their floor, so a context that has seen a handful of decisions is already well estimated.
#[derive(Debug, Clone, Copy)]
pub struct Adaptive {
    fast: u16,
    slow: u16,
    seen: u16,
}

impl Default for Adaptive {
    fn default() -> Adaptive {
        Adaptive {
            fast: (ONE / 2) as u16,
            slow: (ONE / 2) as u16,
            seen: 0,
        }
    }
}

/// The quick estimator's slowest step is 1/FAST, the slow one's 1/SLOW.
const FAST: i32 = 20;
const SLOW: i32 = 160;

impl Adaptive {
    /// P(false) in units of 2^-16, within [MIN_P, ONE - MIN_P].
    fn p0(&self) -> u32 {
        ((u32::from(self.fast) + u32::from(self.slow)) / 2).clamp(MIN_P, ONE - MIN_P)
    }

    fn update(&mut self, bit: bool) {
        let n = i32::from(self.seen) + 2;
        let step = |p: u16, floor: i32| -> u16 {
            let p = i32::from(p);
            let target = if bit { 0 } else { (ONE - 1) as i32 };
            (p + (target - p) / n.min(floor)) as u16
        };
        self.fast = step(self.fast, FAST);
        self.slow = step(self.slow, SLOW);
        self.seen = self.seen.saturating_add(1).min(SLOW as u16);
    }

    /// The cost of `bit` in bits under the current state.
    pub fn bits(&self, bit: bool) -> f32 {
        let p0 = self.p0();
        cost(if bit { ONE - p0 } else { p0 })
    }
}

/// -log2(p / 2^16), from a table of 1,024 steps (p's top 10 bits are enough for rate estimates).
fn cost(p: u32) -> f32 {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..1024)
            .map(|i| -(((i as f32) + 0.5) / 1024.0).log2())
            .collect()
    });
    t[(p >> 6).min(1023) as usize]
}

/// One binary decision's model as constriction sees it: `false` takes [0, p0), `true` the rest.
#[derive(Debug, Clone, Copy)]
struct Bit(u32);

impl EntropyModel<16> for Bit {
    type Symbol = bool;
    type Probability = u16;
}

impl EncoderModel<16> for Bit {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl Borrow<bool>,
    ) -> Option<(u16, NonZeroU16)> {
        let (left, p) = if *symbol.borrow() {
            (self.0, ONE - self.0)
        } else {
            (0, self.0)
        };
        Some((left as u16, NonZeroU16::new(p as u16)?))
    }
}

impl DecoderModel<16> for Bit {
    fn quantile_function(&self, quantile: u16) -> (bool, u16, NonZeroU16) {
        let q = u32::from(quantile);
        let (bit, left, p) = if q < self.0 {
            (false, 0, self.0)
        } else {
            (true, self.0, ONE - self.0)
        };
        // p is at least MIN_P and below 2^16 by construction.
        (
            bit,
            left as u16,
            NonZeroU16::new(p as u16).expect("p >= MIN_P"),
        )
    }
}

/// What codes symbols: the range encoder (which is handed each symbol) or the range decoder (which
/// returns them). [`code_band`] is written once against this.
pub trait Coder {
    /// Whether this side encodes (and so knows every value before coding it).
    const ENCODES: bool;
    /// Codes one binary decision with an adaptive model and updates the model.
    fn bit(&mut self, model: &mut Adaptive, bit: bool) -> Result<bool, CodecError>;
    /// Codes one binary decision at P(false) = `p0` / 2^16 (within [MIN_P, 2^16 - MIN_P]).
    fn bit_at(&mut self, p0: u32, bit: bool) -> Result<bool, CodecError>;
    /// Codes `v` in 0..=max from a geometric distribution of ratio `r` (0 < r < 1).
    fn geometric(&mut self, quantizer: &Quantizer, r: f64, v: u32) -> Result<u32, CodecError>;
}

/// The leaky quantizer over one subband's magnitudes (0..=max).
pub struct Quantizer(DefaultLeakyQuantizer<f64, u32>);

impl std::fmt::Debug for Quantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Quantizer")
    }
}

impl Quantizer {
    /// Magnitudes from 0 to `max`.
    pub fn new(max: u32) -> Quantizer {
        Quantizer(DefaultLeakyQuantizer::new(0..=max))
    }

    /// A geometric distribution of ratio `r` as a Laplace density centred half a step below zero (its
    /// mass on [k - 0.5, k + 0.5) is then exactly (1 - r) r^k for every k >= 0).
    fn laplace(r: f64) -> Laplace {
        Laplace::new(-0.5, (-1.0 / r.ln()).max(0.02))
    }
}

/// The encoding side.
pub struct Encoder(pub DefaultRangeEncoder);

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoder")
    }
}

impl Coder for Encoder {
    const ENCODES: bool = true;

    fn bit(&mut self, model: &mut Adaptive, bit: bool) -> Result<bool, CodecError> {
        self.bit_at(model.p0(), bit)?;
        model.update(bit);
        Ok(bit)
    }

    fn bit_at(&mut self, p0: u32, bit: bool) -> Result<bool, CodecError> {
        self.0
            .encode_symbol(bit, Bit(p0))
            .map_err(|e| CodecError::Request(format!("entropy coding failed: {e}")))?;
        Ok(bit)
    }

    fn geometric(&mut self, quantizer: &Quantizer, r: f64, v: u32) -> Result<u32, CodecError> {
        self.0
            .encode_symbol(v, quantizer.0.quantize(Quantizer::laplace(r)))
            .map_err(|e| CodecError::Request(format!("entropy coding failed: {e}")))?;
        Ok(v)
    }
}

/// The decoding side.
pub struct Decoder(pub DefaultRangeDecoder);

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

fn corrupt() -> CodecError {
    CodecError::Corrupt("the entropy-coded payload is malformed".into())
}

impl Coder for Decoder {
    const ENCODES: bool = false;

    fn bit(&mut self, model: &mut Adaptive, b: bool) -> Result<bool, CodecError> {
        let bit = self.bit_at(model.p0(), b)?;
        model.update(bit);
        Ok(bit)
    }

    fn bit_at(&mut self, p0: u32, _: bool) -> Result<bool, CodecError> {
        self.0.decode_symbol(Bit(p0)).map_err(|_| corrupt())
    }

    fn geometric(&mut self, quantizer: &Quantizer, r: f64, _: u32) -> Result<u32, CodecError> {
        self.0
            .decode_symbol(quantizer.0.quantize(Quantizer::laplace(r)))
            .map_err(|_| corrupt())
    }
}

/// Activity buckets of the weighted neighbour magnitude sum (weights summing to 8).
const ACTIVITY: usize = 9;
/// Classes of the parent's or the co-located luma coefficient's magnitude: none or 0, 1, 2 or more.
const SIDE: usize = 3;

fn activity_bucket(n: u32) -> usize {
    match n {
        0 => 0,
        1..=2 => 1,
        3..=4 => 2,
        5..=8 => 3,
        9..=14 => 4,
        15..=24 => 5,
        25..=40 => 6,
        41..=80 => 7,
        _ => 8,
    }
}

fn side_class(v: Option<u32>) -> usize {
    match v {
        None | Some(0) => 0,
        Some(1) => 1,
        Some(_) => 2,
    }
}

/// The running mean of magnitudes above 2 in one context, as a geometric ratio.
#[derive(Debug, Clone, Copy)]
struct Mean {
    sum: f64,
    count: f64,
}

impl Default for Mean {
    fn default() -> Mean {
        Mean {
            sum: 2.0,
            count: 2.0,
        }
    }
}

impl Mean {
    fn ratio(&self) -> f64 {
        let m = (self.sum / self.count).max(0.02);
        m / (1.0 + m)
    }

    fn add(&mut self, v: u32) {
        self.sum += f64::from(v);
        self.count += 1.0;
        // Halving keeps the mean adaptive: old subbands weigh less than the current one.
        if self.count > 512.0 {
            self.sum *= 0.5;
            self.count *= 0.5;
        }
    }
}

/// Logistic mixing (as in the PAQ family of context-mixing compressors): several adaptive models each
/// predict the significance decision from their own context; their predictions are combined in the
/// logistic domain with weights learned online by gradient descent on the coding cost. All integer
/// arithmetic, so encoder and decoder agree on every platform.
mod mix {
    use std::sync::OnceLock;

    /// 1 / (1 + e^(-d / 256)) in 12 bits, by interpolation in a 33-entry table (exact integers).
    pub fn squash(d: i32) -> i32 {
        const T: [i32; 33] = [
            1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994,
            3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094,
        ];
        if d > 2047 {
            return 4095;
        }
        if d < -2047 {
            return 1;
        }
        let w = d & 127;
        let i = ((d >> 7) + 16) as usize;
        (T[i] * (128 - w) + T[i + 1] * w + 64) >> 7
    }

    /// The inverse of [`squash`]: ln(p / (1 - p)) * 256 for a 12-bit p.
    pub fn stretch(p: i32) -> i32 {
        static TABLE: OnceLock<Vec<i16>> = OnceLock::new();
        let t = TABLE.get_or_init(|| {
            let mut t = vec![2047i16; 4096];
            let mut next = 0usize;
            for x in -2047..=2047 {
                let v = squash(x) as usize;
                for slot in t.iter_mut().take(v + 1).skip(next) {
                    *slot = x as i16;
                }
                next = next.max(v + 1);
            }
            t
        });
        i32::from(t[p.clamp(0, 4095) as usize])
    }

    /// Inputs per decision: the models' stretched predictions and a bias.
    pub const INPUTS: usize = 4;

    /// One set of mixing weights (1.0 is 2^16).
    #[derive(Debug, Clone, Copy)]
    pub struct Weights([i32; INPUTS]);

    impl Default for Weights {
        fn default() -> Weights {
            Weights([22_000, 22_000, 22_000, 0])
        }
    }

    impl Weights {
        /// The mixed P(true) in 12 bits.
        pub fn predict(&self, x: &[i32; INPUTS]) -> i32 {
            let dot: i64 = self
                .0
                .iter()
                .zip(x)
                .map(|(&w, &v)| i64::from(w) * i64::from(v))
                .sum();
            squash((dot >> 16).clamp(-2047, 2047) as i32)
        }

        /// One gradient step toward `bit` after predicting `p`.
        pub fn update(&mut self, x: &[i32; INPUTS], p: i32, bit: bool) {
            let err = (i32::from(bit) << 12) - p;
            for (w, &v) in self.0.iter_mut().zip(x) {
                *w = w.saturating_add((err * v) >> 12);
            }
        }
    }
}

/// A 16-bit P(false) as a stretched 12-bit P(true).
fn stretched(p0: u32) -> i32 {
    mix::stretch(((ONE - p0) >> 4) as i32)
}

/// Buckets of the neighbour activity for the second significance model, finer than `ACTIVITY`.
fn fine_activity(n: u32) -> usize {
    match n {
        0..=11 => n as usize,
        12..=15 => 12,
        16..=23 => 13,
        24..=39 => 14,
        _ => 15,
    }
}

/// The adaptive state of one class of subbands (luma detail, chroma detail, luma lowpass, chroma
/// lowpass): it carries over from one subband to the next of its class.
#[derive(Debug, Clone)]
struct ClassModels {
    significant: Vec<Adaptive>,
    /// The second significance model: fine activity by orientation and whether left and above are set.
    significant_fine: Vec<Adaptive>,
    /// The third: the parent's neighbourhood finely, by the co-located luma value.
    significant_side: Vec<Adaptive>,
    mixers: Vec<mix::Weights>,
    above_one: Vec<Adaptive>,
    sign: Vec<Adaptive>,
    magnitude: Vec<Mean>,
}

impl Default for ClassModels {
    fn default() -> ClassModels {
        ClassModels {
            significant: vec![Adaptive::default(); ACTIVITY * PARENT * SIDE],
            significant_fine: vec![Adaptive::default(); 16 * 4 * 4],
            significant_side: vec![Adaptive::default(); 16 * 4],
            mixers: vec![mix::Weights::default(); ACTIVITY * 2],
            above_one: vec![Adaptive::default(); ACTIVITY * SIDE],
            sign: vec![Adaptive::default(); 9 * 4],
            magnitude: vec![Mean::default(); ACTIVITY],
        }
    }
}

/// Every adaptive model of a stream.
#[derive(Debug, Clone, Default)]
pub struct Models {
    classes: [ClassModels; 4],
}

/// A coded plane other than the subband itself that conditions it: the parent (half the size) or the
/// co-located luma subband (the same size).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Its values, \[h\]\[w\].
    pub values: &'a [i32],
    /// Its rows.
    pub h: usize,
    /// Its columns.
    pub w: usize,
}

impl Side<'_> {
    /// |value| at the position that covers (y, x) of a plane `shift` times finer (0: the same size).
    fn at(&self, y: usize, x: usize, shift: u32) -> u32 {
        let (y, x) = ((y >> shift).min(self.h - 1), (x >> shift).min(self.w - 1));
        self.values[y * self.w + x].unsigned_abs()
    }

    /// Twice |value| at the covering position plus its four neighbours' (clamped at the edges): the
    /// parent's neighbourhood, steadier than one coefficient.
    fn area(&self, y: usize, x: usize, shift: u32) -> u32 {
        let (y, x) = ((y >> shift).min(self.h - 1), (x >> shift).min(self.w - 1));
        let v = |yy: usize, xx: usize| self.values[yy * self.w + xx].unsigned_abs();
        2 * v(y, x)
            + v(y.saturating_sub(1), x)
            + v((y + 1).min(self.h - 1), x)
            + v(y, x.saturating_sub(1))
            + v(y, (x + 1).min(self.w - 1))
    }
}

/// Classes of the parent's neighbourhood ([`Side::area`]): none or 0, 1-2, 3-6, 7 or more.
const PARENT: usize = 4;

fn parent_class(v: Option<u32>) -> usize {
    match v {
        None | Some(0) => 0,
        Some(1..=2) => 1,
        Some(3..=6) => 2,
        Some(_) => 3,
    }
}

/// One subband as the coder sees it.
#[derive(Debug, Clone, Copy)]
pub struct Band<'a> {
    /// Rows (1 for 1-D signals).
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Whether neighbours above exist (2-D).
    pub two_d: bool,
    /// 0 luma detail, 1 chroma detail, 2 luma lowpass, 3 chroma lowpass.
    pub class: usize,
    /// The last split's band (0 lowpass .. 3 diagonal), which conditions the sign.
    pub orientation: usize,
    /// The parent subband, one scale coarser.
    pub parent: Option<Side<'a>>,
    /// The co-located luma subband (chroma only).
    pub cross: Option<Side<'a>>,
    /// The largest magnitude in the subband (its header's bound).
    pub max: u32,
}

/// The cost in bits of each candidate magnitude at one position, for the encoder's choice.
#[derive(Debug)]
pub struct Costs<'a> {
    /// The mixed P(insignificant) in units of 2^-16.
    significant: u32,
    above_one: &'a Adaptive,
    sign: [f32; 2],
    ratio: f64,
    max: u32,
}

impl Costs<'_> {
    /// Bits to code `v` (of magnitude at most the subband's bound) here.
    pub fn bits(&self, v: i32) -> f32 {
        let m = v.unsigned_abs();
        if m == 0 {
            return cost(self.significant);
        }
        let mut b = cost(ONE - self.significant) + self.sign[usize::from(v < 0)];
        if self.max > 1 {
            b += self.above_one.bits(m > 1);
            if m > 1 && self.max > 2 {
                let k = f64::from(m - 2);
                b += (-(1.0 - self.ratio).log2() - k * self.ratio.log2()) as f32;
            }
        }
        b
    }
}

fn sign_class(v: i32) -> usize {
    match v.signum() {
        0 => 0,
        1 => 1,
        _ => 2,
    }
}

/// Codes (or decodes into) `values`, a subband \[h\]\[w\] in raster order. The encoder's `choose` is
/// called at every position with the costs there and returns the value to code (its magnitude at most
/// `band.max`); the decoder never calls it.
pub fn code_band<C: Coder>(
    coder: &mut C,
    models: &mut Models,
    band: &Band<'_>,
    values: &mut [i32],
    mut choose: impl FnMut(usize, &Costs<'_>) -> i32,
) -> Result<(), CodecError> {
    let (h, w) = (band.h, band.w);
    debug_assert_eq!(values.len(), h * w);
    if band.max == 0 {
        values.fill(0);
        return Ok(());
    }
    let m = &mut models.classes[band.class];
    // Magnitudes above 2 exist only below a bound of 3 or more (constriction's quantizer needs two symbols).
    let quantizer = (band.max > 2).then(|| Quantizer::new(band.max - 2));
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let at = |yy: usize, xx: usize| values[yy * w + xx].unsigned_abs();
            let (n, left, up) = if band.two_d {
                let l = if x > 0 { at(y, x - 1) } else { 0 };
                let ll = if x > 1 { at(y, x - 2) } else { 0 };
                let (u, ul, ur, uu) = if y > 0 {
                    (
                        at(y - 1, x),
                        if x > 0 { at(y - 1, x - 1) } else { 0 },
                        if x + 1 < w { at(y - 1, x + 1) } else { 0 },
                        if y > 1 { at(y - 2, x) } else { 0 },
                    )
                } else {
                    (0, 0, 0, 0)
                };
                let n = 2 * l + 2 * u + ul + ur + ll + uu;
                let left = if x > 0 { values[i - 1] } else { 0 };
                let up = if y > 0 { values[i - w] } else { 0 };
                (n, left, up)
            } else {
                let l1 = if x > 0 { at(0, x - 1) } else { 0 };
                let l2 = if x > 1 { at(0, x - 2) } else { 0 };
                let l3 = if x > 2 { at(0, x - 3) } else { 0 };
                let l4 = if x > 3 { at(0, x - 4) } else { 0 };
                let n = 4 * l1 + 2 * l2 + l3 + l4;
                let left = if x > 0 { values[i - 1] } else { 0 };
                let left2 = if x > 1 { values[i - 2] } else { 0 };
                (n, left, left2)
            };
            let act = activity_bucket(n);
            // The parent is this band halved (rounded up) along each axis; a 1-D band's one row maps to
            // its parent's one row.
            let parent = band.parent.map(|p| p.at(y, x, 1));
            let cross = band.cross.map(|c| c.at(y, x, 0));
            let parent_area = band.parent.map(|p| p.area(y, x, 1));
            let (pc, cc) = (parent_class(parent_area), side_class(cross));
            let sig_ctx = (act * PARENT + pc) * SIDE + cc;
            let set = |v: u32| usize::from(v != 0);
            let fine_ctx = (fine_activity(n) * 4 + band.orientation) * 4
                + set(left.unsigned_abs()) * 2
                + set(up.unsigned_abs());
            let parent_fine = parent_area.unwrap_or(0).min(15) as usize;
            let side_ctx = parent_fine * 4 + cross.map_or(0, |c| c.min(3)) as usize;
            let inputs = [
                stretched(m.significant[sig_ctx].p0()),
                stretched(m.significant_fine[fine_ctx].p0()),
                stretched(m.significant_side[side_ctx].p0()),
                256,
            ];
            let mixer = act * 2 + usize::from(band.parent.is_some());
            let p_sig = m.mixers[mixer].predict(&inputs);
            let p0 = ((4096 - p_sig) << 4).clamp(MIN_P as i32, (ONE - MIN_P) as i32) as u32;
            let mag_ctx =
                act * SIDE + side_class(Some(parent.unwrap_or(0).max(cross.unwrap_or(0))));
            let sign_ctx = (sign_class(left) * 3 + sign_class(up)) * 4 + band.orientation;
            let v = if C::ENCODES {
                let costs = Costs {
                    significant: p0,
                    above_one: &m.above_one[mag_ctx],
                    sign: [m.sign[sign_ctx].bits(false), m.sign[sign_ctx].bits(true)],
                    ratio: m.magnitude[act].ratio(),
                    max: band.max,
                };
                choose(i, &costs)
            } else {
                0
            };
            let mag = v.unsigned_abs();
            let significant = coder.bit_at(p0, mag > 0)?;
            m.significant[sig_ctx].update(significant);
            m.significant_fine[fine_ctx].update(significant);
            m.significant_side[side_ctx].update(significant);
            m.mixers[mixer].update(&inputs, p_sig, significant);
            let value = if significant {
                let negative = coder.bit(&mut m.sign[sign_ctx], v < 0)?;
                let mag = if band.max > 1 && coder.bit(&mut m.above_one[mag_ctx], mag > 1)? {
                    let k = match &quantizer {
                        Some(q) => {
                            let r = m.magnitude[act].ratio();
                            coder.geometric(q, r, mag.saturating_sub(2))?
                        }
                        None => 0,
                    };
                    m.magnitude[act].add(k);
                    k + 2
                } else {
                    1
                };
                // The bound keeps a hostile stream's magnitudes within i32 and the header's promise.
                if mag > band.max {
                    return Err(corrupt());
                }
                if negative { -(mag as i32) } else { mag as i32 }
            } else {
                0
            };
            values[i] = value;
        }
    }
    Ok(())
}

/// The fewest bits any coded value can take: its significance decision, whose probability is at most
/// 1 - MIN_P / 2^16, costs at least -log2 of that, about 0.0007 bits. Taken as 0.0006 for margin.
const MIN_BITS_PER_VALUE: f64 = 0.0006;

/// Checks that `words` of payload can hold `coded` values (those of bands whose bound is above 0) before
/// any is decoded: a range coder's stream carries at most its bits plus its 64-bit state of information.
/// This bounds the work a short hostile stream can ask for (all-zero bands cost nothing and are bounded by
/// the decoder's sample limit instead).
pub fn check_payload(words: usize, coded: usize) -> Result<(), CodecError> {
    let bits = 32.0 * words as f64 + 64.0;
    if coded as f64 * MIN_BITS_PER_VALUE > bits {
        return Err(CodecError::Corrupt(format!(
            "{coded} coded coefficients cannot fit in a payload of {words} words"
        )));
    }
    Ok(())
}

/// A running check value over every coded value, which the stream ends with: a payload altered behind a
/// resealed checksum decodes to other values (range coding has no invalid streams), and the check value
/// tells.
#[derive(Debug, Clone, Copy)]
pub struct Check(u32);

impl Default for Check {
    fn default() -> Check {
        Check(0x811c_9dc5)
    }
}

impl Check {
    /// Folds a band's values in (FNV-1a over their bytes' low halves).
    pub fn add(&mut self, values: &[i32]) {
        for &v in values {
            self.0 = (self.0 ^ (v as u32 & 0xffff)).wrapping_mul(0x0100_0193);
        }
    }

    /// Codes the check value's 16 bits at even odds; the decoder compares them with its own.
    pub fn seal<C: Coder>(self, coder: &mut C) -> Result<(), CodecError> {
        let want = (self.0 ^ (self.0 >> 16)) as u16;
        let mut got = 0u16;
        for k in 0..16 {
            let bit = coder.bit(&mut Adaptive::default(), want >> k & 1 == 1)?;
            got |= u16::from(bit) << k;
        }
        if got != want {
            return Err(CodecError::Corrupt(
                "the payload does not match its check value".into(),
            ));
        }
        Ok(())
    }
}

/// The words of a finished encoder.
pub fn finish(e: Encoder) -> Vec<u32> {
    use constriction::UnwrapInfallible as _;
    e.0.into_compressed().unwrap_infallible()
}

/// A decoder over a payload.
pub fn decoder(words: Vec<u32>) -> Result<Decoder, CodecError> {
    DefaultRangeDecoder::from_compressed(words)
        .map(Decoder)
        .map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random-looking integers with clusters survive the round trip, and the costs the encoder is shown
    /// are within a few percent of what the stream spends.
    #[test]
    fn bands_round_trip_and_costs_match_the_stream() {
        let (h, w) = (24, 40);
        let mut seed = 7u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        };
        let values: Vec<i32> = (0..h * w)
            .map(|i| {
                let busy = (i / w) % 8 < 3;
                let r = rnd() % 100;
                let m = if busy {
                    r % 9
                } else if r < 10 {
                    1
                } else {
                    0
                };
                if rnd() % 2 == 0 {
                    m as i32
                } else {
                    -(m as i32)
                }
            })
            .collect();
        let max = values.iter().map(|v| v.unsigned_abs()).max().unwrap();
        let parent: Vec<i32> = (0..(h / 2) * (w / 2)).map(|i| (i % 3) as i32).collect();
        let band = Band {
            h,
            w,
            two_d: true,
            class: 0,
            orientation: 1,
            parent: Some(Side {
                values: &parent,
                h: h / 2,
                w: w / 2,
            }),
            cross: None,
            max,
        };
        let mut enc = Encoder(DefaultRangeEncoder::new());
        let mut models = Models::default();
        let mut coded = vec![0; h * w];
        let mut estimate = 0.0f64;
        code_band(&mut enc, &mut models, &band, &mut coded, |i, c| {
            estimate += f64::from(c.bits(values[i]));
            values[i]
        })
        .unwrap();
        assert_eq!(coded, values);
        let words = finish(enc);
        let spent = words.len() as f64 * 32.0;
        assert!(
            (spent - estimate).abs() < 0.05 * spent + 64.0,
            "the stream has {spent} bits, the costs said {estimate:.0}"
        );
        let mut dec = decoder(words).unwrap();
        let mut out = vec![0; h * w];
        code_band(&mut dec, &mut Models::default(), &band, &mut out, |_, _| 0).unwrap();
        assert_eq!(out, values);
    }
}
