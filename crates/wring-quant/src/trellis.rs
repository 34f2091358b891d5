//! Trellis-coded weights (QTIP's bitshift trellis with a computed code), the format below 3 bits that
//! holds up where scalar groups collapse.
//!
//! A matrix is cut into tiles of 16 x 16 weights. Each tile is one tail-biting trellis sequence of
//! T = 256 weights (tile row i, column t is position p = 16 i + t) stored as a circular stream of T K bits
//! (K = 2, 3 or 4 bits per weight, no overhead). The weight at position p is a function of the L-bit
//! window of the stream starting at bit p K (wrapping past the end to the start): its *state*. Consecutive
//! states share L - K bits, which is what makes the code a trellis: the encoder chooses K new bits per
//! weight, but each weight's value depends on the last L / K choices, so the 2^L values a state can take
//! form a codebook far larger than 2^K, searched jointly along the sequence by the Viterbi algorithm.
//!
//! The code is QTIP's "3INST": the state is put through one multiply-add modulo 2^32 (an LCG step), two
//! masks turn each 16-bit half into an f16 of exponent 0b011xx with random sign and mantissa, and the two
//! halves are summed. The values are close to Gaussian (zero mean, rms [`code_rms`]), and decoding is
//! arithmetic, with no table: what a WGSL shader does per lane on any adapter (`unpack2x16float` is core
//! WGSL). Weights are matched to it by incoherence processing ([`crate::rht`]) and a per-row scale.
//!
//! Encoding ([`Encoder`]) runs the Viterbi algorithm twice per tile, as QTIP does for tail-biting: once on
//! the sequence rotated by T / 2, which fixes the L - K bits the last state shares with the first, and
//! once constrained to them. Because the predecessors of a state are the 2^K states that agree with it in
//! L - K bits, each step is a minimum over contiguous runs of 2^K costs and one error per state: 2 x 2^L
//! operations per weight whatever K is. [`quantize`] adds GPTQ/LDLQ-style feedback: columns are quantized
//! a tile column (16) at a time and the block's error is spread over the columns not yet quantized through
//! the upper Cholesky factor of the inverse Hessian (block LDLQ, as QuIP# and QTIP do).
//!
//! In `wring_quant::group`'s terms a trellis matrix has `Stats::Trellis { state: L }`, groups of 16 (the
//! tile width), `bits` = K, and:
//! - `codes`: tiles in row-tile-major order (row tile R, then column tile C), 8 K words each; a tile's
//!   stream from bit 0 of its first word upwards;
//! - `stats`: one word per row, the row's f32 scale (the weight is scale x code);
//! - no second-order parameters, no permutation (the identity), no per-row widths, no mask; outliers and
//!   the incoherence signs as for any group matrix.

use crate::gptq::Hessian;
use crate::group::{GroupError, get_bits};

/// Tile side: a tile is `TILE` rows by `TILE` columns, one trellis sequence.
pub const TILE: usize = 16;
/// Weights per tile (the sequence length T).
pub const SEQ: usize = TILE * TILE;
/// The largest state width (QTIP's L = 16: the 3INST code reads 16 bits, and the encoder's tables
/// grow as 2^L).
pub const MAX_STATE: u32 = 16;
/// The smallest state width: below it the trellis holds too few states to be worth its search.
pub const MIN_STATE: u32 = 8;

const LCG_A: u32 = 89_226_354;
const LCG_B: u32 = 64_248_484;
const MASK: u32 = 0x8FFF_8FFF;
const FP_BITS: u32 = 0x3B60_3B60;

/// The 3INST code of an L-bit state: what `shaders/sparse/tmatvec.wgsl`'s `code3` computes.
pub fn code(state: u32) -> f32 {
    let x = state.wrapping_mul(LCG_A).wrapping_add(LCG_B);
    let h = (x & MASK) ^ FP_BITS;
    half::f16::from_bits(h as u16).to_f32() + half::f16::from_bits((h >> 16) as u16).to_f32()
}

