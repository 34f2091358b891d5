//! Quantizers for [`GroupMatrix`]: round-to-nearest, GPTQ, SpQR, MixLLM-style mixed rows and GQSA-style
//! group sparsity.
//!
//! All three run the same column loop over the (optionally permuted) weight matrix, following SpQR's
//! reference engine (`spqr_engine.py`, `quant_groups.py`):
//! - statistics are fitted per (row, group) from the current weights when a group starts;
//! - each column is quantized with them; GPTQ and SpQR then spread the column's error over the columns not
//!   yet quantized through the upper Cholesky factor U of the damped inverse Hessian (H = 2/N XᵀX of the
//!   layer's inputs); round-to-nearest does not;
//! - SpQR marks a weight an outlier when its Hessian-weighted error ((w - ŵ) / U_jj)² exceeds τ times the
//!   mean over columns of var(W[:, j]) / U_jj², keeps it exactly (as an f16 correction beside the dense
//!   code), and fits each group's statistics without the weights a leave-one-out test marks as likely
//!   outliers (greedily, one weight at a time: see `likely_outliers`);
//! - GQSA prunes whole groups: before the loop each row keeps the groups with the largest
//!   Σ (w / U_jj)² (SparseGPT's saliency, summed over the group) and the loop then quantizes a pruned
//!   group's weights to 0, so GPTQ's feedback moves their loss onto the kept columns after them, as
//!   SparseGPT does with a fixed mask.
//!
//! Every decision uses the values as stored (f16 statistics, quantized second-order statistics), so the
//! error the loop propagates is the error the kernels will see.

use half::f16;

use crate::group::{Builder, GroupError, GroupMatrix, Layout, Stats};

/// Second moments of a linear layer's inputs: H = 2/N Σ x xᵀ over the N input rows seen (SpQR's running
/// form), kept in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Hessian {
    /// Input width.
    pub n: usize,
    /// \[n\]\[n\], row-major.
    pub h: Vec<f64>,
    /// Input rows accumulated.
    pub samples: usize,
}

impl Hessian {
    /// An empty accumulator for inputs of width `n`.
    pub fn new(n: usize) -> Hessian {
        Hessian {
            n,
            h: vec![0.0; n * n],
            samples: 0,
        }
    }

    /// Adds input rows `x` \[rows\]\[n\].
    pub fn add(&mut self, x: &[f32]) {
        let n = self.n;
        let rows = x.len() / n;
        if rows == 0 {
            return;
        }
        let total = self.samples + rows;
        let keep = self.samples as f64 / total as f64;
        let add = 2.0 / total as f64;
        for v in &mut self.h {
            *v *= keep;
        }
        for r in x.chunks_exact(n) {
            for i in 0..n {
                let xi = f64::from(r[i]) * add;
                if xi == 0.0 {
                    continue;
                }
                let row = &mut self.h[i * n..][..n];
                for (h, &xj) in row.iter_mut().zip(r) {
                    *h += xi * f64::from(xj);
                }
            }
        }
        self.samples = total;
    }

    /// The identity (what round-to-nearest assumes).
    pub fn identity(n: usize) -> Hessian {
        let mut h = Hessian::new(n);
        for i in 0..n {
            h.h[i * n + i] = 1.0;
        }
        h
    }
}

/// Which quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Round to nearest, no error feedback.
    Rtn,
    /// GPTQ: error feedback through the inverse Hessian.
    Gptq,
    /// SpQR: GPTQ with bilevel statistics and Hessian-weighted outliers.
    Spqr,
    /// MixLLM-style: GPTQ with each output row at `bits` or at `high_bits`, the rows with the largest
    /// Hessian-weighted error at `bits` promoted, ranked over the whole model.
    Mixllm,
    /// GQSA-style: GPTQ with a fraction of each row's groups pruned whole.
    Gqsa,
    /// QTIP-style trellis-coded weights ([`crate::trellis`]) with block LDLQ feedback.
    Trellis,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 6] = [
        Method::Rtn,
        Method::Gptq,
        Method::Spqr,
        Method::Mixllm,
        Method::Gqsa,
        Method::Trellis,
    ];

    /// The name on command lines and in files.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Spqr => "spqr",
            Method::Mixllm => "mixllm",
            Method::Gqsa => "gqsa",
            Method::Trellis => "trellis",
        }
    }
}

/// Quantizer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The quantizer.
    pub method: Method,
    /// Bits per code.
    pub bits: u32,
    /// Columns per group.
    pub group: usize,
    /// Statistics form.
    pub stats: Stats,
    /// Quantize columns in order of decreasing Hessian diagonal (GPTQ's and SpQR's act_order).
    pub act_order: bool,
    /// Damping added to the Hessian's diagonal, relative to its mean (SpQR: 1.0, GPTQ: 0.01).
    pub damp: f64,
    /// SpQR's τ: `None` keeps no outliers.
    pub outlier_threshold: Option<f64>,
    /// Skip the leave-one-out refit (SpQR's `simplified_outliers`).
    pub simplified_outliers: bool,
    /// MixLLM: the code width of promoted rows.
    pub high_bits: u32,
    /// MixLLM: the fraction of the linear layers' weights (whole rows) promoted to `high_bits`.
    pub high_fraction: f64,
    /// GQSA: the fraction of each row's groups pruned (rounded to whole groups; 0 prunes none).
    pub sparsity: f64,
    /// Incoherence processing (QuIP#): the seed of the input transforms ([`crate::rht`]) the weights
    /// are quantized in, or `None`. Applied by the caller, which knows which matrices share an input.
    pub incoherence: Option<u64>,
}

