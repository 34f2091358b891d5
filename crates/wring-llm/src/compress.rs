//! Compressing a model's linear layers below 4 bits: calibration statistics gathered by running text
//! through wring itself on the GPU, every linear layer quantized (round to nearest, GPTQ or SpQR, into
//! `wring_quant::group`'s layout), and a weight source that serves the quantized matrices in place of the
//! originals through the same model code.
//!
//! The statistics are those of the unquantized model (each layer's inputs come from full-precision
//! earlier layers), as GPTQ's and SpQR's reference scripts do without their sequential option.

use std::collections::HashMap;

use wring_gguf::Gguf;
use wring_quant::gptq::{self, Config, Hessian};
use wring_quant::group::GroupMatrix;
use wring_runtime::Context;
use wring_runtime::dispatch::Weights;

use std::path::Path;

use wring_io::group_file::{Base, GroupFile};

use crate::model::{Llama, WeightSource};
use crate::{GgufTokenizer, LlamaConfig, LlmError};

/// The linear layers of a block by the input they read: q/k/v, the attention output, gate/up, down.
pub const SITES: [&[&str]; 4] = [
    &["attn_q", "attn_k", "attn_v", "attn_qkv"],
    &["attn_output"],
    &["ffn_gate", "ffn_up"],
    &["ffn_down"],
];

/// Per block and input site, the Hessian H = 2/N XᵀX of the inputs seen.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// \[block\]\[site\].
    pub layers: Vec<[Hessian; 4]>,
    /// Tokens run.
    pub tokens: usize,
}

