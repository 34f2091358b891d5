//! `shaders/dwt.wgsl`: one level of the discrete wavelet transform along one axis of a batch, forward
//! (analysis into a low and a high band) or inverse (synthesis from both), with pywavelets' filters, boundary
//! modes and output lengths. 2-D transforms and wavelet packet trees are sequences of these launches (see
//! `wring-codec`'s `wpt`).
//!
//! Layout. The contiguous side is `[outer_hi][outer_lo][n][inner]` (the forward input, the inverse output);
//! the banded side (forward output, inverse input) is addressed through strides: element k of band b at
//! outer (hi, lo) and inner r is `b * band + hi * hi_stride + lo * lo_stride + k * k_stride + r`. Choosing
//! the strides puts the bands where a 2-D level or a packet tree wants them, with no copies.
//!
//! Variants are built per direction, sample type (f32; f16 with `SHADER_F16`, summing in f32) and filter
//! length (`TAPS`), so the filters and a sliding window of samples stay in registers: each step along a
//! line loads only the samples that enter the window.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The wavelets wring implements, with pywavelets' names and filter coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wavelet {
    /// Haar (db1).
    Haar,
    /// Daubechies 2 (4 taps).
    Db2,
    /// Daubechies 4 (8 taps).
    Db4,
    /// Symlet 4 (8 taps).
    Sym4,
    /// Biorthogonal 2.2 (LeGall 5/3 shape; pywavelets pads it to 6 taps).
    Bior2_2,
    /// Biorthogonal 4.4, the CDF 9/7 pair (JPEG 2000's lossy wavelet, WaLLoC's choice; 10 taps padded).
    Bior4_4,
}

