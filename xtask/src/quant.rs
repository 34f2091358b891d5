//! `cargo xtask bench quant`: bits per weight against quality for the linear layers of the default model,
//! compressed below 4 bits by round to nearest, GPTQ and SpQR, each measured against the uncompressed
//! model (SmolLM2's Q4_1 weights as stored) on the same text with llama.cpp's measures: perplexity, mean
//! KL divergence and top-1 agreement over the positions llama-perplexity scores.
//!
//! The calibration text (tests/fixtures/eighty_days_calib.txt, the quality bench's) is not the evaluation
//! text (tests/fixtures/perplexity_text.txt), so the Hessians do not flatter the scores. Runs before
//! 2026-12-07's user's guide calibrated on README.md + ARCHITECTURE.md, which that change rewrote: a fixed
//! fixture keeps the protocol from moving with the documentation.

use std::path::Path;
use std::time::Instant;

/// The calibration text of every quantizer the bench runs.
const CALIB_TEXT: &str = "tests/fixtures/eighty_days_calib.txt";

use wring_gguf::Gguf;
use wring_llm::compress::{
    Quality, Quantized, calibrate, quality, quantize_linears, quantize_to_target, reference,
};
use wring_llm::{GgufTokenizer, Llama};
use wring_quant::gptq::{Config, Method};
use wring_runtime::{Context, ContextOptions};

#[derive(Debug, serde::Serialize)]
pub struct Row {
    /// The quantizer, as files record it.
    pub config: String,
    /// Bits per weight of the linear layers, everything counted (codes, statistics, second-order
    /// parameters, permutations, outliers and their row offsets).
    pub bpw: f64,
    pub outliers: usize,
    /// Weights in the linear layers.
    pub weights: usize,
    pub quality: Quality,
    /// Perplexity relative to the uncompressed model's, in percent.
    pub delta_ppl_pct: f64,
    pub quantize_s: f64,
    /// Greedy decode speed on this adapter, one token per forward (see [`decode_speed`]).
    pub decode_tokens_per_s: f64,
    /// For a target in bits per weight: how many input sites took each width.
    pub mix: Option<String>,
    /// For a target in bits per weight: each input site's choice.
    pub choices: Vec<wring_llm::compress::SiteChoice>,
}

#[derive(Debug, serde::Serialize)]
pub struct QuantReport {
    pub adapter: String,
    pub model: String,
    pub eval_text: String,
    pub calib_text: String,
    pub n_ctx: usize,
    pub chunks: usize,
    pub calib_tokens: usize,
    /// The uncompressed model (Q4_1 linears, 5.0 bits per weight) against itself.
    pub base: Quality,
    /// Its decode speed, measured the same way in the same run.
    pub base_decode_tokens_per_s: f64,
    pub rows: Vec<Row>,
    pub summary: Vec<String>,
}

pub fn configs(quick: bool) -> Vec<Config> {
    let rtn = |bits, group| Config::plain(Method::Rtn, bits, group);
    let gptq = |bits, group| Config::plain(Method::Gptq, bits, group);
    let no_outliers = Config {
        outlier_threshold: None,
        ..Config::spqr(3)
    };
    // Incoherence processing (`--incoherence`, seed 1) beside the same quantizer without it.
    let inc = |c: Config| Config {
        incoherence: Some(1),
        ..c
    };
    if quick {
        return vec![
            rtn(4, 32),
            gptq(3, 64),
            inc(gptq(3, 64)),
            Config::spqr(3),
            inc(Config::spqr(3)),
            inc(gptq(2, 32)),
            Config::mixllm(0.1),
            Config::gqsa(0.3),
            // Trellis codes with 12-bit states: 16 times cheaper to encode than QTIP's 16 on this
            // bench's two cores.
            Config::trellis(2, 12, 1),
        ];
    }
    // The sanity row first, then the methods at about 3.5 to 4 bits (SpQR w3; affine groups of 64 cost
    // 0.5 bits of statistics; MixLLM's choice between 3 and 4 bits for half the weights), MixLLM's own
    // recipe (a tenth of the weights, whole rows ranked over the model, at 8 bits beside 4), then about
    // 2.5 to 3 bits (SpQR w2 with a threshold that keeps about as many outliers as w3's 0.2 does: the
    // threshold is absolute and 2-bit errors are about 5 times larger), then the other baselines.
    vec![
        rtn(4, 32),
        Config::spqr(3),
        gptq(3, 64),
        Config {
            bits: 3,
            high_bits: 4,
            ..Config::mixllm(0.5)
        },
        Config::mixllm(0.1),
        Config {
            outlier_threshold: Some(1.0),
            ..Config::spqr(2)
        },
        rtn(3, 64),
        no_outliers,
        gptq(4, 64),
        Config::spqr(4),
        Config::spqr(2),
        gptq(2, 32),
        rtn(2, 32),
        rtn(8, 64),
        // GQSA: 4-bit groups of 32 aligned with Q4_1's blocks, 10 to 50 % of each row's groups pruned
        // (about 4.6 to 2.6 bits).
        Config::gqsa(0.1),
        Config::gqsa(0.2),
        Config::gqsa(0.3),
        Config::gqsa(0.4),
        Config::gqsa(0.5),
        inc(rtn(3, 64)),
        inc(gptq(3, 64)),
        inc(no_outliers),
        inc(Config::spqr(3)),
        inc(gptq(2, 32)),
        inc(Config::spqr(2)),
        // QTIP-style trellis codes (incoherence processing always on) at 2, 3 and 4 bits, 12-bit states.
        Config::trellis(2, 12, 1),
        Config::trellis(3, 12, 1),
        Config::trellis(4, 12, 1),
    ]
}