/// The seed of one input site's incoherence transform: the file's seed mixed with the block and site
/// (SplitMix64's increment), so sites differ and the matrices of one site share their transform.
pub fn site_seed(seed: u64, (block, site): (usize, usize)) -> u64 {
    seed ^ ((block * SITES.len() + site + 1) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The linear layers of block `b`'s input site `s` that the file holds: q, k and v apart or Phi-3's
/// fused `attn_qkv`, gate and up apart or fused in `ffn_up`.
fn site_names(g: &Gguf, (b, s): (usize, usize)) -> impl Iterator<Item = String> + '_ {
    SITES[s]
        .iter()
        .map(move |n| format!("blk.{b}.{n}.weight"))
        .filter(|name| g.tensor(name).is_some())
}

/// (block, site) of a linear layer's GGUF name.
pub fn site_of(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("blk.")?;
    let (block, what) = rest.split_once('.')?;
    let what = what.strip_suffix(".weight")?;
    let site = SITES.iter().position(|s| s.contains(&what))?;
    Some((block.parse().ok()?, site))
}

impl Calibration {
    /// The Hessian of the layer named `name` (GGUF naming).
    pub fn hessian(&self, name: &str) -> Option<&Hessian> {
        let (b, s) = site_of(name)?;
        Some(&self.layers.get(b)?[s])
    }
}

/// Runs `tokens` through `llama` in windows of `window` tokens (each from an empty cache) and accumulates
/// every linear layer's input statistics. `progress(done, total)` is called per window.
pub fn calibrate(
    llama: &mut Llama,
    ctx: &Context,
    tokens: &[u32],
    window: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Calibration, LlmError> {
    let cfg = llama.cfg.clone();
    if window == 0 || tokens.len() < window {
        return Err(LlmError::Request(format!(
            "calibration needs at least one window of {window} tokens, got {}",
            tokens.len()
        )));
    }
    let widths = [cfg.n_embd, cfg.q_dim(), cfg.n_embd, cfg.n_ff];
    let mut layers: Vec<[Hessian; 4]> = (0..cfg.n_layers)
        .map(|_| widths.map(Hessian::new))
        .collect();
    let windows = tokens.len() / window;
    for w in 0..windows {
        llama.reset();
        let inputs = llama.forward_inputs(ctx, &tokens[w * window..(w + 1) * window])?;
        // The rank-N updates dominate: split the blocks between two threads.
        let half = layers.len().div_ceil(2);
        let (a, b) = layers.split_at_mut(half);
        let (ia, ib) = inputs.split_at(half);
        std::thread::scope(|s| {
            s.spawn(|| accumulate(a, ia));
            accumulate(b, ib);
        });
        progress(w + 1, windows);
    }
    llama.reset();
    Ok(Calibration {
        layers,
        tokens: windows * window,
    })
}

fn accumulate(layers: &mut [[Hessian; 4]], inputs: &[[Vec<f32>; 4]]) {
    for (hs, xs) in layers.iter_mut().zip(inputs) {
        for (h, x) in hs.iter_mut().zip(xs) {
            h.add(x);
        }
    }
}

/// A GGUF matrix as f32 \[rows\]\[cols\] (rows = outputs).
pub fn dense_matrix(g: &Gguf, name: &str) -> Result<(usize, usize, Vec<f32>), LlmError> {
    let t = g
        .tensor(name)
        .ok_or_else(|| LlmError::Unsupported(format!("tensor `{name}` is missing")))?;
    let [cols, rows] = t.dims[..] else {
        return Err(LlmError::Unsupported(format!("`{name}` is not a matrix")));
    };
    let (rows, cols) = (rows as usize, cols as usize);
    let values = crate::model::tensor_f32(g, t)?;
    Ok((rows, cols, values))
}

/// MixLLM's global choice: every row of every matrix ranked by its salience at `cfg.bits`
/// ([`gptq::row_salience`]), the top rows promoted to `cfg.high_bits` until they hold `cfg.high_fraction` of
/// the weights. Returns each matrix's row widths.
fn promoted_rows(
    g: &Gguf,
    names: &[String],
    cfg: &Config,
    calib: Option<&Calibration>,
) -> Result<HashMap<String, Vec<u8>>, LlmError> {
    if !(cfg.bits..=8).contains(&cfg.high_bits) || !(0.0..=1.0).contains(&cfg.high_fraction) {
        return Err(LlmError::Request(format!(
            "promoted rows of {} bits for {} of the weights: need {} to 8 bits and a fraction in [0, 1]",
            cfg.high_bits, cfg.high_fraction, cfg.bits
        )));
    }
    let mut ranked = Vec::new();
    let mut total = 0usize;
    let mut widths = HashMap::new();
    // Each matrix is decoded here and again when it is quantized: holding every linear layer in f32
    // between the two passes would cost far more memory than the second decode costs time.
    for (m, name) in names.iter().enumerate() {
        let (rows, cols, w) = dense_matrix(g, name)?;
        let h = layer_hessian(cfg, calib, name, cols)?;
        let s = gptq::row_salience(&w, rows, cols, &h, cfg.bits, cfg.group);
        ranked.extend(s.into_iter().enumerate().map(|(r, v)| (v, m, r, cols)));
        total += rows * cols;
        widths.insert(name.clone(), vec![cfg.bits as u8; rows]);
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let budget = (cfg.high_fraction * total as f64) as usize;
    let mut used = 0;
    for (_, m, r, cols) in ranked {
        if used + cols > budget {
            break;
        }
        used += cols;
        widths.get_mut(&names[m]).expect("every matrix has widths")[r] = cfg.high_bits as u8;
    }
    Ok(widths)
}

/// The statistics `cfg` quantizes matrix `name` with: the calibration's Hessian, or for round to nearest
/// (which ranks and rounds by plain squared error) the identity.
fn layer_hessian<'a>(
    cfg: &Config,
    calib: Option<&'a Calibration>,
    name: &str,
    cols: usize,
) -> Result<std::borrow::Cow<'a, Hessian>, LlmError> {
    if cfg.method == gptq::Method::Rtn {
        return Ok(std::borrow::Cow::Owned(Hessian::identity(cols)));
    }
    let c = calib.ok_or_else(|| {
        LlmError::Request(format!("{:?} needs calibration statistics", cfg.method))
    })?;
    c.hessian(name)
        .map(std::borrow::Cow::Borrowed)
        .ok_or_else(|| LlmError::Request(format!("the calibration has no statistics for `{name}`")))
}

/// What quantizing a model did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Weights in the quantized linear layers.
    pub weights: usize,
    /// Their storage in bits, everything counted.
    pub bits: f64,
    /// Outliers kept.
    pub outliers: usize,
    /// Groups pruned (GQSA).
    pub pruned_groups: usize,
    /// Σ of GPTQ's objective over the layers.
    pub proxy_error: f64,
}

impl Summary {
    /// Bits per weight of the linear layers.
    pub fn bits_per_weight(&self) -> f64 {
        self.bits / self.weights as f64
    }
}

/// Quantized matrices by GGUF tensor name.
pub type Matrices = HashMap<String, GroupMatrix>;

/// Quantizes every linear layer of a llama-family GGUF with `cfg`, using the calibration's Hessians
/// (round to nearest uses none). `progress(name, done, total)` is called per matrix.
pub fn quantize_linears(
    g: &Gguf,
    model: &LlamaConfig,
    calib: Option<&Calibration>,
    cfg: &Config,
    progress: impl FnMut(&str, usize, usize),
) -> Result<(HashMap<String, GroupMatrix>, Summary), LlmError> {
    quantize_linears_scored(g, model, calib, cfg, progress).map(|(m, s, _)| (m, s))
}