#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const HAAR_DEC_LO: &[f64] = &[0.7071067811865476, 0.7071067811865476];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const HAAR_REC_LO: &[f64] = &[0.7071067811865476, 0.7071067811865476];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const DB2_DEC_LO: &[f64] = &[
    -0.12940952255126037,
    0.2241438680420134,
    0.8365163037378079,
    0.48296291314453416,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const DB2_REC_LO: &[f64] = &[
    0.48296291314453416,
    0.8365163037378079,
    0.2241438680420134,
    -0.12940952255126037,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const DB4_DEC_LO: &[f64] = &[
    -0.010597401785069032,
    0.0328830116668852,
    0.030841381835560764,
    -0.18703481171909309,
    -0.027983769416859854,
    0.6308807679298589,
    0.7148465705529157,
    0.2303778133088965,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const DB4_REC_LO: &[f64] = &[
    0.2303778133088965,
    0.7148465705529157,
    0.6308807679298589,
    -0.027983769416859854,
    -0.18703481171909309,
    0.030841381835560764,
    0.0328830116668852,
    -0.010597401785069032,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const SYM4_DEC_LO: &[f64] = &[
    -0.07576571478927333,
    -0.02963552764599851,
    0.49761866763201545,
    0.8037387518059161,
    0.29785779560527736,
    -0.09921954357684722,
    -0.012603967262037833,
    0.0322231006040427,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const SYM4_REC_LO: &[f64] = &[
    0.0322231006040427,
    -0.012603967262037833,
    -0.09921954357684722,
    0.29785779560527736,
    0.8037387518059161,
    0.49761866763201545,
    -0.02963552764599851,
    -0.07576571478927333,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const BIOR2_2_DEC_LO: &[f64] = &[
    0.0,
    -0.1767766952966369,
    0.3535533905932738,
    1.0606601717798212,
    0.3535533905932738,
    -0.1767766952966369,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const BIOR2_2_REC_LO: &[f64] = &[
    0.0,
    0.3535533905932738,
    0.7071067811865476,
    0.3535533905932738,
    0.0,
    0.0,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const BIOR4_4_DEC_LO: &[f64] = &[
    0.0,
    0.03782845550726404,
    -0.023849465019556843,
    -0.11062440441843718,
    0.37740285561283066,
    0.8526986790088938,
    0.37740285561283066,
    -0.11062440441843718,
    -0.023849465019556843,
    0.03782845550726404,
];
#[allow(
    clippy::approx_constant,
    reason = "pywavelets' coefficients, digit for digit"
)]
const BIOR4_4_REC_LO: &[f64] = &[
    0.0,
    -0.06453888262869706,
    -0.04068941760916406,
    0.41809227322161724,
    0.7884856164055829,
    0.41809227322161724,
    -0.04068941760916406,
    -0.06453888262869706,
    0.0,
    0.0,
];

impl Wavelet {
    /// Every wavelet.
    pub const ALL: [Wavelet; 6] = [
        Wavelet::Haar,
        Wavelet::Db2,
        Wavelet::Db4,
        Wavelet::Sym4,
        Wavelet::Bior2_2,
        Wavelet::Bior4_4,
    ];

    /// pywavelets' name.
    pub fn name(self) -> &'static str {
        match self {
            Wavelet::Haar => "haar",
            Wavelet::Db2 => "db2",
            Wavelet::Db4 => "db4",
            Wavelet::Sym4 => "sym4",
            Wavelet::Bior2_2 => "bior2.2",
            Wavelet::Bior4_4 => "bior4.4",
        }
    }

    /// The wavelet of a pywavelets name.
    pub fn from_name(name: &str) -> Option<Wavelet> {
        Wavelet::ALL.into_iter().find(|w| w.name() == name)
    }

    fn lows(self) -> (&'static [f64], &'static [f64]) {
        match self {
            Wavelet::Haar => (HAAR_DEC_LO, HAAR_REC_LO),
            Wavelet::Db2 => (DB2_DEC_LO, DB2_REC_LO),
            Wavelet::Db4 => (DB4_DEC_LO, DB4_REC_LO),
            Wavelet::Sym4 => (SYM4_DEC_LO, SYM4_REC_LO),
            Wavelet::Bior2_2 => (BIOR2_2_DEC_LO, BIOR2_2_REC_LO),
            Wavelet::Bior4_4 => (BIOR4_4_DEC_LO, BIOR4_4_REC_LO),
        }
    }

    /// Filter length (even).
    pub fn taps(self) -> usize {
        self.lows().0.len()
    }

    /// pywavelets' `[dec_lo, dec_hi, rec_lo, rec_hi]`. The high-pass filters follow from the low-pass ones
    /// by the quadrature-mirror relations pywavelets uses: `rec_hi[k] = (-1)^k dec_lo[k]` and
    /// `dec_hi[k] = (-1)^(k+1) rec_lo[k]`.
    pub fn filters(self) -> [Vec<f64>; 4] {
        let (dec_lo, rec_lo) = self.lows();
        let sign = |k: usize| if k.is_multiple_of(2) { 1.0 } else { -1.0 };
        let dec_hi = rec_lo
            .iter()
            .enumerate()
            .map(|(k, v)| -sign(k) * v)
            .collect();
        let rec_hi = dec_lo
            .iter()
            .enumerate()
            .map(|(k, v)| sign(k) * v)
            .collect();
        [dec_lo.to_vec(), dec_hi, rec_lo.to_vec(), rec_hi]
    }

    /// The filter bank as the kernel reads it: the four filters in that order, as f32.
    pub fn filter_bank(self) -> Vec<f32> {
        self.filters().iter().flatten().map(|&v| v as f32).collect()
    }
}

/// How a signal is extended past its ends, as pywavelets defines the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Periodic with ceil(n/2) coefficients per band (an odd signal first repeats its last sample): the
    /// transform is invertible and keeps the size.
    Periodization,
    /// Half-sample symmetric extension; floor((n + taps - 1) / 2) coefficients per band.
    Symmetric,
    /// Zeros past the ends; as many coefficients as symmetric.
    Zero,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Periodization, Mode::Symmetric, Mode::Zero];

    /// pywavelets' name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Periodization => "periodization",
            Mode::Symmetric => "symmetric",
            Mode::Zero => "zero",
        }
    }

    /// The mode of a pywavelets name.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    fn code(self) -> u32 {
        match self {
            Mode::Periodization => 0,
            Mode::Symmetric => 1,
            Mode::Zero => 2,
        }
    }

    /// Coefficients per band for a signal of length `n` (pywavelets' `dwt_coeff_len`).
    pub fn coeffs(self, n: usize, taps: usize) -> usize {
        match self {
            Mode::Periodization => n.div_ceil(2),
            Mode::Symmetric | Mode::Zero => (n + taps - 1) / 2,
        }
    }
}