impl Config {
    /// A one-line description, as files record it (`spqr bits=3 group=16 stats=bilevel:3:16 ...`).
    pub fn describe(&self) -> String {
        let stats = match self.stats {
            Stats::Affine => "affine".to_string(),
            Stats::Bilevel { bits, rows } => format!("bilevel:{bits}:{rows}"),
            Stats::Trellis { state } => format!("trellis:{state}"),
        };
        let tau = self
            .outlier_threshold
            .map_or("none".to_string(), |t| t.to_string());
        let mixed = if self.high_fraction > 0.0 {
            format!(
                " high_bits={} high_fraction={}",
                self.high_bits, self.high_fraction
            )
        } else {
            String::new()
        };
        let sparse = if self.sparsity > 0.0 {
            format!(" sparsity={}", self.sparsity)
        } else {
            String::new()
        };
        let inc = self
            .incoherence
            .map_or(String::new(), |seed| format!(" incoherence={seed}"));
        format!(
            "{} bits={} group={} stats={stats} act_order={} damp={} tau={tau}{mixed}{sparse}{inc}",
            self.method.name(),
            self.bits,
            self.group,
            self.act_order,
            self.damp
        )
    }

    /// SpQR's README recipe at `bits`: groups of 16, 3-bit statistics over 16 rows, act_order, damping 1.0,
    /// τ = 0.2.
    pub fn spqr(bits: u32) -> Config {
        Config {
            method: Method::Spqr,
            bits,
            group: 16,
            stats: Stats::Bilevel { bits: 3, rows: 16 },
            act_order: true,
            damp: 1.0,
            outlier_threshold: Some(0.2),
            simplified_outliers: false,
            high_bits: 0,
            high_fraction: 0.0,
            sparsity: 0.0,
            incoherence: None,
        }
    }

    /// GQSA's W4 recipe at `sparsity`: 4-bit affine groups of 32 (one f16 step and minimum per kept group,
    /// aligned with Q4_1's blocks when the columns keep their order), a `sparsity` fraction of each row's
    /// groups pruned, GPTQ feedback without act_order (act_order would scatter Q4_1's blocks over many
    /// groups, and a kept group of the base then no longer fits its grid exactly).
    pub fn gqsa(sparsity: f64) -> Config {
        Config {
            method: Method::Gqsa,
            act_order: false,
            sparsity,
            ..Config::plain(Method::Gptq, 4, 32)
        }
    }

    /// MixLLM's recipe: 4-bit affine groups of 64 (576 is not a multiple of 128) with the most salient
    /// `fraction` of the weights, in whole output rows, at 8 bits; GPTQ with act_order inside each matrix.
    /// (MixLLM's 8-bit rows are symmetric and keep no minimum; here they share the affine statistics
    /// layout, which costs 16 bits more per group of those rows and never fits worse.)
    pub fn mixllm(fraction: f64) -> Config {
        Config {
            method: Method::Mixllm,
            high_bits: 8,
            high_fraction: fraction,
            ..Config::plain(Method::Gptq, 4, 64)
        }
    }

    /// QTIP's recipe at `bits` (2 to 4) with `state`-bit states (QTIP: 16): tiles of 16 x 16, block LDLQ
    /// with GPTQ's damping, and incoherence processing (which the trellis's Gaussian code needs; the
    /// caller applies it with `seed`).
    pub fn trellis(bits: u32, state: u32, seed: u64) -> Config {
        Config {
            method: Method::Trellis,
            stats: Stats::Trellis { state },
            act_order: false,
            incoherence: Some(seed),
            ..Config::plain(Method::Gptq, bits, crate::trellis::TILE)
        }
    }

    /// A plain group quantizer (affine f16 statistics) by `method` (round-to-nearest or GPTQ).
    pub fn plain(method: Method, bits: u32, group: usize) -> Config {
        Config {
            method,
            bits,
            group,
            stats: Stats::Affine,
            act_order: method == Method::Gptq,
            damp: 0.01,
            outlier_threshold: None,
            simplified_outliers: true,
            high_bits: 0,
            high_fraction: 0.0,
            sparsity: 0.0,
            incoherence: None,
        }
    }
}

/// What a quantization did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Σ over weights of ((w - ŵ) / U_jj)², GPTQ's objective (0 for round-to-nearest's identity Hessian
    /// would be meaningless, so there it is the plain squared error).
    pub proxy_error: f64,
    /// Weights kept as outliers.
    pub outliers: usize,
    /// Groups pruned.
    pub pruned: usize,
}

/// Checks what every quantizer takes: `rows * cols` finite weights and a Hessian of width `cols`.
pub(crate) fn check_weights(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
) -> Result<(), GroupError> {
    if w.len() != rows * cols || h.n != cols {
        return Err(GroupError::Shape(format!(
            "{} weights and a Hessian of width {} for a {rows} x {cols} matrix",
            w.len(),
            h.n
        )));
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
        return Err(GroupError::Shape(format!("a non-finite weight ({bad})")));
    }
    Ok(())
}

/// Trellis codes for `w` in `layout` (see [`crate::trellis::quantize`]), as a [`GroupMatrix`], encoded
/// on the CPU's threads.
fn quantize_trellis(
    w: &[f32],
    layout: Layout,
    h: &Hessian,
    state: u32,
    damp: f64,
) -> Result<(GroupMatrix, Report), GroupError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut enc = crate::trellis::cpu_encoder(layout.bits, state, threads)?;
    quantize_trellis_with(w, layout, h, damp, &mut enc)
}