/// [`quantize_linears`], with each matrix's error as well: GPTQ's objective on the calibration's
/// Hessian (the layer's output error on the calibration activations; the plain squared error for round
/// to nearest), by name.
pub fn quantize_linears_scored(
    g: &Gguf,
    model: &LlamaConfig,
    calib: Option<&Calibration>,
    cfg: &Config,
    progress: impl FnMut(&str, usize, usize),
) -> Result<(Matrices, Summary, HashMap<String, f64>), LlmError> {
    quantize_linears_on(None, g, model, calib, cfg, progress)
}

/// [`quantize_linears_scored`], with trellis codes encoded on `device` when it is a GPU (`tviterbi`, the
/// same streams as the CPU's encoder; a CPU adapter would run the search on the same cores as the CPU
/// encoder with more overhead, so there the CPU encodes).
pub fn quantize_linears_on(
    device: Option<&Context>,
    g: &Gguf,
    model: &LlamaConfig,
    calib: Option<&Calibration>,
    cfg: &Config,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<(Matrices, Summary, HashMap<String, f64>), LlmError> {
    let device = device.filter(|c| !c.caps().software);
    // One product of a layout's rows and columns with the configuration, on the device or the CPU.
    let quantize =
        |w: &[f32], rows: usize, cols: usize, h: &Hessian, widths: &[u8]| match (device, cfg.stats)
        {
            (Some(ctx), wring_quant::group::Stats::Trellis { state }) => {
                let layout = wring_quant::group::Layout {
                    rows,
                    cols,
                    bits: cfg.bits,
                    group: cfg.group,
                    stats: cfg.stats,
                };
                let mut enc = wring_runtime::dispatch::trellis_encoder(ctx, cfg.bits, state)
                    .map_err(|e| wring_quant::group::GroupError::Shape(e.to_string()))?;
                gptq::quantize_trellis_with(w, layout, h, cfg.damp, &mut enc)
            }
            _ => gptq::quantize_rows(w, rows, cols, h, cfg, widths),
        };
    let names: Vec<String> = (0..model.n_layers)
        .flat_map(|b| (0..SITES.len()).flat_map(move |s| site_names(g, (b, s))))
        .collect();
    let mut out = HashMap::new();
    let mut errors = HashMap::new();
    let mut summary = Summary {
        weights: 0,
        bits: 0.0,
        outliers: 0,
        pruned_groups: 0,
        proxy_error: 0.0,
    };
    let row_bits = if cfg.high_fraction > 0.0 {
        promoted_rows(g, &names, cfg, calib)?
    } else {
        HashMap::new()
    };
    // Incoherence processing: the last input site's transform and its Hessian in the transformed basis
    // (q, k and v share one input, as gate and up do, and so one transform and one conjugated Hessian).
    let mut site_transform: Option<((usize, usize), Vec<u32>, Hessian)> = None;
    for (i, name) in names.iter().enumerate() {
        let (rows, cols, mut w) = dense_matrix(g, name)?;
        let h = layer_hessian(cfg, calib, name, cols)?;
        let widths = row_bits.get(name).map_or(&[][..], Vec::as_slice);
        let bad = |e: &dyn std::fmt::Display| LlmError::Unsupported(format!("`{name}`: {e}"));
        let (m, report) = match cfg.incoherence {
            None => quantize(&w, rows, cols, &h, widths).map_err(|e| bad(&e))?,
            Some(seed) => {
                let site = site_of(name).ok_or_else(|| bad(&"not a linear layer"))?;
                let t = wring_quant::rht::Rht::new(cols).map_err(|e| bad(&e))?;
                let dct = t.dct();
                if site_transform.as_ref().is_none_or(|(s, ..)| *s != site) {
                    let signs = wring_quant::rht::signs_from_seed(cols, site_seed(seed, site));
                    // Built field by field: cloning `h` first would copy its n x n matrix only
                    // to replace it.
                    let conjugated = Hessian {
                        n: h.n,
                        h: t.conjugate(&dct, &signs, &h.h),
                        samples: h.samples,
                    };
                    site_transform = Some((site, signs, conjugated));
                }
                let (_, signs, ht) = site_transform.as_ref().expect("set above");
                // Each row w stored as V w.
                let mut row = vec![0f32; cols];
                for chunk in w.chunks_mut(cols) {
                    t.forward(&dct, signs, chunk, &mut row);
                    chunk.copy_from_slice(&row);
                }
                let (mut m, report) = quantize(&w, rows, cols, ht, widths).map_err(|e| bad(&e))?;
                m.signs = signs.clone();
                (m, report)
            }
        };
        m.check().map_err(|e| bad(&e))?;
        summary.weights += rows * cols;
        summary.bits += m.bits_per_weight() * (rows * cols) as f64;
        summary.outliers += report.outliers;
        summary.pruned_groups += report.pruned;
        summary.proxy_error += report.proxy_error;
        errors.insert(name.clone(), report.proxy_error);
        out.insert(name.clone(), m);
        progress(name, i + 1, names.len());
    }
    Ok((out, summary, errors))
}

/// One input site's share of a mixture: which candidate it took, and what that costs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteChoice {
    /// The block.
    pub block: usize,
    /// The input site's matrices (`attn_q+attn_k+attn_v`, ...).
    pub site: String,
    /// The candidate taken, as [`Config::describe`] gives it.
    pub config: String,
    /// Its storage in bits, everything counted.
    pub bits: f64,
    /// Its error (the sum of its matrices' [`quantize_linears_scored`] errors).
    pub error: f64,
}