/// Every state's value, `2^l` of them.
pub fn code_table(l: u32) -> Vec<f32> {
    (0..1u32 << l).map(code).collect()
}

/// The root mean square of the code over all `2^l` states: a row's scale is its rms over this.
pub fn code_rms(l: u32) -> f32 {
    let t = code_table(l);
    (t.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / t.len() as f64).sqrt() as f32
}

/// Words of one tile's stream at `k` bits per weight.
pub const fn tile_words(k: u32) -> usize {
    SEQ * k as usize / 32
}

/// The state of position `p` of a tile's stream (`tile_words(k)` words): `l` bits from bit `p k`,
/// circularly.
pub fn state_at(stream: &[u32], k: u32, l: u32, p: usize) -> u32 {
    let total = SEQ * k as usize;
    let at = p * k as usize % total;
    if at + l as usize <= total {
        get_bits(stream, at, l)
    } else {
        let head = (total - at) as u32;
        get_bits(stream, at, head) | get_bits(stream, 0, l - head) << head
    }
}

/// The code values of a whole tile (positions 0 to 255), unscaled.
pub fn decode_tile(stream: &[u32], k: u32, l: u32, out: &mut [f32]) {
    for (p, o) in out.iter_mut().enumerate().take(SEQ) {
        *o = code(state_at(stream, k, l, p));
    }
}

/// Checks a trellis configuration: `k` of 2 to 4 bits, `l` from [`MIN_STATE`] to [`MAX_STATE`] and
/// above `k`.
pub fn check(k: u32, l: u32) -> Result<(), GroupError> {
    if !(2..=4).contains(&k) {
        return Err(GroupError::Shape(format!(
            "trellis codes of {k} bits per weight; 2 to 4 are supported"
        )));
    }
    if !(MIN_STATE..=MAX_STATE).contains(&l) || l <= k {
        return Err(GroupError::Shape(format!(
            "a trellis state of {l} bits; {MIN_STATE} to {MAX_STATE} bits are supported"
        )));
    }
    Ok(())
}

/// Fixed-point steps per unit in the encoder's costs: values and codes are compared on a grid of 1/256.
pub const FIXED: f32 = 256.0;
/// The largest magnitude of a tile value on that grid (8 units): with codes below 4 units, a squared
/// difference is below 3072^2 and 256 of them below 2^32, so a path's cost is exact in a u32.
pub const FIXED_MAX: i32 = 2048;
/// A state the constrained pass excludes.
const EXCLUDED: u32 = u32::MAX;

/// A tile value on the encoder's fixed-point grid (ties to even, as WGSL's `round`), clamped to
/// +-[`FIXED_MAX`]: what `shaders/sparse/tviterbi.wgsl` receives.
pub fn to_fixed(v: f32) -> i32 {
    ((v * FIXED).round_ties_even() as i32).clamp(-FIXED_MAX, FIXED_MAX)
}

/// A state's code on the encoder's grid.
pub fn code_fixed(state: u32) -> i32 {
    (code(state) * FIXED).round_ties_even() as i32
}

/// A Viterbi encoder for one (K, L), with its buffers (2^L costs, and one byte per (position, shared
/// state) for the traceback: 4 MiB at L = 16, K = 2).
///
/// Costs are sums of squared differences on a fixed-point grid ([`to_fixed`], [`code_fixed`]) in u32:
/// exact, so the search is the same on every device (a GPU's contraction of a multiply-add into one
/// rounding cannot change a comparison) and `tviterbi` is bit for bit its twin. The grid's resolution
/// (1/256 of the code's unit) is far below the trellis's own error (a mean squared error of 0.02 to 0.08
/// at 3 and 2 bits).
#[derive(Debug, Clone)]
pub struct Encoder {
    k: u32,
    l: u32,
    table: Vec<i32>,
    cost: Vec<u32>,
    best: Vec<u32>,
    from: Vec<u8>,
}