/// [`quantize`] for a trellis `layout` (`Stats::Trellis`) with the tiles encoded by `encode` (the CPU's
/// [`crate::trellis::cpu_encoder`], or the same search on a device).
pub fn quantize_trellis_with(
    w: &[f32],
    layout: Layout,
    h: &Hessian,
    damp: f64,
    encode: &mut crate::trellis::TileEncoder<'_>,
) -> Result<(GroupMatrix, Report), GroupError> {
    layout.check()?;
    let Stats::Trellis { state } = layout.stats else {
        return Err(GroupError::Shape("not a trellis layout".into()));
    };
    let q = crate::trellis::quantize_with(
        w,
        layout.rows,
        layout.cols,
        h,
        crate::trellis::Settings {
            bits: layout.bits,
            state,
            damp,
            threads: 1,
        },
        encode,
    )?;
    let m = GroupMatrix {
        layout,
        codes: q.codes,
        stats: q.scales.iter().map(|s| s.to_bits()).collect(),
        second: Vec::new(),
        perm: (0..layout.cols as u32).collect(),
        outliers: vec![(layout.rows + 1) as u32; layout.rows + 1],
        row_bits: Vec::new(),
        mask: Vec::new(),
        signs: Vec::new(),
    };
    m.check()?;
    Ok((
        m,
        Report {
            proxy_error: q.proxy_error,
            outliers: 0,
            pruned: 0,
        },
    ))
}

/// U with H⁻¹ = Uᵀ U for the layer's Hessian `h` with its diagonal damped by `damp` times its mean (the
/// columns in input order); inputs that never vary get their weights in `w` \[rows\]\[cols\] zeroed.
pub fn damped_inverse_factor(
    h: &Hessian,
    w: &mut [f32],
    rows: usize,
    damp: f64,
) -> Result<Vec<f64>, GroupError> {
    let perm: Vec<u32> = (0..h.n as u32).collect();
    damped_inverse_factor_in(h, &perm, w, rows, damp)
}

/// [`damped_inverse_factor`] with the columns in the order `perm` (`w` already permuted).
fn damped_inverse_factor_in(
    h: &Hessian,
    perm: &[u32],
    wp: &mut [f32],
    rows: usize,
    damp: f64,
) -> Result<Vec<f64>, GroupError> {
    let n = h.n;
    let mut hp = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            hp[i * n + j] = h.h[perm[i] as usize * n + perm[j] as usize];
        }
    }
    let mean_diag = (0..n).map(|i| hp[i * n + i].abs()).sum::<f64>() / n as f64;
    for i in 0..n {
        // Inputs that never vary carry no signal: their weights are zeroed and their row made the
        // identity, as the reference does.
        if hp[i * n + i] == 0.0 {
            hp[i * n + i] = 1.0;
            for r in 0..rows {
                wp[r * n + i] = 0.0;
            }
        }
        hp[i * n + i] += damp * mean_diag;
    }
    inverse_cholesky_upper(&hp, n)
}

/// The upper-triangular U with H⁻¹ = Uᵀ U, from one Cholesky factorisation of H with its rows and columns
/// reversed (J H J = L Lᵀ gives U = J L⁻¹ J): two n³/3 passes instead of an inverse and a second
/// factorisation.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Result<Vec<f64>, GroupError> {
    // L of the reversed matrix, in place, lower triangle.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            l[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    for j in 0..n {
        let mut d = l[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return Err(GroupError::Shape(format!(
                "the Hessian is not positive definite (pivot {j} is {d}); more damping is needed"
            )));
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = l[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / d;
        }
        for i in 0..j {
            l[i * n + j] = 0.0;
        }
    }
    // M = L⁻¹ (lower), row by row: row i is -(Σ_k<i L[i][k] M[k][..]) / L[i][i] with M[i][i] = 1 / L[i][i],
    // so every inner loop runs along a contiguous row.
    let mut m = vec![0.0f64; n * n];
    let mut acc = vec![0.0f64; n];
    for i in 0..n {
        acc[..i].fill(0.0);
        for k in 0..i {
            let lik = l[i * n + k];
            if lik == 0.0 {
                continue;
            }
            for (a, &mk) in acc[..=k].iter_mut().zip(&m[k * n..k * n + k + 1]) {
                *a += lik * mk;
            }
        }
        let d = l[i * n + i];
        for c in 0..i {
            m[i * n + c] = -acc[c] / d;
        }
        m[i * n + i] = 1.0 / d;
    }
    // U = J M J.
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(u)
}

/// An asymmetric min-max fit over `xs` (SpQR's `find_params`, zero not rounded): a range of zero width
/// becomes [-1, 1].
fn minmax_scale_zero(xs: impl Iterator<Item = f32>, maxq: f32) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for x in xs {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo == hi {
        (lo, hi) = (-1.0, 1.0);
    }
    let scale = (hi - lo) / maxq;
    (scale, -lo / scale)
}

fn round_code(x: f32, scale: f32, zero: f32, maxq: f32) -> f32 {
    (x / scale.max(1e-9) + zero).round().clamp(0.0, maxq)
}

/// One group's fitted statistics for every row, as stored and as the kernels decode them.
enum Fitted {
    Affine(Vec<(f16, f16)>),
    Bilevel {
        quantized: Vec<(u8, u8)>,
        second: Vec<[f16; 4]>,
        /// The decoded (s, z) per row.
        sz: Vec<(f32, f32)>,
    },
}