/// Quantizes the linear layers to at most `target_bpw` bits per weight with the least error, choosing a
/// candidate configuration per input site (the matrices of a site read one input and are served stacked,
/// so they share one): every candidate quantizes the whole model, each site's bits and error are
/// measured, and [`choose_within`] solves the knapsack (the least total error within the bits). The
/// errors are each layer's own output error on the
/// calibration activations (EvoPress and MixLLM both argue that sensitivity differs by layer); they are
/// not the layers' effect on the logits. Returns the matrices, their summary and the choice per site.
pub fn quantize_to_target(
    g: &Gguf,
    model: &LlamaConfig,
    calib: Option<&Calibration>,
    candidates: &[Config],
    target_bpw: f64,
    progress: impl FnMut(&str, usize, usize),
) -> Result<(Matrices, Summary, Vec<SiteChoice>), LlmError> {
    quantize_to_target_on(None, g, model, calib, candidates, target_bpw, progress)
}

/// [`quantize_to_target`], encoding trellis candidates on `device` as [`quantize_linears_on`] does.
pub fn quantize_to_target_on(
    device: Option<&Context>,
    g: &Gguf,
    model: &LlamaConfig,
    calib: Option<&Calibration>,
    candidates: &[Config],
    target_bpw: f64,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<(Matrices, Summary, Vec<SiteChoice>), LlmError> {
    if candidates.is_empty() {
        return Err(LlmError::Request("no candidate configurations".into()));
    }
    if !(target_bpw.is_finite() && target_bpw > 0.0) {
        return Err(LlmError::Request(format!(
            "a target of {target_bpw} bits per weight"
        )));
    }
    let mut runs = Vec::with_capacity(candidates.len());
    for (c, cfg) in candidates.iter().enumerate() {
        let (m, _, e) = quantize_linears_on(device, g, model, calib, cfg, |name, done, total| {
            progress(name, c * total + done, candidates.len() * total)
        })?;
        runs.push((m, e));
    }
    // Per site (in block order), each candidate's (bits, error).
    let sites: Vec<(usize, usize)> = (0..model.n_layers)
        .flat_map(|b| (0..SITES.len()).map(move |s| (b, s)))
        .collect();
    let names = |site| site_names(g, site);
    let mut cost = Vec::with_capacity(sites.len());
    let mut weights = 0usize;
    for &site in &sites {
        let mut per = Vec::with_capacity(runs.len());
        for (m, e) in &runs {
            let (mut bits, mut err) = (0.0, 0.0);
            for n in names(site) {
                let mat = m
                    .get(&n)
                    .ok_or_else(|| LlmError::Unsupported(format!("no `{n}`")))?;
                bits += mat.bits_per_weight() * (mat.layout.rows * mat.layout.cols) as f64;
                err += e[&n];
            }
            per.push((bits, err));
        }
        weights += names(site)
            .map(|n| runs[0].0[&n].layout.rows * runs[0].0[&n].layout.cols)
            .sum::<usize>();
        cost.push(per);
    }
    let choice = choose_within(&cost, target_bpw * weights as f64).ok_or_else(|| {
        let cheapest: f64 = cost
            .iter()
            .map(|per| per.iter().map(|p| p.0).fold(f64::INFINITY, f64::min))
            .sum();
        LlmError::Request(format!(
            "a target of {target_bpw} bits per weight is below the smallest candidates' {:.3}",
            cheapest / weights as f64
        ))
    })?;
    let mut out = HashMap::new();
    let mut summary = Summary {
        weights,
        bits: 0.0,
        outliers: 0,
        pruned_groups: 0,
        proxy_error: 0.0,
    };
    let mut choices = Vec::with_capacity(sites.len());
    for ((&site, &c), per) in sites.iter().zip(&choice).zip(&cost) {
        for n in names(site) {
            let m = runs[c].0.remove(&n).expect("measured above");
            summary.outliers += m.outlier_count();
            out.insert(n, m);
        }
        summary.bits += per[c].0;
        summary.proxy_error += per[c].1;
        choices.push(SiteChoice {
            block: site.0,
            site: SITES[site.1]
                .iter()
                .filter(|n| g.tensor(&format!("blk.{}.{n}.weight", site.0)).is_some())
                .copied()
                .collect::<Vec<_>>()
                .join("+"),
            config: candidates[c].describe(),
            bits: per[c].0,
            error: per[c].1,
        });
    }
    Ok((out, summary, choices))
}

/// The knapsack of [`quantize_to_target`]: for items each offering options of (cost, error), one option
/// per item with total cost within `budget` and the least total error, or `None` when even the cheapest
/// options exceed it. Dynamic programming over the budget in 100,000 steps, each option's cost rounded up
/// to whole steps: the choice always fits and is the best of those that fit with the rounded costs (which
/// forgoes only choices within a step per item of the budget: 0.12 % of it for SmolLM2's 120 sites).
pub fn choose_within(options: &[Vec<(f64, f64)>], budget: f64) -> Option<Vec<usize>> {
    const STEPS: usize = 100_000;
    // Options are recorded as bytes.
    if options.iter().any(|per| per.is_empty() || per.len() > 255)
        || budget.is_nan()
        || budget < 0.0
    {
        return None;
    }
    let unit = budget / STEPS as f64;
    let steps = |c: f64| -> usize {
        if unit > 0.0 {
            (c / unit).ceil().min((STEPS + 1) as f64) as usize
        } else if c > 0.0 {
            STEPS + 1
        } else {
            0
        }
    };
    // best[b]: the least error of the items so far within b steps; from[i][b] the option item i took.
    let mut best = vec![0.0f64; STEPS + 1];
    let mut from = Vec::with_capacity(options.len());
    for per in options {
        let mut next = vec![f64::INFINITY; STEPS + 1];
        let mut took = vec![u8::MAX; STEPS + 1];
        for (o, &(c, e)) in per.iter().enumerate() {
            let s = steps(c);
            for b in s..=STEPS {
                let v = best[b - s] + e;
                if v < next[b] {
                    next[b] = v;
                    took[b] = o as u8;
                }
            }
        }
        best = next;
        from.push(took);
    }
    if !best[STEPS].is_finite() {
        return None;
    }
    let mut choice = vec![0; options.len()];
    let mut b = STEPS;
    for (i, per) in options.iter().enumerate().rev() {
        let o = from[i][b] as usize;
        choice[i] = o;
        b -= steps(per[o].0);
    }
    Some(choice)
}

/// Where [`compress`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage<'a> {
    /// Calibration windows run so far.
    Calibrating {
        /// Windows run.
        done: usize,
        /// Windows in all.
        total: usize,
    },
    /// Matrices quantized so far, and the last one.
    Quantizing {
        /// The matrix quantized last.
        name: &'a str,
        /// Matrices quantized.
        done: usize,
        /// Matrices in all.
        total: usize,
    },
}