/// One launch: a level of the transform along one axis of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dwt {
    /// The filters.
    pub wavelet: Wavelet,
    /// The boundary handling.
    pub mode: Mode,
    /// Analysis (true) or synthesis.
    pub forward: bool,
    /// Sample type of both sides: f32, or f16 where the adapter has it (filters and sums stay f32).
    pub dtype: DType,
    /// Signal length along the axis (the forward input's, the inverse output's after cropping to it).
    pub n: usize,
    /// Leading batch dimensions of the contiguous side.
    pub outer_hi: usize,
    /// Second batch dimension of the contiguous side.
    pub outer_lo: usize,
    /// Elements after the axis.
    pub inner: usize,
    /// Strides of the banded side: band, outer_hi, outer_lo and coefficient index (the inner index adds 1).
    pub band_stride: usize,
    /// See `band_stride`.
    pub hi_stride: usize,
    /// See `band_stride`.
    pub lo_stride: usize,
    /// See `band_stride`.
    pub k_stride: usize,
}

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Signal length (contiguous side).
    pub n: u32,
    /// Coefficients per band.
    pub m: u32,
    /// Elements after the axis.
    pub inner: u32,
    /// Second batch dimension.
    pub outer_lo: u32,
    /// Invocations: one per line (outer index and inner offset).
    pub total: u32,
    /// Filter length.
    pub taps: u32,
    /// [`Mode`] code.
    pub mode: u32,
    /// Padding.
    pub pad0: u32,
    /// Banded-side strides: band, outer_hi, outer_lo, coefficient.
    pub strides: [u32; 4],
}

impl Dwt {
    /// Coefficients per band.
    pub fn coeffs(&self) -> usize {
        self.mode.coeffs(self.n, self.wavelet.taps())
    }

    /// Elements of the contiguous side.
    pub fn signal_len(&self) -> usize {
        self.outer_hi * self.outer_lo * self.n * self.inner
    }

    /// Elements the banded side must hold: one past its largest index.
    pub fn banded_len(&self) -> usize {
        let m = self.coeffs();
        if self.outer_hi * self.outer_lo * m * self.inner == 0 {
            return 0;
        }
        self.band_stride
            + (self.outer_hi - 1) * self.hi_stride
            + (self.outer_lo - 1) * self.lo_stride
            + (m - 1) * self.k_stride
            + self.inner
    }

    fn params(&self) -> Result<Params, KernelError> {
        let m = self.coeffs();
        // One invocation per line; each walks the line's positions.
        let total = self
            .outer_hi
            .saturating_mul(self.outer_lo)
            .saturating_mul(self.inner);
        plan::index_u32("dwt", "signal", self.signal_len().max(self.banded_len()))?;
        let s = |v: usize| plan::index_u32("dwt", "stride", v);
        Ok(Params {
            n: self.n as u32,
            m: m as u32,
            inner: self.inner as u32,
            outer_lo: self.outer_lo as u32,
            total: plan::index_u32("dwt", "invocations", total)?,
            taps: self.wavelet.taps() as u32,
            mode: self.mode.code(),
            pad0: 0,
            strides: [
                s(self.band_stride)?,
                s(self.hi_stride)?,
                s(self.lo_stride)?,
                s(self.k_stride)?,
            ],
        })
    }
}