impl Fitted {
    /// The code and dense reconstruction of `x` in `row`.
    fn quantize(&self, row: usize, x: f32, maxq: f32) -> (u8, f32) {
        match self {
            Fitted::Affine(dm) => {
                let (d, m) = (dm[row].0.to_f32(), dm[row].1.to_f32());
                let q = if d > 0.0 {
                    ((x - m) / d).round().clamp(0.0, maxq)
                } else {
                    0.0
                };
                (q as u8, d * q + m)
            }
            Fitted::Bilevel { sz, .. } => {
                let (s, z) = sz[row];
                let q = round_code(x, s, z, maxq);
                (q as u8, s * (q - z))
            }
        }
    }
}

/// Fits one group: `cols` [rows][group] holds the group's current weights (likely outliers already
/// replaced).
fn fit(cols: &[f32], rows: usize, group: usize, cfg: &Config, maxq: &[f32]) -> Fitted {
    match cfg.stats {
        Stats::Affine => Fitted::Affine(
            cols.chunks_exact(group)
                .take(rows)
                .zip(maxq)
                .map(|(xs, &maxq)| {
                    let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    (f16::from_f32((hi - lo) / maxq), f16::from_f32(lo))
                })
                .collect(),
        ),
        Stats::Bilevel {
            bits: sbits,
            rows: srows,
        } => {
            let first: Vec<(f32, f32)> = cols
                .chunks_exact(group)
                .zip(maxq)
                .map(|(xs, &maxq)| minmax_scale_zero(xs.iter().copied(), maxq))
                .collect();
            let smaxq = ((1u32 << sbits) - 1) as f32;
            let mut quantized = Vec::with_capacity(rows);
            let mut second = Vec::with_capacity(rows / srows);
            let mut sz = Vec::with_capacity(rows);
            for block in first.chunks_exact(srows) {
                // The scales, then the zeros, of the block's rows quantized to `sbits` bits (f16 second-order
                // parameters, rounded before use so the codes match what is stored).
                let (ss, sz0) = minmax_scale_zero(block.iter().map(|p| p.0), smaxq);
                let (zs, zz) = minmax_scale_zero(block.iter().map(|p| p.1), smaxq);
                let p = [ss, sz0, zs, zz].map(f16::from_f32);
                let [ss, sz0, zs, zz] = p.map(f16::to_f32);
                second.push(p);
                for &(s, z) in block {
                    let qs = round_code(s, ss, sz0, smaxq);
                    let qz = round_code(z, zs, zz, smaxq);
                    quantized.push((qs as u8, qz as u8));
                    sz.push((ss * (qs - sz0), zs * (qz - zz)));
                }
            }
            Fitted::Bilevel {
                quantized,
                second,
                sz,
            }
        }
        Stats::Trellis { .. } => unreachable!("trellis matrices take quantize_trellis"),
    }
}

/// SpQR's leave-one-out test for one row of a group: which weights to leave out when fitting the group's
/// statistics. A weight is left out when fitting without it lowers the Hessian-weighted squared error of
/// the others by more than the outlier threshold (first-level statistics only, as the reference does).
///
/// Unlike the reference, which tests every weight against the fit of all the others at once, the test is
/// greedy: the weight with the largest gain goes first and the gains are recomputed without it, at most a
/// quarter of the group. With one outlier the two agree; with an outlier that stretches the range, the
/// reference's one-shot test finds that removing *any* weight removes its (large) error, marks the whole
/// group and fits it to nothing.
fn likely_outliers(xs: &[f32], u_diag: &[f64], maxq: f32, threshold: f64) -> Vec<bool> {
    // The Hessian-weighted squared errors of the kept weights, `skip` left out of the fit and the sum.
    let errors = |out: &[bool], skip: usize, each: &mut [f64]| -> f64 {
        let kept = || (0..xs.len()).filter(|&i| !out[i] && i != skip);
        let (s, z) = minmax_scale_zero(kept().map(|i| xs[i]), maxq);
        let mut total = 0.0;
        for i in kept() {
            let q = round_code(xs[i], s, z, maxq);
            let e = (f64::from(s * (q - z) - xs[i]) / u_diag[i]).powi(2);
            each[i] = e;
            total += e;
        }
        total
    };
    let mut out = vec![false; xs.len()];
    let mut each = vec![0.0f64; xs.len()];
    let mut scratch = vec![0.0f64; xs.len()];
    for _ in 0..xs.len() / 4 {
        let base = errors(&out, usize::MAX, &mut each);
        // Leaving out a weight that is not the kept group's only minimum or only maximum leaves the fit
        // as it is, so its gain is just its own error; only the extremes need a refit.
        let kept: Vec<usize> = (0..xs.len()).filter(|&i| !out[i]).collect();
        let lo = kept.iter().map(|&i| xs[i]).fold(f32::INFINITY, f32::min);
        let hi = kept
            .iter()
            .map(|&i| xs[i])
            .fold(f32::NEG_INFINITY, f32::max);
        let only = |v: f32| kept.iter().filter(|&&i| xs[i] == v).count() == 1;
        let (lo_only, hi_only) = (only(lo), only(hi));
        let best = kept
            .iter()
            .map(|&k| {
                let extreme = (xs[k] == lo && lo_only) || (xs[k] == hi && hi_only);
                let gain = if extreme {
                    base - errors(&out, k, &mut scratch)
                } else {
                    each[k]
                };
                (gain, k)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((gain, i)) if gain > threshold => out[i] = true,
            _ => break,
        }
    }
    out
}

/// Quantizes `w` \[rows\]\[cols\] with the layer's Hessian `h` (unused by round-to-nearest).
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    cfg: &Config,
) -> Result<(GroupMatrix, Report), GroupError> {
    quantize_rows(w, rows, cols, h, cfg, &[])
}