/// Compresses the GGUF at `base_path` (already opened as `g`) with `cfg`: calibration on the first
/// `calib_tokens` tokens of `calib_text` (in windows of 256 tokens) for GPTQ and SpQR, then every linear
/// layer, giving the file to write, the summary and, with a target in bits per weight, the width each
/// input site took (`cfg` at 2, 3 and 4 bits the candidates; see [`quantize_to_target`]).
#[allow(
    clippy::too_many_arguments,
    reason = "the model, the method, the target and the calibration are all the caller's"
)]
pub fn compress(
    ctx: &Context,
    g: &Gguf,
    base_path: &Path,
    cfg: &Config,
    target_bpw: Option<f64>,
    calib_text: Option<&str>,
    calib_tokens: usize,
    mut progress: impl FnMut(Stage<'_>),
) -> Result<(GroupFile, Summary, Vec<SiteChoice>), LlmError> {
    let base = Base::of(base_path).map_err(|e| LlmError::Request(e.to_string()))?;
    let model = LlamaConfig::from_gguf(g)?;
    let calib = match (cfg.method, calib_text) {
        (gptq::Method::Rtn, _) => None,
        (_, None) => {
            return Err(LlmError::Request(format!(
                "{} needs calibration text (--calib FILE)",
                cfg.method.name()
            )));
        }
        (_, Some(text)) => {
            let tok = GgufTokenizer::from_gguf(g)?;
            let ids = tok.encode(text)?;
            let n = ids.len().min(calib_tokens);
            const WINDOW: usize = 256;
            if n < WINDOW {
                return Err(LlmError::Request(format!(
                    "the calibration text has {} tokens; at least {WINDOW} are needed",
                    ids.len()
                )));
            }
            let mut llama = Llama::load(ctx, g, WINDOW, |_, _| {})?;
            Some(calibrate(
                &mut llama,
                ctx,
                &ids[..n],
                WINDOW,
                |done, total| progress(Stage::Calibrating { done, total }),
            )?)
        }
    };
    let report = |name: &str, done, total| progress(Stage::Quantizing { name, done, total });
    let (matrices, summary, choices, method) = match target_bpw {
        None => {
            let (m, s, _) = quantize_linears_on(Some(ctx), g, &model, calib.as_ref(), cfg, report)?;
            (m, s, Vec::new(), cfg.describe())
        }
        Some(target) => {
            if cfg.high_fraction > 0.0 || cfg.sparsity > 0.0 {
                return Err(LlmError::Request(
                    "a target in bits per weight chooses widths itself; it does not combine with \
                     mixllm's promoted rows or gqsa's pruning"
                        .into(),
                ));
            }
            let candidates: Vec<Config> = (2..=4).map(|bits| Config { bits, ..*cfg }).collect();
            let (m, s, c) = quantize_to_target_on(
                Some(ctx),
                g,
                &model,
                calib.as_ref(),
                &candidates,
                target,
                report,
            )?;
            let method = format!("{} bits=2..4 target_bpw={target}", cfg.describe());
            (m, s, c, method)
        }
    };
    Ok((
        GroupFile {
            base,
            method: format!(
                "{method}; calibration tokens={}",
                calib.as_ref().map_or(0, |c| c.tokens)
            ),
            matrices,
        },
        summary,
        choices,
    ))
}

/// Reads a file of compressed weights and checks that it was made from the GGUF at `base_path`.
pub fn open(weights: &Path, base_path: &Path) -> Result<GroupFile, LlmError> {
    let file = wring_io::group_file::read(weights).map_err(|e| LlmError::Request(e.to_string()))?;
    check_base(weights, &file.base, base_path)?;
    Ok(file)
}

/// Refuses a file made from another model than the GGUF at `base_path` (size and CRC-32 differ).
pub fn check_base(file: &Path, made_from: &Base, base_path: &Path) -> Result<(), LlmError> {
    let base = Base::of(base_path).map_err(|e| LlmError::Request(e.to_string()))?;
    if !made_from.matches(&base) {
        return Err(LlmError::Request(format!(
            "{} was made from {} ({} bytes, CRC-32 {:08x}), not from {} ({} bytes, CRC-32 {:08x})",
            file.display(),
            made_from.name,
            made_from.bytes,
            made_from.crc32,
            base_path.display(),
            base.bytes,
            base.crc32
        )));
    }
    Ok(())
}

/// A model whose named matrices are replaced by group-quantized ones; everything else comes from `base`.
pub struct Quantized<'a> {
    /// Where the other weights, and the configuration, come from.
    pub base: &'a dyn WeightSource,
    /// The replacements, by GGUF name.
    pub matrices: &'a HashMap<String, GroupMatrix>,
}