impl Encoder {
    /// An encoder for `k` bits per weight and `l`-bit states.
    pub fn new(k: u32, l: u32) -> Result<Encoder, GroupError> {
        check(k, l)?;
        let shared = 1usize << (l - k);
        Ok(Encoder {
            k,
            l,
            table: (0..1u32 << l).map(code_fixed).collect(),
            cost: vec![0; 1 << l],
            best: vec![0; shared],
            from: vec![0; SEQ * shared],
        })
    }

    /// The least-cost state path for `x` (256 fixed-point values), with the first state's low L - K bits
    /// (and so the last state's high ones) fixed to `overlap` when given. Ties go to the lowest
    /// predecessor and the lowest final state.
    fn viterbi(&mut self, x: &[i32], overlap: Option<u32>) -> [u32; SEQ] {
        let (k, l) = (self.k, self.l);
        let fan = 1usize << k;
        let shared = 1usize << (l - k);
        let low = shared as u32 - 1;
        for (s, c) in self.cost.iter_mut().enumerate() {
            let d = x[0] - self.table[s];
            *c = match overlap {
                Some(o) if s as u32 & low != o => EXCLUDED,
                _ => (d * d) as u32,
            };
        }
        for p in 1..SEQ {
            // The predecessors of state s are the 2^K states whose high L - K bits are s's low ones:
            // (u << K) | j for u = s & low, a contiguous run of costs.
            let from = &mut self.from[p * shared..][..shared];
            for ((b, f), run) in self
                .best
                .iter_mut()
                .zip(from.iter_mut())
                .zip(self.cost.chunks_exact(fan))
            {
                let mut m = run[0];
                let mut arg = 0u8;
                for (j, &c) in run.iter().enumerate().skip(1) {
                    if c < m {
                        m = c;
                        arg = j as u8;
                    }
                }
                *b = m;
                *f = arg;
            }
            let xp = x[p];
            for (hi, cost) in self.cost.chunks_exact_mut(shared).enumerate() {
                let codes = &self.table[hi * shared..][..shared];
                for ((c, &v), &b) in cost.iter_mut().zip(codes).zip(&self.best) {
                    let d = xp - v;
                    // An excluded start stays excluded (no finite path reaches the sentinel's value).
                    *c = if b == EXCLUDED {
                        EXCLUDED
                    } else {
                        b + (d * d) as u32
                    };
                }
            }
        }
        // The last state must share its high L - K bits with the first state's low ones.
        let mut last = 0usize;
        let mut m = EXCLUDED;
        for (s, &c) in self.cost.iter().enumerate() {
            let ok = overlap.is_none_or(|o| (s >> k) as u32 == o);
            if ok && c < m {
                m = c;
                last = s;
            }
        }
        let mut states = [0u32; SEQ];
        states[SEQ - 1] = last as u32;
        for p in (1..SEQ).rev() {
            let u = states[p] & low;
            let j = u32::from(self.from[p * shared + u as usize]);
            states[p - 1] = u << k | j;
        }
        states
    }

    /// Encodes one tile's 256 values (already divided by the row scales) as a tail-biting stream of
    /// `tile_words(k)` words.
    pub fn encode(&mut self, x: &[f32]) -> Vec<u32> {
        assert_eq!(x.len(), SEQ, "a trellis tile holds 256 weights");
        let fixed: Vec<i32> = x.iter().map(|&v| to_fixed(v)).collect();
        self.encode_fixed(&fixed)
    }

