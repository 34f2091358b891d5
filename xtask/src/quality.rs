//! `cargo xtask bench quality`: issue 13's evaluation protocol at full length. Every quantizer's weights
//! are dequantized into an f32 GGUF and scored by llama.cpp's `llama-perplexity` against the uncompressed
//! model (SmolLM2's Q4_1 weights, dequantized to f32 the same way) at context 512 on at least 20,000 scored
//! tokens: perplexity, mean KL divergence and top-1 agreement, as llama.cpp reports them. Where
//! `llama-quantize` is on PATH, llama.cpp's own formats re-quantized from the same f32 base are scored the
//! same way, so every point on the plot comes from one tool on one text in one run.
//!
//! Why llama.cpp scores wring's weights: wring's forward on a software adapter runs about 7 tokens/s, and
//! 40,960 tokens per quantizer would take an hour each; the CPU build does the same sums in minutes. The
//! export is exact (dequantized weights in f32, activations in f32 on both sides), and wring's own engine
//! gives the same numbers on shorter runs (`cargo xtask bench quant`, and the perplexity test's 0.2%).
//!
//! Texts: Jules Verne's *Around the World in Eighty Days* (public domain, the Gutenberg text as the
//! `esaxx-rs` crate ships it, licence header removed): chapters I-XXIV are the evaluation text
//! (tests/fixtures/eighty_days_eval.txt), chapters XXX-XXXVII the calibration text
//! (tests/fixtures/eighty_days_calib.txt), so no scored token was seen by the calibration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use wring_gguf::{Gguf, TensorOut, Value, write_gguf};
use wring_llm::compress::{calibrate, quantize_linears, site_of};
use wring_llm::{GgufTokenizer, Llama};
use wring_runtime::{Context, ContextOptions};

/// One scored model.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// `wring` or `llama.cpp`.
    pub tool: String,
    /// The quantizer or the llama.cpp type.
    pub config: String,
    /// Bits per weight of the linear layers (the seven matrices of every block), everything counted.
    pub bpw_linear: f64,
    /// Bits per weight of the whole model: for wring, the compressed linears plus the base file's other
    /// tensors as stored; for llama.cpp, its file's tensors.
    pub bpw_file: f64,
    pub ppl: f64,
    pub delta_ppl_pct: f64,
    pub kld: f64,
    /// Same most likely token as the base, in percent.
    pub top1_pct: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QualityReport {
    pub model: String,
    pub eval_text: String,
    pub calib_text: String,
    pub n_ctx: usize,
    pub chunks: usize,
    pub scored_tokens: usize,
    pub calib_tokens: usize,
    pub base_ppl: f64,
    pub llama_perplexity: String,
    pub points: Vec<Point>,
}

/// The llama.cpp types re-quantized from the f32 base, when llama-quantize is on PATH.
const LLAMA_TYPES: [&str; 6] = ["Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"];

/// llama.cpp at its best: the types re-quantized with an importance matrix from `llama-imatrix` on the
/// calibration text, when both tools are on PATH. On SmolLM2 the 576-wide tensors fall back to other
/// types (llama-quantize's `tensor_type_fallback`); each point names what its linears became.
const IMATRIX_TYPES: [&str; 12] = [
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS",
    "IQ3_S", "IQ3_M", "IQ4_XS",
];