impl std::fmt::Debug for Quantized<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quantized")
            .field("matrices", &self.matrices.len())
            .finish()
    }
}

impl WeightSource for Quantized<'_> {
    fn config(&self) -> Result<LlamaConfig, LlmError> {
        self.base.config()
    }

    fn matrix(&self, ctx: &Context, name: &str) -> Result<Weights, LlmError> {
        match self.matrices.get(name) {
            Some(m) => Ok(Weights::group(ctx, m)?),
            None => self.base.matrix(ctx, name),
        }
    }

    fn vector(&self, ctx: &Context, name: &str) -> Result<wring_runtime::Tensor, LlmError> {
        self.base.vector(ctx, name)
    }

    fn stacked(&self, ctx: &Context, names: &[&str]) -> Result<Option<Weights>, LlmError> {
        let found: Vec<&GroupMatrix> = names.iter().filter_map(|n| self.matrices.get(*n)).collect();
        if found.is_empty() {
            return self.base.stacked(ctx, names);
        }
        if found.len() < names.len() {
            return Ok(None);
        }
        match GroupMatrix::stack(&found) {
            Some(m) => Ok(Some(Weights::group(ctx, &m)?)),
            None => Ok(None),
        }
    }

    fn uploaded(&self) {
        self.base.uploaded();
    }

    fn values(&self, name: &str) -> Result<Option<Vec<f32>>, LlmError> {
        self.base.values(name)
    }
}