    /// [`Encoder::encode`] on values already on the fixed-point grid.
    pub fn encode_fixed(&mut self, x: &[i32]) -> Vec<u32> {
        assert_eq!(x.len(), SEQ, "a trellis tile holds 256 weights");
        let (k, l) = (self.k, self.l);
        let low = (1u32 << (l - k)) - 1;
        // Pass 1, on the sequence rotated by half: the path's state at the original position 0 gives
        // the bits the stream's end must share with its start.
        let mut rolled = [0i32; SEQ];
        for (i, r) in rolled.iter_mut().enumerate() {
            *r = x[(i + SEQ / 2) % SEQ];
        }
        let overlap = self.viterbi(&rolled, None)[SEQ / 2] & low;
        let states = self.viterbi(x, Some(overlap));
        let mut words = vec![0u32; tile_words(k)];
        for (p, &s) in states.iter().enumerate() {
            crate::group::put_bits(&mut words, p * k as usize, k, s & ((1 << k) - 1));
        }
        words
    }
}

/// The result of [`quantize`]: the tile-major streams, the per-row scales and GPTQ's proxy error.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Streams, `(rows / 16) * (cols / 16)` tiles of `tile_words(k)` words.
    pub codes: Vec<u32>,
    /// One scale per row.
    pub scales: Vec<f32>,
    /// Σ over weights of ((w - ŵ) / U_jj)².
    pub proxy_error: f64,
}

/// What encodes a column block's tiles: `n * 256` fixed-point values ([`to_fixed`]) to
/// `n * tile_words(k)` stream words ([`cpu_encoder`], or `tviterbi` on a device).
pub type TileEncoder<'a> = dyn FnMut(&[i32]) -> Result<Vec<u32>, GroupError> + 'a;

/// How [`quantize`] runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Bits per weight (K).
    pub bits: u32,
    /// Bits per state (L).
    pub state: u32,
    /// The Hessian's damping, relative to its mean diagonal.
    pub damp: f64,
    /// Threads encoding a column block's tiles.
    pub threads: usize,
}

/// Quantizes `w` \[rows\]\[cols\] (rows and columns multiples of 16; incoherence-processed by the caller)
/// to trellis codes, with block LDLQ feedback through the layer's Hessian `h`, encoding on the CPU
/// ([`cpu_encoder`]).
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    settings: Settings,
) -> Result<Quantized, GroupError> {
    let mut enc = cpu_encoder(settings.bits, settings.state, settings.threads)?;
    quantize_with(w, rows, cols, h, settings, &mut enc)
}