/// [`quantize`] with a code width per row (`row_bits`, empty for `cfg.bits` everywhere): MixLLM's mixed
/// precision between output rows. Each row's statistics are fitted to its own width; GPTQ's error feedback
/// runs along the columns as before, so rows never interact.
pub fn quantize_rows(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    cfg: &Config,
    row_bits: &[u8],
) -> Result<(GroupMatrix, Report), GroupError> {
    if !row_bits.is_empty() && row_bits.len() != rows {
        return Err(GroupError::Shape(format!(
            "{} row widths for {rows} rows",
            row_bits.len()
        )));
    }
    let layout = Layout {
        rows,
        cols,
        bits: cfg.bits,
        group: cfg.group,
        stats: cfg.stats,
    };
    layout.check()?;
    check_weights(w, rows, cols, h)?;
    if let Stats::Trellis { state } = cfg.stats {
        if !row_bits.is_empty() {
            return Err(GroupError::Shape("trellis rows have one width".into()));
        }
        return quantize_trellis(w, layout, h, state, cfg.damp);
    }
    let feedback = cfg.method != Method::Rtn;
    let n = cols;
    // The column order: decreasing Hessian diagonal under act_order.
    let mut perm: Vec<u32> = (0..n as u32).collect();
    if cfg.act_order && feedback {
        perm.sort_by(|&a, &b| {
            h.h[b as usize * n + b as usize].total_cmp(&h.h[a as usize * n + a as usize])
        });
    }
    let mut wp = vec![0f32; rows * n];
    for r in 0..rows {
        for j in 0..n {
            wp[r * n + j] = w[r * n + perm[j] as usize];
        }
    }
    let u = if feedback {
        damped_inverse_factor_in(h, &perm, &mut wp, rows, cfg.damp)?
    } else {
        Hessian::identity(n).h
    };
    let u_diag: Vec<f64> = (0..n).map(|j| u[j * n + j]).collect();
    let threshold = cfg.outlier_threshold.map(|tau| {
        let scale = (0..n)
            .map(|j| {
                let mean = (0..rows).map(|r| f64::from(wp[r * n + j])).sum::<f64>() / rows as f64;
                let var = (0..rows)
                    .map(|r| (f64::from(wp[r * n + j]) - mean).powi(2))
                    .sum::<f64>()
                    / (rows.max(2) - 1) as f64;
                var / (u_diag[j] * u_diag[j])
            })
            .sum::<f64>()
            / n as f64;
        tau * scale
    });
    let maxq: Vec<f32> = (0..rows)
        .map(|r| ((1u32 << row_bits.get(r).map_or(cfg.bits, |&b| u32::from(b).min(8))) - 1) as f32)
        .collect();
    let groups = n / cfg.group;
    let mut codes = vec![0u8; rows * n];
    let mut affine = Vec::new();
    let mut quantized = vec![(0u8, 0u8); rows * groups];
    let mut second_all: Vec<Vec<[f16; 4]>> = Vec::new();
    let mut outliers: Vec<Vec<(u16, f16)>> = vec![Vec::new(); rows];
    let kept = prune_groups(&wp, rows, n, cfg, &u_diag)?;
    let mut report = Report {
        proxy_error: 0.0,
        outliers: 0,
        pruned: kept.iter().filter(|&&k| !k).count(),
    };
    let mut fitted = None;
    let mut err = vec![0f64; rows];
    for j in 0..n {
        let g = j / cfg.group;
        if j % cfg.group == 0 {
            let mut block = vec![0f32; rows * cfg.group];
            for r in 0..rows {
                let xs = &wp[r * n + j..][..cfg.group];
                let dst = &mut block[r * cfg.group..][..cfg.group];
                dst.copy_from_slice(xs);
                if let (Some(t), false) = (threshold, cfg.simplified_outliers) {
                    let out = likely_outliers(xs, &u_diag[j..j + cfg.group], maxq[r], t);
                    let kept = out.iter().filter(|&&o| !o).count();
                    if kept < cfg.group {
                        let mean = xs
                            .iter()
                            .zip(&out)
                            .filter(|p| !*p.1)
                            .map(|p| *p.0)
                            .sum::<f32>()
                            / kept as f32;
                        for (d, &o) in dst.iter_mut().zip(&out) {
                            if o {
                                *d = mean;
                            }
                        }
                    }
                }
            }
            let f = fit(&block, rows, cfg.group, cfg, &maxq);
            match &f {
                Fitted::Affine(dm) => affine.extend_from_slice(dm),
                Fitted::Bilevel {
                    quantized: q,
                    second,
                    ..
                } => {
                    for r in 0..rows {
                        quantized[r * groups + g] = q[r];
                    }
                    second_all.push(second.clone());
                }
            }
            fitted = Some(f);
        }
        let f = fitted.as_ref().expect("fitted at the group's first column");
        let d = u_diag[j];
        for r in 0..rows {
            let x = wp[r * n + j];
            if !kept.is_empty() && !kept[r * groups + g] {
                // A pruned weight: nothing is stored, the kernels read 0, and the feedback below moves its
                // loss onto the columns after it.
                let e = f64::from(x) / d;
                wp[r * n + j] = 0.0;
                err[r] = e;
                report.proxy_error += e * e;
                continue;
            }
            let (mut q, mut deq) = f.quantize(r, x, maxq[r]);
            let mut e = f64::from(x - deq) / d;
            if threshold.is_some_and(|t| e * e > t) {
                // An outlier: the dense code is that of 0 (as the reference quantizes the masked weight),
                // and an f16 correction restores the weight.
                let (q0, base) = f.quantize(r, 0.0, maxq[r]);
                let c = f16::from_f32(x - base);
                q = q0;
                deq = base + c.to_f32();
                e = f64::from(x - deq) / d;
                outliers[r].push((j as u16, c));
                report.outliers += 1;
            }
            codes[r * n + j] = q;
            wp[r * n + j] = deq;
            err[r] = e;
            report.proxy_error += e * e;
        }
        if feedback {
            // The row of U in f32 once, so the update below is a plain f32 multiply-add the compiler
            // vectorises (the same values as converting each element where it is used).
            let urow: Vec<f32> = u[j * n + j + 1..(j + 1) * n]
                .iter()
                .map(|&v| v as f32)
                .collect();
            for r in 0..rows {
                let e = err[r] as f32;
                if e == 0.0 {
                    continue;
                }
                let wr = &mut wp[r * n + j + 1..(r + 1) * n];
                for (w, &uk) in wr.iter_mut().zip(&urow) {
                    *w -= e * uk;
                }
            }
        }
    }
    // Affine statistics were gathered group by group for all rows; the layout wants [rows][groups].
    let affine: Vec<(f16, f16)> = if cfg.stats == Stats::Affine {
        (0..rows * groups)
            .map(|i| affine[(i % groups) * rows + i / groups])
            .collect()
    } else {
        Vec::new()
    };
    // Second-order parameters likewise, to [row blocks][groups].
    let second: Vec<[f16; 4]> = match cfg.stats {
        Stats::Bilevel { rows: srows, .. } => {
            let blocks = rows / srows;
            (0..blocks * groups)
                .map(|i| second_all[i % groups][i / groups])
                .collect()
        }
        Stats::Affine | Stats::Trellis { .. } => Vec::new(),
    };
    let m = Builder {
        layout,
        codes: &codes,
        affine: &affine,
        quantized: &quantized,
        second: &second,
        perm: Some(&perm),
        outliers: &outliers,
        row_bits,
        kept: &kept,
    }
    .build()?;
    Ok((m, report))
}