impl Kernel for Dwt {
    fn kernel(&self) -> &'static str {
        "dwt"
    }

    fn operands(&self) -> Vec<Operand> {
        let (signal, banded) = (self.signal_len(), self.banded_len());
        let (src, dst) = if self.forward {
            (signal, banded)
        } else {
            (banded, signal)
        };
        vec![
            Operand::read("filters", DType::F32, 4 * self.wavelet.taps()),
            Operand::read("src", self.dtype, src),
            Operand::write("dst", self.dtype, dst),
        ]
    }

    /// Plans one launch.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let d = self;
        plan::ensure(matches!(d.dtype, DType::F32 | DType::F16), "dwt", || {
            format!("samples must be f32 or f16, not {}", d.dtype)
        })?;
        let auto = format!(
            "{}_{}_t{}",
            if d.forward { "forward" } else { "inverse" },
            d.dtype.name(),
            d.wavelet.taps()
        );
        let v = crate::select(
            "dwt",
            &auto,
            "it is the requested direction, sample type and filter length",
            caps,
            choice,
        )?;
        plan::ensure(
            v.define_u32("TAPS") as usize == d.wavelet.taps(),
            "dwt",
            || {
                format!(
                    "variant {} is built for another filter length than {}'s",
                    v.id(),
                    d.wavelet.name()
                )
            },
        )?;
        plan::ensure(v.define("INVERSE").is_some() != d.forward, "dwt", || {
            format!("variant {} goes the other way", v.id())
        })?;
        plan::ensure(v.define("ELEM") == Some(d.dtype.name()), "dwt", || {
            format!("variant {} does not store {}", v.id(), d.dtype)
        })?;
        plan::ensure(
            d.n > 0 && d.inner > 0 && d.outer_hi > 0 && d.outer_lo > 0,
            "dwt",
            || "every dimension must be at least 1".into(),
        )?;
        // pywavelets' synthesis in the extension modes needs each band at least half a filter long.
        plan::ensure(
            d.mode == Mode::Periodization || d.forward || d.coeffs() >= d.wavelet.taps() / 2,
            "dwt",
            || {
                format!(
                    "{} coefficients are too few for the inverse with {} taps",
                    d.coeffs(),
                    d.wavelet.taps()
                )
            },
        )?;
        let params = d.params()?;
        plan::per_item(
            "dwt",
            v,
            u64::from(params.total),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// The sample of the extended signal at `idx` (may be outside 0..n), as pywavelets extends it; `None` is a
/// zero. Periodization extends an odd signal by its last sample first.
fn extended(mode: Mode, idx: i64, n: usize) -> Option<usize> {
    let n = n as i64;
    match mode {
        Mode::Periodization => {
            let np = n + (n & 1);
            Some(idx.rem_euclid(np).min(n - 1) as usize)
        }
        Mode::Symmetric => {
            let m = idx.rem_euclid(2 * n);
            Some(if m >= n { 2 * n - 1 - m } else { m } as usize)
        }
        Mode::Zero => (0..n).contains(&idx).then_some(idx as usize),
    }
}

/// CPU twin: the shader's index arithmetic, accumulating taps in ascending order in f32. For an f16
/// launch the samples are f16 values held as f32 and every stored result is rounded to f16, as the shader
/// stores it.
pub fn cpu(d: &Dwt, src: &[f32], dst: &mut [f32]) {
    let store = |v: f32| {
        if d.dtype == DType::F16 {
            half::f16::from_f32(v).to_f32()
        } else {
            v
        }
    };
    let bank = d.wavelet.filter_bank();
    let taps = d.wavelet.taps();
    let f = |which: usize, j: usize| bank[which * taps + j];
    let m = d.coeffs();
    let banded = |b: usize, hi: usize, lo: usize, k: usize, r: usize| {
        b * d.band_stride + hi * d.hi_stride + lo * d.lo_stride + k * d.k_stride + r
    };
    let contiguous =
        |hi: usize, lo: usize, k: usize, r: usize| ((hi * d.outer_lo + lo) * d.n + k) * d.inner + r;
    for hi in 0..d.outer_hi {
        for lo in 0..d.outer_lo {
            for r in 0..d.inner {
                if d.forward {
                    for k in 0..m {
                        let i = if d.mode == Mode::Periodization {
                            taps / 2 + 2 * k
                        } else {
                            1 + 2 * k
                        } as i64;
                        let (mut a, mut b) = (0.0f32, 0.0f32);
                        for j in 0..taps {
                            if let Some(at) = extended(d.mode, i - j as i64, d.n) {
                                let x = src[contiguous(hi, lo, at, r)];
                                a += f(0, j) * x;
                                b += f(1, j) * x;
                            }
                        }
                        dst[banded(0, hi, lo, k, r)] = store(a);
                        dst[banded(1, hi, lo, k, r)] = store(b);
                    }
                } else {
                    for t in 0..d.n {
                        let (p, i) = synthesis_position(d.mode, taps, t);
                        let mut acc = 0.0f32;
                        for j in 0..taps / 2 {
                            let k = (i - j as i64).rem_euclid(m as i64) as usize;
                            acc += f(2, 2 * j + p) * src[banded(0, hi, lo, k, r)]
                                + f(3, 2 * j + p) * src[banded(1, hi, lo, k, r)];
                        }
                        dst[contiguous(hi, lo, t, r)] = store(acc);
                    }
                }
            }
        }
    }
}

/// For output sample `t` of the inverse: which filter phase (even or odd taps) it takes and the coefficient
/// index its tap 0 reads, as pywavelets' upsampling convolutions place them. Periodization starts at
/// taps / 4 and shifts the output one sample right when taps / 2 is even (its "perfect reconstruction"
/// shift); the other modes keep only the fully overlapping ("valid") part, starting at taps / 2 - 1. Only
/// periodization wraps indices, which the caller does modulo the band length.
fn synthesis_position(mode: Mode, taps: usize, t: usize) -> (usize, i64) {
    let t = t as i64;
    match mode {
        Mode::Periodization => {
            let shift = i64::from((taps / 2).is_multiple_of(2));
            let p = (t - shift).rem_euclid(2);
            ((p) as usize, (taps / 4) as i64 + (t - p - shift) / 2)
        }
        Mode::Symmetric | Mode::Zero => ((t % 2) as usize, t / 2 + (taps / 2) as i64 - 1),
    }
}