/// Encodes tiles on the CPU: `n * 256` fixed-point values ([`to_fixed`]) to `n * tile_words(k)` stream
/// words, the tiles spread over `threads` threads.
pub fn cpu_encoder(
    k: u32,
    l: u32,
    threads: usize,
) -> Result<impl FnMut(&[i32]) -> Result<Vec<u32>, GroupError>, GroupError> {
    let threads = threads.max(1);
    let mut encoders: Vec<Encoder> = (0..threads)
        .map(|_| Encoder::new(k, l))
        .collect::<Result<_, _>>()?;
    Ok(move |x: &[i32]| -> Result<Vec<u32>, GroupError> {
        let tiles = x.len() / SEQ;
        let per = tiles.div_ceil(encoders.len()).max(1);
        let parts: Vec<Vec<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = encoders
                .iter_mut()
                .zip(x.chunks(per * SEQ))
                .map(|(enc, part)| {
                    s.spawn(move || {
                        part.chunks_exact(SEQ)
                            .flat_map(|t| enc.encode_fixed(t))
                            .collect::<Vec<u32>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an encoder thread does not panic"))
                .collect()
        });
        Ok(parts.concat())
    })
}

/// [`quantize`] with the tiles of each column block encoded by `encode` (`n * 256` fixed-point values to
/// `n * tile_words(k)` words, as [`cpu_encoder`]; `tviterbi` on a device gives the same words).
pub fn quantize_with(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    settings: Settings,
    encode: &mut TileEncoder<'_>,
) -> Result<Quantized, GroupError> {
    let Settings {
        bits: k,
        state: l,
        damp,
        threads: _,
    } = settings;
    check(k, l)?;
    if rows == 0 || !rows.is_multiple_of(TILE) || cols == 0 || !cols.is_multiple_of(TILE) {
        return Err(GroupError::Shape(format!(
            "a {rows} x {cols} matrix; trellis tiles need rows and columns in multiples of {TILE}"
        )));
    }
    crate::gptq::check_weights(w, rows, cols, h)?;
    let n = cols;
    let mut wp = w.to_vec();
    let u = crate::gptq::damped_inverse_factor(h, &mut wp, rows, damp)?;
    // Each row's scale matches its root mean square to the code's: the Viterbi search then fits
    // values of the code's own spread.
    let rms = code_rms(l);
    let scales: Vec<f32> = wp
        .chunks_exact(n)
        .map(|r| {
            let ms = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
            let s = (ms.sqrt() as f32) / rms;
            if s > 0.0 && s.is_finite() { s } else { 1.0 }
        })
        .collect();
    let (row_tiles, col_tiles) = (rows / TILE, cols / TILE);
    let tw = tile_words(k);
    let mut codes = vec![0u32; row_tiles * col_tiles * tw];
    let mut proxy_error = 0.0;
    for c in 0..col_tiles {
        let j0 = c * TILE;
        // Every row tile of this column block, on the encoder's grid, encoded in one call.
        let mut fixed = vec![0i32; row_tiles * SEQ];
        for rt in 0..row_tiles {
            for i in 0..TILE {
                let r = rt * TILE + i;
                for t in 0..TILE {
                    fixed[rt * SEQ + i * TILE + t] = to_fixed(wp[r * n + j0 + t] / scales[r]);
                }
            }
        }
        let streams = encode(&fixed)?;
        if streams.len() != row_tiles * tw {
            return Err(GroupError::Shape(format!(
                "the encoder gave {} words for {row_tiles} tiles of {tw}",
                streams.len()
            )));
        }
        let results = streams.chunks_exact(tw).enumerate().map(|(rt, stream)| {
            let mut q = vec![0f32; SEQ];
            decode_tile(stream, k, l, &mut q);
            (rt, stream.to_vec(), q)
        });
        // The block's error Δ (rows x 16), then G = Δ U_bb⁻¹ and W[:, rest] -= G U[b, rest].
        let mut g = vec![0f64; rows * TILE];
        for (rt, stream, q) in results {
            codes[(rt * col_tiles + c) * tw..][..tw].copy_from_slice(&stream);
            for i in 0..TILE {
                let r = rt * TILE + i;
                for t in 0..TILE {
                    let deq = scales[r] * q[i * TILE + t];
                    let d = f64::from(wp[r * n + j0 + t] - deq);
                    wp[r * n + j0 + t] = deq;
                    g[r * TILE + t] = d;
                }
            }
        }
        for r in 0..rows {
            let gr = &mut g[r * TILE..][..TILE];
            for t in 0..TILE {
                let j = j0 + t;
                let mut v = gr[t];
                for i in 0..t {
                    v -= gr[i] * u[(j0 + i) * n + j];
                }
                gr[t] = v / u[j * n + j];
                proxy_error += gr[t] * gr[t];
            }
        }
        let rest = j0 + TILE;
        if rest < n {
            let ublock: Vec<f32> = (0..TILE)
                .flat_map(|i| {
                    u[(j0 + i) * n + rest..(j0 + i + 1) * n]
                        .iter()
                        .map(|&v| v as f32)
                })
                .collect();
            let width = n - rest;
            for r in 0..rows {
                let wr = &mut wp[r * n + rest..(r + 1) * n];
                for i in 0..TILE {
                    let e = g[r * TILE + i] as f32;
                    if e == 0.0 {
                        continue;
                    }
                    for (w, &uk) in wr.iter_mut().zip(&ublock[i * width..][..width]) {
                        *w -= e * uk;
                    }
                }
            }
        }
    }
    Ok(Quantized {
        codes,
        scales,
        proxy_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (a, b) = (next(), next());
                ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn the_code_is_close_to_a_standard_gaussian_and_finite() {
        let t = code_table(16);
        assert!(t.iter().all(|v| v.is_finite()));
        let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len() as f64;
        let rms = f64::from(code_rms(16));
        assert!(mean.abs() < 0.01, "mean {mean}");
        // Two f16s of exponent 0b011xx, random signs: an rms near 1 (QTIP's code is matched to N(0, 1)).
        assert!((0.8..1.3).contains(&rms), "rms {rms}");
    }

    #[test]
    fn streams_decode_to_the_path_the_encoder_chose_and_wrap_around() {
        for (k, l) in [(2, 8), (3, 10), (4, 12), (2, 12)] {
            let x = gaussian(SEQ, u64::from(k * 100 + l));
            let mut e = Encoder::new(k, l).unwrap();
            let stream = e.encode(&x);
            assert_eq!(stream.len(), tile_words(k));
            let mut q = vec![0f32; SEQ];
            decode_tile(&stream, k, l, &mut q);
            // Consecutive states share L - K bits, including the last and the first (tail-biting).
            let low = (1u32 << (l - k)) - 1;
            for p in 0..SEQ {
                let (a, b) = (
                    state_at(&stream, k, l, p),
                    state_at(&stream, k, l, (p + 1) % SEQ),
                );
                assert_eq!(a >> k, b & low, "k={k} l={l} p={p}");
            }
            let mse: f64 = x
                .iter()
                .zip(&q)
                .map(|(&a, &b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                / SEQ as f64;
            // Far better than nothing (1.0) at every width; the tighter bounds are below.
            assert!(mse < 0.5, "k={k} l={l} mse={mse}");
        }
    }

    /// The Viterbi search is exact: on a small trellis, no other stream has a lower error than the one
    /// the unconstrained pass finds (checked against brute force over every path of a short prefix is
    /// impossible at 256 steps, so instead: against every single-state change that keeps the chain valid,
    /// and against the greedy encoder, which must never win).
    #[test]
    fn viterbi_beats_greedy_and_its_own_perturbations() {
        let (k, l) = (2u32, 8u32);
        let x = gaussian(SEQ, 7);
        let mut e = Encoder::new(k, l).unwrap();
        let stream = e.encode(&x);
        // The search's own measure: squared differences on the fixed-point grid.
        let err = |s: &[u32]| -> f64 {
            (0..SEQ)
                .map(|p| f64::from(to_fixed(x[p]) - code_fixed(state_at(s, k, l, p))).powi(2))
                .sum()
        };
        let best = err(&stream);
        // Flipping any K-bit symbol of the stream gives another valid circular stream: none outside the
        // bits the last state shares with the first (which the second pass holds fixed) is better.
        for p in ((l - k) / k) as usize..SEQ {
            for v in 0..(1u32 << k) {
                let mut s = stream.clone();
                crate::group::put_bits(&mut s, p * k as usize, k, v);
                assert!(
                    err(&s) >= best - 1e-9,
                    "symbol {p} = {v} improves on Viterbi"
                );
            }
        }
        // Greedy: each symbol chosen for the weight whose state it completes, left to right.
        let mut g = vec![0u32; tile_words(k)];
        for p in 0..SEQ {
            let mut bestv = (f64::INFINITY, 0);
            for v in 0..(1u32 << k) {
                crate::group::put_bits(&mut g, p * k as usize, k, v);
                let q = p.saturating_sub(((l - k) / k) as usize);
                let e = f64::from(x[q] - code(state_at(&g, k, l, q))).powi(2);
                if e < bestv.0 {
                    bestv = (e, v);
                }
            }
            crate::group::put_bits(&mut g, p * k as usize, k, bestv.1);
        }
        assert!(best < err(&g), "viterbi {best} greedy {}", err(&g));
    }

    /// Distortion on Gaussian data, per weight, against the scalar Lloyd-Max quantizer of the same rate
    /// (0.1175 at 2 bits, 0.03454 at 3, 0.009497 at 4): the trellis must beat it, as QTIP's tables show
    /// (0.069 / 0.0185 / 0.0048 at L = 16 for 2 / 3 / 4 bits).
    #[test]
    fn the_trellis_beats_the_best_scalar_quantizer_on_gaussian_data() {
        for (k, l, lloyd) in [(2u32, 12u32, 0.1175), (3, 12, 0.03454), (4, 12, 0.009497)] {
            let x = gaussian(SEQ * 8, 11);
            let mut e = Encoder::new(k, l).unwrap();
            let mut sse = 0.0;
            for tile in x.chunks(SEQ) {
                let s = e.encode(tile);
                let mut q = vec![0f32; SEQ];
                decode_tile(&s, k, l, &mut q);
                sse += tile
                    .iter()
                    .zip(&q)
                    .map(|(&a, &b)| f64::from(a - b).powi(2))
                    .sum::<f64>();
            }
            let mse = sse / x.len() as f64;
            assert!(mse < lloyd, "k={k} l={l} mse={mse} lloyd={lloyd}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(check(1, 16).is_err());
        assert!(check(5, 16).is_err());
        assert!(check(2, 17).is_err());
        assert!(check(2, 7).is_err());
        assert!(check(4, 16).is_ok());
        let h = Hessian::identity(16);
        let two = Settings {
            bits: 2,
            state: 12,
            damp: 0.01,
            threads: 1,
        };
        assert!(quantize(&[0.0; 8 * 16], 8, 16, &h, two).is_err());
        assert!(quantize(&[f32::NAN; 16 * 16], 16, 16, &h, two).is_err());
    }

    /// With the Hessian's feedback, the layer's output error (what matters) is below that of encoding
    /// each tile alone, on inputs with correlated features.
    #[test]
    fn ldlq_feedback_lowers_the_output_error() {
        let (rows, cols) = (32, 64);
        let w = gaussian(rows * cols, 3);
        let mut h = Hessian::new(cols);
        let base = gaussian(400 * 8, 5);
        let mut x = vec![0f32; 400 * cols];
        for s in 0..400 {
            for j in 0..cols {
                // Eight latent factors, each shared by every eighth feature: columns in different tiles
                // are strongly correlated, so a tile's error can be made up for in the tiles after it.
                x[s * cols + j] = base[s * 8 + j % 8] + 0.1 * base[(s * 8 + j * 7) % base.len()];
            }
        }
        h.add(&x);
        let rebuild = |qz: &Quantized| -> Vec<f32> {
            let mut out = vec![0f32; rows * cols];
            let ct = cols / TILE;
            for rt in 0..rows / TILE {
                for c in 0..ct {
                    let mut q = vec![0f32; SEQ];
                    decode_tile(&qz.codes[(rt * ct + c) * tile_words(2)..], 2, 12, &mut q);
                    for i in 0..TILE {
                        for t in 0..TILE {
                            let r = rt * TILE + i;
                            out[r * cols + c * TILE + t] = qz.scales[r] * q[i * TILE + t];
                        }
                    }
                }
            }
            out
        };
        let two = Settings {
            bits: 2,
            state: 12,
            damp: 0.01,
            threads: 2,
        };
        let fed = quantize(&w, rows, cols, &h, two).unwrap();
        let alone = quantize(
            &w,
            rows,
            cols,
            &Hessian::identity(cols),
            Settings { threads: 1, ..two },
        )
        .unwrap();
        let e_fed = crate::gptq::output_error(&w, &rebuild(&fed), cols, &h);
        let e_alone = crate::gptq::output_error(&w, &rebuild(&alone), cols, &h);
        assert!(e_fed < 0.8 * e_alone, "fed {e_fed} alone {e_alone}");
    }
}