/// What a GGUF's linear layers are stored as: each type with its count of tensors, most first
/// (`Q4_0 x180, Q3_K x30`), so a fallback shows.
fn linear_types(g: &Gguf) -> String {
    let mut n: Vec<(&str, usize)> = Vec::new();
    for t in g.tensors.iter().filter(|t| site_of(&t.name).is_some()) {
        let ty = t.type_name();
        match n.iter_mut().find(|(k, _)| *k == ty) {
            Some((_, c)) => *c += 1,
            None => n.push((ty, 1)),
        }
    }
    n.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    n.iter()
        .map(|(k, c)| format!("{k} x{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The points of `tool` on its Pareto front for `metric` (lower is better): none of its other points has
/// fewer bits and a lower metric. In order of bits.
pub fn pareto_front<'p>(
    points: &[&'p Point],
    tool: &str,
    metric: fn(&Point) -> f64,
) -> Vec<&'p Point> {
    let mut own: Vec<&Point> = points.iter().copied().filter(|p| p.tool == tool).collect();
    own.sort_by(|a, b| {
        a.bpw_linear
            .total_cmp(&b.bpw_linear)
            .then(metric(a).total_cmp(&metric(b)))
    });
    let mut front = Vec::new();
    let mut best = f64::INFINITY;
    for p in own {
        if metric(p) < best {
            best = metric(p);
            front.push(p);
        }
    }
    front
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

/// Writes `g` with every tensor in f32, the named matrices replaced by `replaced` ([rows][cols]).
fn export_f32(g: &Gguf, replaced: &HashMap<String, Vec<f32>>, path: &Path) -> Result<(), String> {
    let mut data = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        let v = match replaced.get(&t.name) {
            Some(v) => v.clone(),
            None => wring_llm::model::tensor_f32(g, t).map_err(|e| e.to_string())?,
        };
        data.push(bytemuck::cast_slice::<f32, u8>(&v).to_vec());
    }
    let tensors: Vec<TensorOut> = g
        .tensors
        .iter()
        .zip(&data)
        .map(|(t, d)| TensorOut {
            name: &t.name,
            dims: &t.dims,
            ggml_type: 0,
            data: d,
        })
        .collect();
    // The file type says all-f32 (llama.cpp's LLAMA_FTYPE_ALL_F32), so no tool takes it for Q4_1.
    let metadata: Vec<(String, Value)> = g
        .metadata
        .iter()
        .map(|(k, v)| match k.as_str() {
            "general.file_type" => (k.clone(), Value::U32(0)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    write_gguf(&mut f, &metadata, &tensors)?;
    std::io::Write::flush(&mut f).map_err(|e| e.to_string())
}

/// Bits per weight of a GGUF's linear layers and of all its tensors, as stored.
fn file_bits(g: &Gguf) -> (f64, f64) {
    let (mut lb, mut ln, mut ab, mut an) = (0u64, 0u64, 0u64, 0u64);
    for t in &g.tensors {
        if site_of(&t.name).is_some() {
            lb += t.bytes * 8;
            ln += t.len();
        }
        ab += t.bytes * 8;
        an += t.len();
    }
    (lb as f64 / ln as f64, ab as f64 / an as f64)
}

/// What llama-perplexity printed, in numbers.
struct Scores {
    ppl: f64,
    kld: f64,
    top1_pct: f64,
}

/// The number after `label` on the last line that has it followed by only a colon or an equals sign
/// before the number (`Mean PPL(Q)` must not match `Mean PPL(Q)/PPL(base)`).
fn number_after(out: &str, label: &str) -> Option<f64> {
    out.lines().rev().find_map(|line| {
        // llama.cpp's log lines may start with a timestamp and a level.
        let at = line.find(label)?;
        let rest = line[at + label.len()..].trim_start();
        let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        rest.split_whitespace()
            .next()?
            .trim_end_matches('%')
            .parse()
            .ok()
    })
}

fn perplexity(
    tool: &Path,
    model: &Path,
    text: &Path,
    n_ctx: usize,
    chunks: usize,
    kld: &Path,
    save_base: bool,
) -> Result<Scores, String> {
    let mut cmd = Command::new(tool);
    // llama.cpp's CPU back end, as the table says, also from a build with its Vulkan back end.
    cmd.env("GGML_VK_VISIBLE_DEVICES", "");
    cmd.arg("-m")
        .arg(model)
        .arg("-f")
        .arg(text)
        .args(["-c", &n_ctx.to_string(), "--chunks", &chunks.to_string()])
        .args(["-b", "2048", "-t", &num_threads().to_string()])
        .arg("--kl-divergence-base")
        .arg(kld);
    if !save_base {
        cmd.arg("--kl-divergence");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "llama-perplexity failed on {}: {tail}",
            model.display()
        ));
    }
    let missing =
        |what: &str| format!("llama-perplexity printed no {what} for {}", model.display());
    if save_base {
        return Ok(Scores {
            ppl: number_after(&text, "Final estimate: PPL").ok_or_else(|| missing("PPL"))?,
            kld: 0.0,
            top1_pct: 100.0,
        });
    }
    Ok(Scores {
        ppl: number_after(&text, "Mean PPL(Q)").ok_or_else(|| missing("PPL"))?,
        kld: number_after(&text, "Mean    KLD").ok_or_else(|| missing("KLD"))?,
        top1_pct: number_after(&text, "Same top p").ok_or_else(|| missing("top p"))?,
    })
}

/// `llama-perplexity, version: 0.5.0-dev (build 1, commit 0c1e570)`, from the tool itself.
/// `llama-quantize [--imatrix FILE] BASE OUT TYPE THREADS`, its output for the caller to judge.
fn llama_quantize(
    tool: &Path,
    imatrix: Option<&Path>,
    base: &Path,
    out: &Path,
    ty: &str,
) -> Result<std::process::Output, String> {
    let mut cmd = Command::new(tool);
    if let Some(m) = imatrix {
        cmd.arg("--imatrix").arg(m);
    }
    cmd.arg(base)
        .arg(out)
        .arg(ty)
        .arg(num_threads().to_string())
        .output()
        .map_err(|x| x.to_string())
}

fn tool_version(tool: &Path) -> String {
    let out = Command::new(tool).arg("--version").output();
    let text = out.map_or(String::new(), |o| {
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    });
    let version = text
        .lines()
        .find(|l| l.starts_with("version"))
        .unwrap_or("version unknown");
    format!("llama-perplexity, {version}")
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs the protocol; `keep` is given the report after every point, so a long run that is stopped keeps
/// what it measured.
pub fn run(
    quick: bool,
    only: Option<&str>,
    keep: &mut dyn FnMut(&QualityReport),
) -> Result<QualityReport, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let tool = on_path("llama-perplexity").ok_or(
        "llama-perplexity is not on PATH: build llama.cpp's tools (ARCHITECTURE.md, \"References\") and add their directory to PATH",
    )?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = root.join("target/quality");
    std::fs::create_dir_all(&work).map_err(|x| e(&x))?;
    let model = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let g = Gguf::open(&model).map_err(|x| e(&x))?;
    let tok = GgufTokenizer::from_gguf(&g).map_err(|x| e(&x))?;
    let eval_text = root.join("tests/fixtures/eighty_days_eval.txt");
    let calib_text = "tests/fixtures/eighty_days_calib.txt";
    let calib_ids = tok
        .encode(&std::fs::read_to_string(root.join(calib_text)).map_err(|x| e(&x))?)
        .map_err(|x| e(&x))?;
    // llama-perplexity scores the second half of every chunk: 80 chunks of 512 score 20,480 tokens.
    let (n_ctx, chunks, calib_tokens) = if quick {
        (512, 4, 512)
    } else {
        (512, 80, 2048)
    };

    // The base: the model's own weights, dequantized to f32; its logits are the reference for every KLD.
    let base_path = work.join("base-f32.gguf");
    let kld_path = work.join("base.kld");
    // The base's logits take minutes; a run with the same protocol on the same model reuses them.
    let stamp_path = work.join("base.stamp");
    let stamp = format!(
        "{} {n_ctx} {chunks}",
        std::fs::metadata(&model).map_err(|x| e(&x))?.len()
    );
    let start = Instant::now();
    let saved = std::fs::read_to_string(&stamp_path).ok().and_then(|s| {
        let (head, ppl) = s.rsplit_once(' ')?;
        (head == stamp && base_path.exists() && kld_path.exists())
            .then(|| ppl.parse::<f64>().ok())?
    });
    let base = match saved {
        Some(ppl) => {
            eprintln!("== base: reusing the logits of an earlier run (PPL {ppl:.4})");
            Scores {
                ppl,
                kld: 0.0,
                top1_pct: 100.0,
            }
        }
        None => {
            export_f32(&g, &HashMap::new(), &base_path)?;
            eprintln!(
                "== base: llama-perplexity on {chunks} chunks of {n_ctx} (saving its logits)"
            );
            let s = perplexity(
                &tool, &base_path, &eval_text, n_ctx, chunks, &kld_path, true,
            )?;
            std::fs::write(&stamp_path, format!("{stamp} {}", s.ppl)).map_err(|x| e(&x))?;
            eprintln!(
                "   PPL {:.4} in {:.0} s",
                s.ppl,
                start.elapsed().as_secs_f64()
            );
            s
        }
    };
    let (base_lin, base_file) = file_bits(&g);
    let base_point = Point {
        tool: "base".into(),
        config: "SmolLM2 Q4_1 as stored (f32 activations)".into(),
        bpw_linear: base_lin,
        bpw_file: base_file,
        ppl: base.ppl,
        delta_ppl_pct: 0.0,
        kld: 0.0,
        top1_pct: 100.0,
        seconds: start.elapsed().as_secs_f64(),
    };
    let score = |tool_name: &str, config: String, path: &Path, lin: f64, file: f64, t0: Instant| {
        let s = perplexity(&tool, path, &eval_text, n_ctx, chunks, &kld_path, false)?;
        let p = Point {
            tool: tool_name.into(),
            config,
            bpw_linear: lin,
            bpw_file: file,
            ppl: s.ppl,
            delta_ppl_pct: (s.ppl / base.ppl - 1.0) * 100.0,
            kld: s.kld,
            top1_pct: s.top1_pct,
            seconds: t0.elapsed().as_secs_f64(),
        };
        eprintln!(
            "   {:.3} bpw (file {:.3}), PPL {:.3} ({:+.1}%), KLD {:.4}, top-1 {:.1}%",
            p.bpw_linear, p.bpw_file, p.ppl, p.delta_ppl_pct, p.kld, p.top1_pct
        );
        Ok::<Point, String>(p)
    };

    // wring's quantizers, calibrated on the calibration text by wring's own forward (not at all when
    // `only` selects none of them, as when llama.cpp's types run beside another run).
    let configs: Vec<_> = crate::quant::configs(quick)
        .into_iter()
        .filter(|c| only.is_none_or(|o| c.describe().contains(o)))
        .collect();
    let n = calib_tokens.min(calib_ids.len() / 256 * 256);
    let calibrated = if configs.is_empty() {
        None
    } else {
        let ctx = Context::new(ContextOptions::default()).map_err(|x| e(&x))?;
        let mut llama = Llama::load(&ctx, &g, 256, |_, _| {}).map_err(|x| e(&x))?;
        eprintln!("== calibrating on {n} tokens of {calib_text}");
        let calib =
            calibrate(&mut llama, &ctx, &calib_ids[..n], 256, |_, _| {}).map_err(|x| e(&x))?;
        Some((calib, llama.cfg.clone()))
    };
    let mut report = QualityReport {
        model: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        eval_text: "tests/fixtures/eighty_days_eval.txt".into(),
        calib_text: calib_text.into(),
        n_ctx,
        chunks,
        scored_tokens: chunks * (n_ctx - n_ctx / 2),
        calib_tokens: n,
        base_ppl: base.ppl,
        llama_perplexity: tool_version(&tool),
        points: vec![base_point],
    };
    // Bits of everything the compressed linears do not replace, as the base file stores them.
    let (rest_bits, all_weights) = g.tensors.iter().fold((0u64, 0u64), |(b, n), t| {
        if site_of(&t.name).is_some() {
            (b, n + t.len())
        } else {
            (b + t.bytes * 8, n + t.len())
        }
    });
    for (cfg, (calib, model_cfg)) in configs.iter().zip(calibrated.iter().cycle()) {
        let name = cfg.describe();
        eprintln!("== wring {name}");
        let t0 = Instant::now();
        let (matrices, summary) =
            quantize_linears(&g, model_cfg, Some(calib), cfg, |_, _, _| {}).map_err(|x| e(&x))?;
        let replaced: HashMap<String, Vec<f32>> = matrices
            .iter()
            .map(|(k, m)| (k.clone(), m.dequantize()))
            .collect();
        let path = work.join("wring.gguf");
        export_f32(&g, &replaced, &path)?;
        let file = (summary.bits + rest_bits as f64) / all_weights as f64;
        report.points.push(score(
            "wring",
            name,
            &path,
            summary.bits_per_weight(),
            file,
            t0,
        )?);
        keep(&report);
        let _ = std::fs::remove_file(&path);
    }

    // llama.cpp's formats from the same f32 base, where its quantizer is available.
    match on_path("llama-quantize") {
        None => eprintln!("== llama-quantize is not on PATH: no llama.cpp points"),
        Some(q) => {
            for ty in LLAMA_TYPES {
                // `--only imatrix` runs the importance-matrix points alone.
                if only.is_some_and(|o| o == "imatrix" || !ty.contains(o)) {
                    continue;
                }
                eprintln!("== llama.cpp {ty}");
                let t0 = Instant::now();
                let path = work.join(format!("llama-{ty}.gguf"));
                let out = llama_quantize(&q, None, &base_path, &path, ty)?;
                if !out.status.success() {
                    return Err(format!(
                        "llama-quantize {ty} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let (lin, file) = file_bits(&Gguf::open(&path).map_err(|x| e(&x))?);
                report
                    .points
                    .push(score("llama.cpp", ty.to_string(), &path, lin, file, t0)?);
                keep(&report);
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    // llama.cpp with an importance matrix from the calibration text (the same tokens wring calibrates on).
    match (on_path("llama-quantize"), on_path("llama-imatrix")) {
        (Some(q), Some(im))
            if IMATRIX_TYPES
                .iter()
                .any(|t| only.is_none_or(|o| o == "imatrix" || t.contains(o))) =>
        {
            let imatrix = work.join("imatrix.dat");
            let calib_path = work.join("calib.txt");
            // The calibration tokens wring sees, as text, in as many chunks of the context as they fill.
            std::fs::copy(root.join(calib_text), &calib_path).map_err(|x| e(&x))?;
            let calib_chunks = (n / n_ctx).max(1);
            eprintln!("== llama-imatrix on {calib_chunks} chunks of {n_ctx} of {calib_text}");
            let out = Command::new(&im)
                .env("GGML_VK_VISIBLE_DEVICES", "")
                .arg("-m")
                .arg(&base_path)
                .arg("-f")
                .arg(&calib_path)
                .arg("-o")
                .arg(&imatrix)
                .args([
                    "-c",
                    &n_ctx.to_string(),
                    "--chunks",
                    &calib_chunks.to_string(),
                ])
                .args(["-t", &num_threads().to_string()])
                .output()
                .map_err(|x| e(&x))?;
            if !out.status.success() {
                return Err(format!(
                    "llama-imatrix failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            for ty in IMATRIX_TYPES {
                if only.is_some_and(|o| o != "imatrix" && !ty.contains(o)) {
                    continue;
                }
                eprintln!("== llama.cpp {ty} with the importance matrix");
                let t0 = Instant::now();
                let path = work.join(format!("llama-imatrix-{ty}.gguf"));
                let out = llama_quantize(&q, Some(&imatrix), &base_path, &path, ty)?;
                if !out.status.success() {
                    // A type this build cannot make on these shapes is reported, not fatal.
                    eprintln!(
                        "   llama-quantize --imatrix {ty} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    );
                    continue;
                }
                let made = Gguf::open(&path).map_err(|x| e(&x))?;
                let (lin, file) = file_bits(&made);
                let config = format!("{ty} ({})", linear_types(&made));
                drop(made);
                report
                    .points
                    .push(score("llama.cpp+imatrix", config, &path, lin, file, t0)?);
                keep(&report);
                let _ = std::fs::remove_file(&path);
            }
        }
        _ => eprintln!(
            "== llama-quantize or llama-imatrix is not on PATH: no importance-matrix points"
        ),
    }
    // Once more at the end, so that a run that measures nothing new still rewrites the table and plot.
    keep(&report);
    Ok(report)
}

/// Keeps the points of an earlier run in `path` that this run did not measure (`--only` runs one method
/// at a time), when that run followed the same protocol: same text, context, chunks and calibration, and
/// the same base perplexity. Points are then ordered by tool and bits.
pub fn merge_previous(r: &mut QualityReport, path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let old = &json["report"];
    let same = old["n_ctx"] == r.n_ctx
        && old["chunks"] == r.chunks
        && old["calib_tokens"] == r.calib_tokens
        && old["eval_text"] == r.eval_text.as_str()
        && old["base_ppl"].as_f64() == Some(r.base_ppl);
    if !same {
        eprintln!("{} followed another protocol: not merged", path.display());
        return;
    }
    let Ok(points) = serde_json::from_value::<Vec<Point>>(old["points"].clone()) else {
        return;
    };
    for p in points {
        if !r
            .points
            .iter()
            .any(|q| q.tool == p.tool && q.config == p.config)
        {
            r.points.push(p);
        }
    }
    let rank = |t: &str| match t {
        "base" => 0,
        "wring" => 1,
        _ => 2,
    };
    r.points.sort_by(|a, b| {
        rank(&a.tool)
            .cmp(&rank(&b.tool))
            .then(b.bpw_linear.total_cmp(&a.bpw_linear))
    });
}

/// The report as a Markdown table.
pub fn table(r: &QualityReport) -> String {
    let mut s = format!(
        "# Bits per weight against quality, SmolLM2-135M\n\n\
         {} (llama.cpp's CPU back end) at context {} on {} chunks ({} scored tokens) of {}, every model's weights in \
         f32, KLD and top-1 against the base's logits. wring's quantizers calibrated on {} tokens of {}.\n\n\
         | tool | quantizer / type | bpw (linears) | bpw (file) | PPL | ΔPPL | mean KLD | same top-1 |\n\
         |---|---|---|---|---|---|---|---|\n",
        r.llama_perplexity,
        r.n_ctx,
        r.chunks,
        r.scored_tokens,
        r.eval_text,
        r.calib_tokens,
        r.calib_text
    );
    for p in &r.points {
        s += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:+.1} % | {:.4} | {:.1} % |\n",
            p.tool, p.config, p.bpw_linear, p.bpw_file, p.ppl, p.delta_ppl_pct, p.kld, p.top1_pct
        );
    }
    // Each llama.cpp point against wring's best at no more bits: where wring leads and where not.
    let pts: Vec<&Point> = r.points.iter().filter(|p| p.tool != "base").collect();
    let wring = pareto_front(&pts, "wring", |p| p.kld);
    let mut rows = String::new();
    for tool in ["llama.cpp", "llama.cpp+imatrix"] {
        // The goal's range: below 2.5 bits neither tool has points, and from 5 bits on wring's 4-bit
        // groups of 32 rebuild the Q4_1 base exactly, which says nothing of either quantizer.
        for p in pareto_front(&pts, tool, |p| p.kld)
            .into_iter()
            .filter(|p| (2.5..=5.0).contains(&p.bpw_linear))
        {
            let best = wring
                .iter()
                .filter(|w| w.bpw_linear <= p.bpw_linear)
                .min_by(|a, b| a.kld.total_cmp(&b.kld));
            rows += &match best {
                Some(w) => format!(
                    "| {tool} {} | {:.3} | {:.4} | {} | {:.3} | {:.4} | {} |\n",
                    p.config,
                    p.bpw_linear,
                    p.kld,
                    w.config,
                    w.bpw_linear,
                    w.kld,
                    if w.kld < p.kld { "wring" } else { "llama.cpp" }
                ),
                None => format!(
                    "| {tool} {} | {:.3} | {:.4} | (none at these bits) | | | llama.cpp |\n",
                    p.config, p.bpw_linear, p.kld
                ),
            };
        }
    }
    if !rows.is_empty() {
        s += "\n## Each llama.cpp Pareto point from 2.5 to 5 bits against wring's best at no more bits\n\n\
              | llama.cpp point | bpw | KLD | wring's best at ≤ those bits | bpw | KLD | lower KLD |\n\
              |---|---|---|---|---|---|---|\n";
        s += &rows;
    }
    s
}

/// A plot label from a quantizer's description: the method, bits and group, and what tells variants of
/// one method apart (SpQR's τ, MixLLM's widths and share, GQSA's sparsity).
fn short_label(config: &str) -> String {
    let mut words = config.split_whitespace();
    let Some(method) = words.next() else {
        return String::new();
    };
    let keep = [
        "bits=",
        "group=",
        "high_bits=",
        "high_fraction=",
        "sparsity=",
    ];
    let mut out = vec![method.to_string()];
    for w in words {
        if keep.iter().any(|k| w.starts_with(k)) || (method == "spqr" && w.starts_with("tau=")) {
            out.push(
                w.replace("high_bits=", "hi=")
                    .replace("high_fraction=", "share=")
                    .replace("sparsity=", "s="),
            );
        }
    }
    out.join(" ")
}

/// Two panels side by side, bits per weight of the linear layers against perplexity relative to the base
/// and against mean KLD, both on log scales (so +2% and +200% are both readable): wring's quantizers as
/// circles, llama.cpp's types as triangles (red without an importance matrix, orange with one), each
/// tool's Pareto front as a line.
pub fn plot(path: &Path, r: &QualityReport) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let pts: Vec<&Point> = r.points.iter().filter(|p| p.tool != "base").collect();
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(l, h), p| {
        (l.min(p.bpw_linear), h.max(p.bpw_linear))
    });
    type Metric = fn(&Point) -> f64;
    let panels: [(&str, Metric); 2] = [
        ("perplexity / base", |p| 1.0 + p.delta_ppl_pct / 100.0),
        ("mean KL divergence (nats)", |p| p.kld.max(1e-4)),
    ];
    for ((desc, metric), area) in panels.iter().zip(root.split_evenly((1, 2))) {
        let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(l, h), p| {
            (l.min(metric(p)), h.max(metric(p)))
        });
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("SmolLM2-135M, {} tokens: {desc}", r.scored_tokens),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (x0.floor() - 0.1)..(x1.ceil() + 0.1),
                (lo * 0.9..hi * 1.1).log_scale(),
            )
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("bits per weight, linear layers")
            .y_desc(*desc)
            .draw()
            .map_err(|x| e(&x))?;
        for (tool, color) in [
            ("wring", BLUE),
            ("llama.cpp", RED),
            ("llama.cpp+imatrix", RGBColor(200, 120, 0)),
        ] {
            // Each tool's Pareto front as a line under its points.
            let front: Vec<(f64, f64)> = pareto_front(&pts, tool, *metric)
                .iter()
                .map(|p| (p.bpw_linear, metric(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(front, color.mix(0.5)))
                .map_err(|x| e(&x))?;
            let series: Vec<(f64, f64, &str)> = pts
                .iter()
                .filter(|p| p.tool == tool)
                .map(|p| (p.bpw_linear, metric(p), p.config.as_str()))
                .collect();
            chart
                .draw_series(series.iter().map(|&(x, y, _)| {
                    if tool == "wring" {
                        Circle::new((x, y), 4, color.filled()).into_dyn()
                    } else {
                        TriangleMarker::new((x, y), 6, color.filled()).into_dyn()
                    }
                }))
                .map_err(|x| e(&x))?
                .label(tool)
                .legend(move |(x, y)| {
                    if tool == "wring" {
                        Circle::new((x, y), 4, color.filled()).into_dyn()
                    } else {
                        TriangleMarker::new((x, y), 6, color.filled()).into_dyn()
                    }
                });
            chart
                .draw_series(series.iter().map(|&(x, y, name)| {
                    Text::new(short_label(name), (x, y), ("sans-serif", 10).into_font())
                }))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::{Point, number_after, pareto_front};

    /// A tool's front keeps each point no other of its points beats with fewer bits, in order of bits,
    /// and ignores the other tools.
    #[test]
    fn the_pareto_front_keeps_what_nothing_cheaper_beats() {
        let p = |tool: &str, bpw: f64, kld: f64| Point {
            tool: tool.into(),
            config: format!("{bpw}"),
            bpw_linear: bpw,
            bpw_file: bpw,
            ppl: 0.0,
            delta_ppl_pct: 0.0,
            kld,
            top1_pct: 0.0,
            seconds: 0.0,
        };
        let pts = [
            p("wring", 3.0, 0.5),
            p("wring", 4.0, 0.6),
            p("wring", 4.5, 0.2),
            p("wring", 3.5, 0.3),
            p("llama.cpp", 2.0, 0.1),
        ];
        let refs: Vec<&Point> = pts.iter().collect();
        let front: Vec<f64> = pareto_front(&refs, "wring", |p| p.kld)
            .iter()
            .map(|p| p.bpw_linear)
            .collect();
        assert_eq!(front, [3.0, 3.5, 4.5]);
    }

    #[test]
    fn llama_perplexitys_numbers_are_read_from_their_own_lines() {
        let out = "0.03.295.915 I Final estimate: PPL = 22.2479 +/- 0.46836\n\
                   Mean PPL(Q)                   :  22.247906 ±   0.468361\n\
                   Mean PPL(Q)/PPL(base)         :   1.000184 ±   0.000093\n\
                   Mean PPL(Q)-PPL(base)         :   0.004096 ±   0.002065\n\
                   Mean    KLD:  -0.000000 ±   0.000000\n\
                   Same top p: 99.980 ± 0.010 %\n";
        assert_eq!(number_after(out, "Final estimate: PPL"), Some(22.2479));
        assert_eq!(number_after(out, "Mean PPL(Q)"), Some(22.247906));
        assert_eq!(number_after(out, "Mean    KLD"), Some(-0.0));
        assert_eq!(number_after(out, "Same top p"), Some(99.98));
    }
}