/// Tokens per second decoding `n` tokens one forward at a time after a warm-up token (which compiles
/// the pipelines), as llama-bench's tg test does.
fn decode_speed(m: &mut Llama, ctx: &Context, n: usize) -> Result<f64, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    m.reset();
    m.forward(ctx, &[1], false).map_err(|x| e(&x))?;
    let start = Instant::now();
    for t in 0..n as u32 {
        m.forward(ctx, &[2 + t * 7], false).map_err(|x| e(&x))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn run(quick: bool, only: Option<&str>) -> Result<QuantReport, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let g = Gguf::open(&model).map_err(|x| e(&x))?;
    let tok = GgufTokenizer::from_gguf(&g).map_err(|x| e(&x))?;
    let read = |p: &str| std::fs::read_to_string(root.join(p)).map_err(|x| format!("{p}: {x}"));
    let eval_ids = tok
        .encode(&read("tests/fixtures/perplexity_text.txt")?)
        .map_err(|x| e(&x))?;
    let calib_ids = tok.encode(&read(CALIB_TEXT)?).map_err(|x| e(&x))?;
    let (n_ctx, chunks, calib_tokens) = if quick { (128, 2, 512) } else { (256, 2, 2048) };
    let ctx = Context::new(ContextOptions::default()).map_err(|x| e(&x))?;
    let bos = if tok.add_bos { tok.bos } else { None };
    let mut base = Llama::load(&ctx, &g, n_ctx, |_, _| {}).map_err(|x| e(&x))?;
    eprintln!(
        "== reference: the uncompressed model on {} chunks of {n_ctx}",
        chunks
    );
    let r = reference(&mut base, &ctx, &eval_ids, n_ctx, chunks, bos).map_err(|x| e(&x))?;
    let base_q = quality(&mut base, &ctx, &eval_ids, &r).map_err(|x| e(&x))?;
    let decode_n = 32;
    let base_decode = decode_speed(&mut base, &ctx, decode_n)?;
    eprintln!("== calibrating on {calib_tokens} tokens of {CALIB_TEXT}");
    // Calibration windows fit the loaded context (128 in the quick run).
    let window = n_ctx.min(256);
    let n = calib_tokens.min(calib_ids.len() / window * window);
    let calib =
        calibrate(&mut base, &ctx, &calib_ids[..n], window, |_, _| {}).map_err(|x| e(&x))?;
    // The loaded model already checked its configuration; every configuration below quantizes against it.
    let model_cfg = base.cfg.clone();
    drop(base);
    let mut rows = Vec::new();
    // The quantizers to run: each configuration alone, then widths chosen per input site for a target in
    // bits per weight (`wring quantize --target-bpw`) among SpQR's 2, 3 and 4 bits with incoherence
    // processing, and among trellis codes' 2, 3 and 4 bits.
    // Without outliers: at 2 bits SpQR's threshold keeps a tenth of the weights as outliers, which costs
    // more bits than 3-bit codes.
    let spqr_inc = Config {
        incoherence: Some(1),
        outlier_threshold: None,
        ..Config::spqr(3)
    };
    let targets: &[f64] = if quick { &[3.0] } else { &[2.75, 3.25] };
    // Trellis codes mixed per input site between 2, 3 and 4 bits for 2.5 bits per weight (the issue's
    // lowest quality goal), full runs only.
    let trellis_targets: &[f64] = if quick { &[] } else { &[2.5] };
    let jobs = configs(quick)
        .into_iter()
        .map(|c| (c, None))
        .chain(targets.iter().map(|&t| (spqr_inc, Some(t))))
        .chain(
            trellis_targets
                .iter()
                .map(|&t| (Config::trellis(3, 12, 1), Some(t))),
        );
    for (cfg, target) in jobs {
        let label = match target {
            None => cfg.describe(),
            Some(t) => format!("{} bits=2..4 target_bpw={t}", cfg.describe()),
        };
        if only.is_some_and(|o| !label.contains(o)) {
            continue;
        }
        eprintln!("== {label}");
        let start = Instant::now();
        let quantized = match target {
            None => quantize_linears(&g, &model_cfg, Some(&calib), &cfg, |_, _, _| {})
                .map(|(m, s)| (m, s, Vec::new())),
            Some(t) => {
                let candidates: Vec<Config> = (2..=4).map(|bits| Config { bits, ..cfg }).collect();
                quantize_to_target(&g, &model_cfg, Some(&calib), &candidates, t, |_, _, _| {})
            }
        };
        // A target the candidates cannot meet is reported and the run goes on.
        let (matrices, summary, choices) = match (quantized, target) {
            (Ok(q), _) => q,
            (Err(x), Some(_)) => {
                eprintln!("   {x}");
                continue;
            }
            (Err(x), None) => return Err(e(&x)),
        };
        let quantize_s = start.elapsed().as_secs_f64();
        let src = Quantized {
            base: &g,
            matrices: &matrices,
        };
        let mut q = Llama::load_from(&ctx, &src, n_ctx, |_, _| {}).map_err(|x| e(&x))?;
        let quality = quality(&mut q, &ctx, &eval_ids, &r).map_err(|x| e(&x))?;
        let decode_tokens_per_s = decode_speed(&mut q, &ctx, decode_n)?;
        // How many input sites took each width.
        let mix = (2..=4)
            .map(|b| {
                let n = choices
                    .iter()
                    .filter(|c| c.config.contains(&format!(" bits={b} ")))
                    .count();
                format!("{n} sites at {b} bits")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let row = Row {
            config: label,
            bpw: summary.bits_per_weight(),
            outliers: summary.outliers,
            weights: summary.weights,
            delta_ppl_pct: (quality.ppl / base_q.ppl - 1.0) * 100.0,
            quality,
            quantize_s,
            decode_tokens_per_s,
            mix: if choices.is_empty() { None } else { Some(mix) },
            choices,
        };
        eprintln!(
            "   {:.3} bpw, PPL {:.3} ({:+.1}%), KLD {:.4}, top-1 {:.1}%, {} outliers, quantized in {:.0} s, decode {:.1} tokens/s{}",
            row.bpw,
            row.quality.ppl,
            row.delta_ppl_pct,
            row.quality.kld,
            100.0 * row.quality.top1,
            row.outliers,
            quantize_s,
            decode_tokens_per_s,
            row.mix
                .as_ref()
                .map_or(String::new(), |m| format!(" ({m})"))
        );
        rows.push(row);
    }
    let summary = rows
        .iter()
        .map(|r| {
            format!(
                "| {}{} | {:.3} | {:.2} % | {:.2} | {:+.1} % | {:.4} | {:.1} % | {:.1} ({:.2}x) |",
                r.config,
                r.mix.as_ref().map_or(String::new(), |m| format!(" ({m})")),
                r.bpw,
                100.0 * r.outliers as f64 / r.weights as f64,
                r.quality.ppl,
                r.delta_ppl_pct,
                r.quality.kld,
                100.0 * r.quality.top1,
                r.decode_tokens_per_s,
                r.decode_tokens_per_s / base_decode
            )
        })
        .collect();
    Ok(QuantReport {
        adapter: ctx.label(),
        model: model.display().to_string(),
        eval_text: "tests/fixtures/perplexity_text.txt".into(),
        calib_text: CALIB_TEXT.into(),
        n_ctx,
        chunks,
        calib_tokens: calib.tokens,
        base: base_q,
        base_decode_tokens_per_s: base_decode,
        rows,
        summary,
    })
}