/// A model's next-token distributions on a text, kept to compare other models against (as llama.cpp's
/// `--kl-divergence-base` does): the log-probabilities at every position llama-perplexity scores.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks scored.
    pub chunks: usize,
    /// The beginning-of-sequence token each chunk starts with, if the model takes one.
    pub bos: Option<u32>,
    /// Tokens per forward step within a chunk (`n_ctx`: one pass; fewer: the streaming protocol, see
    /// [`Llama::perplexity_streaming`]); the model scored against the reference runs the same steps.
    pub step: usize,
    /// Per scored position, [vocab] log-probabilities.
    logprobs: Vec<Vec<f32>>,
}

impl Reference {
    /// The reference model's own perplexity on the positions it recorded (`tokens` as recorded).
    pub fn perplexity(&self, tokens: &[u32]) -> f64 {
        let per_chunk = self.n_ctx / 2 - 1;
        let mut nll = 0.0;
        for (k, lp) in self.logprobs.iter().enumerate() {
            let (chunk, j) = (k / per_chunk, self.n_ctx / 2 + k % per_chunk);
            nll -= f64::from(lp[tokens[chunk * self.n_ctx + j + 1] as usize]);
        }
        (nll / self.logprobs.len().max(1) as f64).exp()
    }
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().fold(f32::MIN, |m, &v| m.max(v));
    let z: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
    let lz = z.ln() as f32 + max;
    row.iter().map(|&v| v - lz).collect()
}

/// Records `llama`'s distributions on `tokens` in `chunks` chunks of `n_ctx`.
pub fn reference(
    llama: &mut Llama,
    ctx: &Context,
    tokens: &[u32],
    n_ctx: usize,
    chunks: usize,
    bos: Option<u32>,
) -> Result<Reference, LlmError> {
    reference_streaming(llama, ctx, tokens, n_ctx, chunks, bos, n_ctx)
}

/// [`reference()`] with each chunk run `step` tokens at a time (the streaming protocol a compressed KV
/// cache is measured with).
pub fn reference_streaming(
    llama: &mut Llama,
    ctx: &Context,
    tokens: &[u32],
    n_ctx: usize,
    chunks: usize,
    bos: Option<u32>,
    step: usize,
) -> Result<Reference, LlmError> {
    let mut logprobs = Vec::new();
    llama.for_each_scored_in_steps(ctx, tokens, n_ctx, chunks, bos, step, |_, row, _| {
        logprobs.push(log_softmax(row))
    })?;
    Ok(Reference {
        n_ctx,
        chunks,
        bos,
        step,
        logprobs,
    })
}

/// A model's quality against a reference, with llama.cpp's `--kl-divergence` measures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quality {
    /// Perplexity on the scored positions.
    pub ppl: f64,
    /// Mean KL(reference || model) per scored position, in nats.
    pub kld: f64,
    /// Fraction of positions where the two models' most likely tokens agree.
    pub top1: f64,
    /// Positions scored.
    pub scored: usize,
}

/// Scores `llama` on the positions `r` recorded.
pub fn quality(
    llama: &mut Llama,
    ctx: &Context,
    tokens: &[u32],
    r: &Reference,
) -> Result<Quality, LlmError> {
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |p| p.0)
    };
    let (mut nll, mut kld, mut same, mut k) = (0.0f64, 0.0f64, 0usize, 0usize);
    let visit = |_, row: &[f32], target: usize| {
        let q = log_softmax(row);
        let p = &r.logprobs[k];
        nll -= f64::from(q[target]);
        kld += p
            .iter()
            .zip(&q)
            .map(|(&lp, &lq)| f64::from(lp).exp() * f64::from(lp - lq))
            .sum::<f64>();
        same += usize::from(argmax(p) == argmax(&q));
        k += 1;
    };
    let (n_ctx, chunks, bos, step) = (r.n_ctx, r.chunks, r.bos, r.step);
    llama.for_each_scored_in_steps(ctx, tokens, n_ctx, chunks, bos, step, visit)?;
    Ok(Quality {
        ppl: (nll / k as f64).exp(),
        kld: kld / k as f64,
        top1: same as f64 / k as f64,
        scored: k,
    })
}