/// GQSA's mask: which groups each row keeps (empty when nothing is pruned), from the weights in stored
/// column order. Each row keeps the same number of groups (the rest of `cfg.sparsity`, rounded), those with
/// the largest Σ (w / U_jj)²: SparseGPT's saliency, the loss of removing a weight alone, summed over the
/// group. Equal counts per row keep the rows of a matrix equally long, so a kernel that gives each row to
/// one workgroup is balanced without GQSA's task-centric split.
fn prune_groups(
    wp: &[f32],
    rows: usize,
    n: usize,
    cfg: &Config,
    u_diag: &[f64],
) -> Result<Vec<bool>, GroupError> {
    if !(0.0..1.0).contains(&cfg.sparsity) {
        return Err(GroupError::Shape(format!(
            "sparsity {} (0 to below 1)",
            cfg.sparsity
        )));
    }
    let groups = n / cfg.group;
    let pruned = (cfg.sparsity * groups as f64).round() as usize;
    if pruned == 0 {
        return Ok(Vec::new());
    }
    if pruned >= groups {
        return Err(GroupError::Shape(format!(
            "sparsity {} prunes all {groups} groups of a row",
            cfg.sparsity
        )));
    }
    let mut kept = vec![true; rows * groups];
    for r in 0..rows {
        let mut score: Vec<(f64, usize)> = (0..groups)
            .map(|g| {
                let s = (g * cfg.group..(g + 1) * cfg.group)
                    .map(|j| (f64::from(wp[r * n + j]) / u_diag[j]).powi(2))
                    .sum::<f64>();
                (s, g)
            })
            .collect();
        // Lowest saliency first; ties go to the later group, so the order is total and deterministic.
        score.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        for &(_, g) in &score[..pruned] {
            kept[r * groups + g] = false;
        }
    }
    Ok(kept)
}

/// Each row's salience for MixLLM's choice of precision: the Hessian-weighted squared error
/// Σ_j H_jj (w_j - ŵ_j)² of rounding the row to `bits`-bit affine groups of `group`. It is a gradient-free
/// proxy for MixLLM's loss-based salience (no backward pass here): the diagonal of the layer's output
/// error, comparable across layers because every layer's H is the second moment of its own input.
pub fn row_salience(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    bits: u32,
    group: usize,
) -> Vec<f64> {
    let maxq = ((1u32 << bits) - 1) as f32;
    (0..rows)
        .map(|r| {
            let row = &w[r * cols..][..cols];
            row.chunks(group.max(1))
                .enumerate()
                .map(|(g, xs)| {
                    let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = ((hi - lo) / maxq).max(1e-12);
                    xs.iter()
                        .enumerate()
                        .map(|(t, &x)| {
                            let q = ((x - lo) / d).round().clamp(0.0, maxq);
                            let e = f64::from(x - (d * q + lo));
                            let j = g * group + t;
                            h.h[j * cols + j] * e * e
                        })
                        .sum::<f64>()
                })
                .sum()
        })
        .collect()
}

/// tr((W - Ŵ) H (W - Ŵ)ᵀ): the output error a quantization causes on inputs with second moments H (what
/// GPTQ minimizes), for comparing quantizers.
pub fn output_error(w: &[f32], w_hat: &[f32], cols: usize, h: &Hessian) -> f64 {
    let n = cols;
    w.chunks_exact(n)
        .zip(w_hat.chunks_exact(n))
        .map(|(a, b)| {
            let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| f64::from(x - y)).collect();
            let mut s = 0.0;
            for i in 0..n {
                if d[i] == 0.0 {
                    continue;
                }
                let row = &h.h[i * n..][..n];
                s += d[i] * row.iter().zip(&d).map(|(h, dj)| h * dj).sum::<f64>();
            }
            s
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockFormat;

    /// A small deterministic generator (xorshift).
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Inputs with correlated, unevenly scaled features, as real activations have: 16 shared factors
    /// plus independent noise.
    fn inputs(rng: &mut Rng, samples: usize, n: usize) -> Vec<f32> {
        const F: usize = 16;
        let mix: Vec<f32> = (0..n * F).map(|_| rng.next()).collect();
        (0..samples)
            .flat_map(|_| {
                let z: Vec<f32> = (0..F).map(|_| rng.next()).collect();
                let noise: Vec<f32> = (0..n).map(|_| 0.5 * rng.next()).collect();
                (0..n)
                    .map(|j| {
                        let s = 1.0 + 4.0 * (j % 7) as f32 / 7.0;
                        s * ((0..F).map(|k| mix[j * F + k] * z[k]).sum::<f32>() / 4.0 + noise[j])
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_inverse_cholesky_factor_is_one() {
        let mut rng = Rng(7);
        let n = 24;
        let mut h = Hessian::new(n);
        h.add(&inputs(&mut rng, 200, n));
        for i in 0..n {
            h.h[i * n + i] += 0.01;
        }
        let u = inverse_cholesky_upper(&h.h, n).unwrap();
        // Uᵀ U H = I.
        for i in 0..n {
            for j in 0..n {
                let mut v = 0.0;
                for k in 0..n {
                    let hinv: f64 = (0..n).map(|m| u[m * n + i] * u[m * n + k]).sum();
                    v += hinv * h.h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-8, "({i}, {j}): {v}");
            }
        }
        assert!((0..n).all(|i| (0..i).all(|j| u[i * n + j] == 0.0)));
    }

    /// Round-to-nearest with 4-bit groups of 32 and affine f16 statistics is Q4_1's grid: a Q4_1 matrix
    /// dequantized and re-quantized comes back bit for bit.
    #[test]
    fn rtn_4bit_g32_rebuilds_q4_1_exactly() {
        let mut rng = Rng(11);
        let (rows, cols) = (8, 128);
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.next()).collect();
        let packed = BlockFormat::Q4_1.quantize_to_vec(&w).unwrap();
        let mut base = vec![0f32; rows * cols];
        BlockFormat::Q4_1.dequantize(&packed, &mut base).unwrap();
        let cfg = Config::plain(Method::Rtn, 4, 32);
        let (m, _) = quantize(&base, rows, cols, &Hessian::identity(cols), &cfg).unwrap();
        assert_eq!(m.dequantize(), base);
        assert!(!m.permuted());
        // 4 bits of codes and 32 bits of statistics per 32 weights, plus the empty outlier offsets.
        let expect = 4.0 + 1.0 + ((rows + 1) * 32) as f64 / (rows * cols) as f64;
        assert!((m.bits_per_weight() - expect).abs() < 1e-12);
    }

    pub fn layer(rng: &mut Rng, rows: usize, cols: usize) -> (Vec<f32>, Hessian) {
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.05 * rng.next()).collect();
        let mut h = Hessian::new(cols);
        h.add(&inputs(rng, 4 * cols, cols));
        (w, h)
    }

    /// GPTQ lowers the output error of round-to-nearest at the same format, and what the loop tracked is
    /// what the packed matrix decodes to.
    #[test]
    fn gptq_beats_round_to_nearest() {
        let mut rng = Rng(3);
        let (rows, cols) = (32, 64);
        let (w, h) = layer(&mut rng, rows, cols);
        let rtn = quantize(&w, rows, cols, &h, &Config::plain(Method::Rtn, 3, 16))
            .unwrap()
            .0;
        let gptq = quantize(&w, rows, cols, &h, &Config::plain(Method::Gptq, 3, 16))
            .unwrap()
            .0;
        let (e_rtn, e_gptq) = (
            output_error(&w, &rtn.dequantize(), cols, &h),
            output_error(&w, &gptq.dequantize(), cols, &h),
        );
        assert!(gptq.permuted());
        assert!(e_gptq < 0.8 * e_rtn, "GPTQ {e_gptq} vs RTN {e_rtn}");
    }

    /// SpQR finds planted outliers, keeps them, and its output error is below the same quantizer without
    /// outliers; its storage is 3 + 6/16 + 64/256 bits per weight plus the outliers and offsets.
    #[test]
    fn spqr_keeps_outliers() {
        let mut rng = Rng(5);
        // 256 columns make 16 groups, whose 6-bit statistics fill whole words (no padding in the count).
        let (rows, cols) = (32, 256);
        let (mut w, h) = layer(&mut rng, rows, cols);
        for i in 0..12 {
            w[(i * 173) % (rows * cols)] = if i % 2 == 0 { 0.9 } else { -0.8 };
        }
        let with = Config::spqr(3);
        let without = Config {
            outlier_threshold: None,
            ..with
        };
        let (a, ra) = quantize(&w, rows, cols, &h, &with).unwrap();
        let (b, rb) = quantize(&w, rows, cols, &h, &without).unwrap();
        assert!(
            ra.outliers >= 12 && ra.outliers < rows * cols / 50,
            "{ra:?}"
        );
        assert_eq!(rb.outliers, 0);
        let (ea, eb) = (
            output_error(&w, &a.dequantize(), cols, &h),
            output_error(&w, &b.dequantize(), cols, &h),
        );
        assert!(ea < 0.5 * eb, "with outliers {ea}, without {eb}");
        let dense = 3.0 + 6.0 / 16.0 + 64.0 / 256.0;
        let extra = ((cols + rows + 1 + ra.outliers) * 32) as f64 / (rows * cols) as f64;
        assert!((a.bits_per_weight() - dense - extra).abs() < 1e-9);
    }

    /// Rows given 8 bits come out far closer than their 4-bit neighbours, each row's statistics fitted
    /// to its own width, and the salience ranks a row with a spike above plain rows.
    #[test]
    fn rows_keep_their_own_widths() {
        let mut rng = Rng(11);
        let (rows, cols) = (16, 64);
        let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
        let mut h = Hessian::new(cols);
        h.add(&inputs(&mut rng, 256, cols));
        let widths: Vec<u8> = (0..rows).map(|r| if r % 2 == 0 { 8 } else { 4 }).collect();
        let cfg = Config::mixllm(0.5);
        let (m, _) = quantize_rows(&w, rows, cols, &h, &cfg, &widths).unwrap();
        assert_eq!(m.row_bits, widths);
        let d = m.dequantize();
        let err = |r: usize| -> f64 {
            (0..cols)
                .map(|j| f64::from(w[r * cols + j] - d[r * cols + j]).powi(2))
                .sum()
        };
        let (even, odd): (f64, f64) = (
            (0..rows).step_by(2).map(err).sum(),
            (1..rows).step_by(2).map(err).sum(),
        );
        assert!(even * 50.0 < odd, "8-bit rows {even}, 4-bit rows {odd}");
        // 8 rows of 8 + 0.5 bits and 8 of 4 + 0.5, the permutation, one byte per row of widths and the
        // outlier offsets.
        let bits = m.bits_per_weight();
        let want = 6.5 + (64.0 + 16.0 * 8.0 / 32.0 + 17.0) * 32.0 / (16.0 * 64.0);
        assert!((bits - want).abs() < 1e-9, "{bits} vs {want}");
        w[3 * cols + 5] = 40.0;
        let s = row_salience(&w, rows, cols, &h, 4, 64);
        let top = (0..rows).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        assert_eq!(top, 3);
    }

    /// GQSA prunes the same number of whole groups in every row (the least salient: a group of large
    /// weights on a busy input survives), the pruned weights decode to 0, GPTQ's feedback lowers the
    /// output error of pruning and rounding alone, and the storage is the kept groups' codes and
    /// statistics plus one mask bit per group.
    #[test]
    fn gqsa_prunes_whole_groups_and_compensates() {
        let mut rng = Rng(13);
        // 1024 columns in groups of 32: 32 groups, one mask word per row, no padding anywhere.
        let (rows, cols) = (16, 1024);
        let (mut w, h) = layer(&mut rng, rows, cols);
        // Group 5 of every row holds large weights: no row may prune it.
        for r in 0..rows {
            for t in 0..32 {
                w[r * cols + 5 * 32 + t] *= 20.0;
            }
        }
        let cfg = Config::gqsa(0.5);
        let (m, report) = quantize(&w, rows, cols, &h, &cfg).unwrap();
        assert_eq!(report.pruned, rows * 16);
        assert!(!m.permuted());
        let d = m.dequantize();
        for r in 0..rows {
            assert_eq!(m.kept_count(r), 16);
            assert!(m.slot(r, 5).is_some(), "row {r} pruned its salient group");
            for g in (0..32).filter(|&g| m.slot(r, g).is_none()) {
                assert!(d[r * cols + g * 32..][..32].iter().all(|&v| v == 0.0));
            }
        }
        let naive = Config {
            method: Method::Rtn,
            ..cfg
        };
        let (n, _) = quantize(&w, rows, cols, &h, &naive).unwrap();
        let (e_gqsa, e_naive) = (
            output_error(&w, &d, cols, &h),
            output_error(&w, &n.dequantize(), cols, &h),
        );
        assert!(
            e_gqsa < 0.8 * e_naive,
            "GQSA {e_gqsa} vs pruning alone {e_naive}"
        );
        // Half the groups at 4 + 1 bits, one bit per group of mask, and the outlier offsets.
        let want = 2.5 + 1.0 / 32.0 + ((rows + 1) * 32) as f64 / (rows * cols) as f64;
        assert!(
            (m.bits_per_weight() - want).abs() < 1e-12,
            "{}",
            m.bits_per_weight()
        );
        // A sparsity that prunes every group, or none of a row's groups below one, is refused or a no-op.
        for bad in [0.999, 1.0, -0.1, f64::NAN] {
            assert!(
                quantize(&w, rows, cols, &h, &Config::gqsa(bad)).is_err(),
                "{bad}"
            );
        }
        let (dense, r0) = quantize(&w, rows, cols, &h, &Config::gqsa(0.01)).unwrap();
        assert!(dense.mask.is_empty() && r0.pruned == 0);
    }
}