/// `llama` scored against `base` as [`quality`] scores it against a [`Reference`], one chunk at a time:
/// each chunk's reference distributions are recorded from `base` and compared at once, so memory holds one
/// chunk's (about 50 MB at context 512 for a 49,152-token vocabulary) however long the text. Returns the
/// quality and the base's own perplexity on the same positions.
pub fn quality_against(
    base: &mut Llama,
    llama: &mut Llama,
    ctx: &Context,
    tokens: &[u32],
    n_ctx: usize,
    chunks: usize,
    bos: Option<u32>,
) -> Result<(Quality, f64), LlmError> {
    if chunks == 0 || tokens.len() < chunks * n_ctx {
        return Err(LlmError::Request(format!(
            "{} tokens do not fill {chunks} chunks of {n_ctx}",
            tokens.len()
        )));
    }
    let (mut nll, mut base_nll, mut kld, mut same, mut k) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for c in 0..chunks {
        let part = &tokens[c * n_ctx..(c + 1) * n_ctx];
        let r = reference(base, ctx, part, n_ctx, 1, bos)?;
        let q = quality(llama, ctx, part, &r)?;
        let n = q.scored as f64;
        base_nll += r.perplexity(part).ln() * n;
        nll += q.ppl.ln() * n;
        kld += q.kld * n;
        same += q.top1 * n;
        k += q.scored;
    }
    let k_f = k as f64;
    Ok((
        Quality {
            ppl: (nll / k_f).exp(),
            kld: kld / k_f,
            top1: same / k_f,
            scored: k,
        },
        (base_nll / k_f).exp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The knapsack's choice always fits the budget and is the best choice under its rounded costs
    /// (found by trying them all); a budget below the cheapest options is refused.
    #[test]
    fn the_knapsack_fits_and_is_the_best_under_its_rounding() {
        let mut seed = 17u64;
        let mut rand = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..200 {
            // 5 items of 3 options: more bits, less error, as widths 2, 3 and 4 give.
            let items: Vec<Vec<(f64, f64)>> = (0..5)
                .map(|_| {
                    let size = 1.0 + 3.0 * rand();
                    let sens = 0.1 + rand();
                    (2..=4)
                        .map(|b| {
                            let e = sens * size * 4f64.powi(-b) * (0.8 + 0.4 * rand());
                            (size * f64::from(b), e)
                        })
                        .collect()
                })
                .collect();
            let min_cost: f64 = items.iter().map(|p| p[0].0).sum();
            let max_cost: f64 = items.iter().map(|p| p[2].0).sum();
            let budget = min_cost + rand() * (max_cost - min_cost);
            let got = choose_within(&items, budget).expect("the cheapest fit");
            let unit = budget / 100_000.0;
            let steps = |c: &[usize]| {
                c.iter()
                    .zip(&items)
                    .map(|(&o, p)| (p[o].0 / unit).ceil())
                    .sum::<f64>()
            };
            let err = |c: &[usize]| c.iter().zip(&items).map(|(&o, p)| p[o].1).sum::<f64>();
            let cost = |c: &[usize]| c.iter().zip(&items).map(|(&o, p)| p[o].0).sum::<f64>();
            assert!(cost(&got) <= budget);
            let mut best = f64::INFINITY;
            for code in 0..3usize.pow(5) {
                let c: Vec<usize> = (0..5).map(|i| code / 3usize.pow(i) % 3).collect();
                if steps(&c) <= 100_000.0 {
                    best = best.min(err(&c));
                }
            }
            assert!(
                err(&got) <= best * (1.0 + 1e-12),
                "{} against {best}",
                err(&got)
            );
        }
        assert!(choose_within(&[vec![(2.0, 1.0), (3.0, 0.5)]], 1.5).is_none());
        assert_eq!(
            choose_within(&[vec![(2.0, 1.0), (3.0, 0.5)]], 3.0),
            Some(vec![1])
        );
    }

    #[test]
    fn sites_are_named() {
        assert_eq!(site_of("blk.3.attn_k.weight"), Some((3, 0)));
        assert_eq!(site_of("blk.12.attn_output.weight"), Some((12, 1)));
        assert_eq!(site_of("blk.0.ffn_up.weight"), Some((0, 2)));
        assert_eq!(site_of("blk.29.ffn_down.weight"), Some((29, 3)));
        assert_eq!(site_of("token_embd.weight"), None);
        assert_eq!(site_of("blk.x.attn_q.weight"), None);
    }
}
