//! Workspace chores. `cargo xtask bench` runs the benchmark suite on the chosen adapter and keeps the run
//! under `bench-results/<date>-<adapter>/` with the exact command, versions, raw JSON and a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod codec;
mod gpu;
mod kv;
mod quality;
mod quant;
mod serve;
#[path = "../../benches/suite.rs"]
mod suite;
mod vq;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark every kernel: GB/s or GFLOP/s, and the fraction of the measured copy bandwidth.
    /// `cargo xtask bench llm` instead measures the LLM as llama-bench does (pp512, tg128);
    /// `cargo xtask bench codec` the wavelet codec's rate-distortion and the transform's speed;
    /// `cargo xtask bench quant` bits per weight against quality for the LLM's linears below 4 bits;
    /// `cargo xtask bench quality` the same at full length (20,480 tokens), scored by llama-perplexity,
    /// beside llama.cpp's own formats; `cargo xtask bench serve` a bounded load test of `wring serve` on
    /// loopback with the queue at capacity; `cargo xtask bench gpu` the harness, the GPU-plan tests, the
    /// quick kernel suite and `bench llm` in release, what a GPU machine runs.
    Bench {
        /// Only kernels whose name contains this (copy always runs: it is the reference).
        filter: Option<String>,
        /// Fewer sizes and repetitions.
        #[arg(long)]
        quick: bool,
        /// Print only; do not write bench-results/.
        #[arg(long)]
        no_save: bool,
        /// `bench quant` and `bench quality` only: the quantizers (and llama.cpp types) whose names
        /// contain this; `bench kv`: this mode alone (`paged`: every paged mode).
        #[arg(long)]
        only: Option<String>,
        /// Where to keep results (default bench-results/).
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// `bench codec` only: the rate-distortion comparison alone, on this directory's PNG photos instead
        /// of bench-data/ (photos the codec was not tuned on), saved as `<date>-codec-<directory name>`.
        #[arg(long)]
        photos: Option<PathBuf>,
    },
    /// Fuzz the file parsers with cargo-fuzz (nightly): each target in `fuzz/` for the given time,
    /// starting from and adding to its corpus in `fuzz/corpus/<target>/`; a crash stops with the input
    /// saved under `fuzz/artifacts/`, to be added to the corpus as a regression case once fixed.
    Fuzz {
        /// Only this target (gguf, npy, safetensors, model, wrg, chat_template, group_file, kv_factors,
        /// openai_request, plan, jsonl_batch).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// The fuzz targets, as named in fuzz/Cargo.toml.
const FUZZ_TARGETS: [&str; 11] = [
    "gguf",
    "npy",
    "safetensors",
    "model",
    "wrg",
    "chat_template",
    "group_file",
    "kv_factors",
    "openai_request",
    "plan",
    "jsonl_batch",
];

/// Runs `cargo +nightly fuzz run` for each target; the corpus directory both seeds and collects.
fn fuzz(target: Option<&str>, seconds: u64) -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // cargo-fuzz needs nightly's -Z flags: the nightly toolchain where rustup has one, otherwise the
    // installed toolchain told to accept them.
    let nightly = std::process::Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    for t in FUZZ_TARGETS
        .iter()
        .filter(|t| target.is_none_or(|w| w == **t))
    {
        println!("== fuzzing {t} for {seconds} s");
        let corpus = root.join("fuzz/corpus").join(t);
        let mut cmd = std::process::Command::new("cargo");
        cmd.current_dir(&root);
        if nightly {
            cmd.arg("+nightly");
        } else {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        let status = cmd
            .args(["fuzz", "run", t])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("fuzz target {t} failed ({s}); the input is under fuzz/artifacts/{t}/");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!(
                    "could not run cargo-fuzz ({e}); install it with `cargo install cargo-fuzz`"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Fuzz { target, seconds } => fuzz(target.as_deref(), seconds),
        Command::Bench {
            filter,
            quick,
            no_save,
            only,
            out,
            photos,
        } => {
            if filter.as_deref() == Some("quality") {
                let dir = out.join(format!("{}-quality", today()));
                // Every point is written as it comes, merged with an earlier run's other points.
                let save = |r: &quality::QualityReport| -> std::io::Result<()> {
                    let mut r = r.clone();
                    quality::merge_previous(&mut r, &dir.join("quality.json"));
                    save_json(&dir, "quality.json", &r)?;
                    std::fs::write(dir.join("summary.md"), quality::table(&r))?;
                    quality::plot(&dir.join("quality.svg"), &r).map_err(std::io::Error::other)
                };
                let mut keep = |r: &quality::QualityReport| {
                    if !no_save && let Err(e) = save(r) {
                        eprintln!("could not keep the results so far: {e}");
                    }
                };
                return finish(quality::run(quick, only.as_deref(), &mut keep), |r| {
                    print!("{}", quality::table(r));
                    Ok(())
                });
            }
            if filter.as_deref() == Some("kv") {
                let mut name = format!("{}-kv", today());
                if let Some(o) = &only {
                    name += &format!("-{}", slug(o));
                }
                if quick {
                    name += "-quick";
                }
                let dir = out.join(name);
                // Every row is written as it comes: the full run takes over an hour on a CPU adapter.
                let save = |r: &kv::KvReport| -> std::io::Result<()> {
                    save_json(&dir, "kv.json", r)?;
                    std::fs::write(dir.join("summary.md"), kv::table(r))?;
                    kv::plot(&dir.join("kv.svg"), r).map_err(std::io::Error::other)
                };
                let mut keep = |r: &kv::KvReport| {
                    if !no_save && let Err(e) = save(r) {
                        eprintln!("could not keep the results so far: {e}");
                    }
                };
                // An interrupted run's rows are kept (its file holds the report under "report").
                let previous = std::fs::read_to_string(dir.join("kv.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| serde_json::from_value(v["report"].clone()).ok());
                return finish(kv::run(quick, only.as_deref(), previous, &mut keep), |r| {
                    print!("{}", kv::table(r));
                    Ok(())
                });
            }
            if filter.as_deref() == Some("codec") {
                let dir = out.join(match &photos {
                    Some(p) => format!(
                        "{}-codec-{}",
                        today(),
                        p.file_name()
                            .map_or("photos".into(), |n| n.to_string_lossy())
                    ),
                    None => format!("{}-codec", today()),
                });
                if !no_save {
                    let _ = std::fs::create_dir_all(&dir);
                }
                return finish(
                    codec::run(
                        quick,
                        (!no_save).then_some(dir.as_path()),
                        photos.as_deref(),
                    ),
                    |r| if no_save { Ok(()) } else { save_codec(&dir, r) },
                );
            }
            if filter.as_deref() == Some("vq") {
                let dir = out.join(format!("{}-vq", today()));
                return finish(vq::run(quick), |r| {
                    if no_save {
                        Ok(())
                    } else {
                        save_json(&dir, "vq.json", r)
                    }
                });
            }
            if filter.as_deref() == Some("quant") {
                // Like the kernel suite, a filtered or quick run keeps its own directory.
                let mut name = format!("{}-quant", today());
                if let Some(o) = &only {
                    name += &format!("-{}", slug(o));
                }
                if quick {
                    name += "-quick";
                }
                let dir = out.join(name);
                return finish(quant::run(quick, only.as_deref()), |r| {
                    let table = format!(
                        "# Linear layers below 4 bits on {}\n\n{} chunks of {} tokens of {} against the uncompressed model \
                         (PPL {:.3} on the {} scored positions, decode {:.1} tokens/s); calibration: {} tokens of {}.\n\n\
                         | quantizer | bpw | outliers | PPL | ΔPPL | mean KLD | same top-1 | decode tokens/s (x base) |\n|---|---|---|---|---|---|---|---|\n{}\n",
                        r.adapter,
                        r.chunks,
                        r.n_ctx,
                        r.eval_text,
                        r.base.ppl,
                        r.base.scored,
                        r.base_decode_tokens_per_s,
                        r.calib_tokens,
                        r.calib_text,
                        r.summary.join("\n")
                    );
                    print!("{table}");
                    if no_save {
                        Ok(())
                    } else {
                        save_json(&dir, "quant.json", r)?;
                        std::fs::write(dir.join("summary.md"), table)
                    }
                });
            }
            if filter.as_deref() == Some("serve") {
                let mut name = format!("{}-serve", today());
                if quick {
                    name += "-quick";
                }
                let dir = out.join(name);
                return finish(serve::run(quick), |r| {
                    let t = serve::table(r);
                    print!("{t}");
                    if r.errors() > 0 {
                        return Err(std::io::Error::other(format!(
                            "{} requests failed",
                            r.errors()
                        )));
                    }
                    if no_save {
                        Ok(())
                    } else {
                        save_json(&dir, "serve.json", r)?;
                        std::fs::write(dir.join("summary.md"), t)
                    }
                });
            }
            if filter.as_deref() == Some("llm") {
                return finish(bench_llm(quick, true, None), |r| {
                    if no_save {
                        Ok(())
                    } else {
                        save_llm(&out, r).map(drop)
                    }
                });
            }
            if filter.as_deref() == Some("gpu") {
                return bench_gpu(quick, &out);
            }
            let opts = suite::Options { quick, filter };
            finish(suite::run(&opts).map_err(|e| e.to_string()), |r| {
                if no_save {
                    Ok(())
                } else {
                    save(&out, r, &opts).map(drop)
                }
            })
        }
    }
}

/// `cargo xtask bench gpu` (see `gpu.rs`): in release, so an unoptimized xtask first rebuilds itself
/// optimized and runs that.
fn bench_gpu(quick: bool, out: &Path) -> ExitCode {
    if cfg!(debug_assertions) {
        println!("== bench gpu: rebuilding xtask in release");
        let status = std::process::Command::new("cargo")
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "xtask",
                "--",
                "bench",
                "gpu",
            ])
            .args(quick.then_some("--quick"))
            .arg("--out")
            .arg(out)
            .status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: could not run cargo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The chosen adapter's name, without opening a device (`gpu::run` opens the one it reports on).
    let adapter = wring_runtime::adapter_reports()
        .map(|(reports, chosen, _)| reports[chosen].info.name.clone())
        .unwrap_or_default();
    let dir = out.join(format!("{}-{}-gpu", today(), slug(&adapter)));
    let mut llm_summary = String::new();
    let result = gpu::run(
        quick,
        &dir,
        || {
            // The kernel suite always in quick mode: the GPU run's budget is minutes.
            let opts = suite::Options {
                quick: true,
                filter: None,
            };
            let r = suite::run(&opts).map_err(|e| e.to_string())?;
            save(out, &r, &opts).map_err(|e| e.to_string())
        },
        || {
            // The long inputs (prefill to 2,048 tokens, decode deep in the cache) stay in `bench llm`:
            // on a CPU adapter they alone take longer than this whole command may.
            let r = bench_llm(quick, false, (!quick).then_some(3))?;
            let d = save_llm(out, &r).map_err(|e| e.to_string())?;
            llm_summary = std::fs::read_to_string(d.join("summary.md")).unwrap_or_default();
            Ok(d)
        },
    );
    finish(result, |r| {
        save_json(&dir, "gpu.json", r)?;
        let md = gpu::summary(r, &llm_summary);
        std::fs::write(dir.join("summary.md"), &md)?;
        println!("{md}\nresults written to {}", dir.display());
        Ok(())
    })
}

/// Reports a benchmark's outcome: its error, or the result of keeping its report.
fn finish<R>(result: Result<R, String>, keep: impl FnOnce(&R) -> std::io::Result<()>) -> ExitCode {
    match result.map(|r| keep(&r)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: could not write results: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Today's date as YYYY-MM-DD (UTC), from the days since the epoch (Howard Hinnant's civil_from_days).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("-")
}

/// Versions of the crates that decide GPU behaviour, read from Cargo.lock.
fn locked_versions() -> serde_json::Value {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut out = serde_json::Map::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name)
            && ["wgpu", "wgpu-core", "wgpu-hal", "naga"].contains(&n.as_str())
        {
            out.insert(n.clone(), v.trim_matches('"').into());
        }
    }
    out.into()
}

fn save(root: &Path, r: &suite::Report, opts: &suite::Options) -> std::io::Result<PathBuf> {
    // A filtered or quick run keeps its own directory, so it never replaces the day's full run.
    let mut name = format!("{}-{}", today(), slug(&r.adapter));
    if let Some(f) = &opts.filter {
        name += &format!("-{}", slug(f));
    }
    if opts.quick {
        name += "-quick";
    }
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let json = serde_json::json!({
        "command": command,
        "date": today(),
        "wring": env!("CARGO_PKG_VERSION"),
        "versions": locked_versions(),
        "rustc": rustc,
        "host": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH,
                  "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "report": r,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let mut md = format!(
        "# wring bench, {}\n\nCommand: `{command}`  \nAdapter: {} ({}, {}), driver {} {}  \nTimer: {}  \n\n\
         Copy bandwidth (copy kernel, read + write): **{:.2} GB/s**; DMA buffer copy (peer): {:.2} GB/s \
         (kernel/DMA = {:.2}).  \nBest matmul: **{:.1} GFLOP/s**.  \nDispatch overhead: {:.1} us per launch.\n\n\
         | kernel | variant | shape | median us | GB/s | GFLOP/s | of copy BW |\n|---|---|---|---:|---:|---:|---:|\n",
        today(),
        r.adapter,
        r.backend,
        r.device_type,
        r.driver,
        r.driver_info,
        r.timer,
        r.copy_gb_per_s,
        r.dma_copy_gb_per_s,
        r.copy_gb_per_s / r.dma_copy_gb_per_s,
        r.matmul_gflop_per_s,
        r.dispatch_overhead_us,
    );
    for row in &r.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {} | {:.0}% |\n",
            row.kernel,
            row.variant,
            row.shape,
            row.seconds * 1e6,
            row.gb_per_s,
            if row.flops > 0.0 {
                format!("{:.1}", row.gflop_per_s)
            } else {
                "-".into()
            },
            row.fraction_of_copy * 100.0
        ));
    }
    std::fs::write(dir.join("summary.md"), md)?;
    println!("results written to {}", dir.display());
    Ok(dir)
}

/// One llama-bench style measurement: tokens per second over repetitions, for one configuration.
#[derive(Debug, serde::Serialize)]
struct LlmRow {
    config: String,
    test: String,
    reps: Vec<f64>,
    mean_tokens_per_s: f64,
    stddev: f64,
    /// This row's mean over llama-bench's mean for the same test, in the same run.
    vs_llama_cpp: Option<f64>,
    /// The same against llama.cpp's Vulkan back end on wring's device, when it ran.
    vs_llama_cpp_vulkan: Option<f64>,
}

/// What one configuration costs beside its speed.
#[derive(Debug, serde::Serialize)]
struct LlmConfig {
    config: String,
    /// Kernel launches of one decode step (the per-token launch budget).
    launches_per_token: usize,
    /// The same with the producers' 8-bit unit fusion off (`Llama::set_unit_fusion`): quantize_q8
    /// launched before each product instead.
    launches_unfused: usize,
    /// The same with the norms unsplit (`Llama::set_norm_split`): each RMSNorm its own launch.
    launches_unsplit: usize,
    /// Seconds from a fresh context (no compiled pipelines) to the first token of a 5-token prompt,
    /// loading included.
    ttft_cold_s: f64,
    /// Seconds to the first token of another 5-token prompt in the same context (pipelines compiled).
    ttft_warm_s: f64,
    /// Seconds to load the model (upload included), within the cold figure.
    load_s: f64,
    /// `wring perplexity`'s result on tests/fixtures/perplexity_text.txt at ctx 512 (every chunk).
    ppl: f64,
    /// Its speed: tokens evaluated per second.
    ppl_tokens_per_s: f64,
    /// Its speed over llama-perplexity's on the same text, file and context, in the same command.
    ppl_vs_llama_cpp: Option<f64>,
    /// The same against llama-perplexity on llama.cpp's Vulkan back end, when it ran.
    ppl_vs_llama_cpp_vulkan: Option<f64>,
    /// Device memory in this configuration's tensors at its peak (weights, a 1,024-position cache,
    /// scratch, idle pooled buffers), from `Context::memory`.
    device_peak_mib: f64,
}

/// One prompt length's prefill (8-bit activations, in a context that times every launch).
#[derive(Debug, serde::Serialize)]
struct PrefillRow {
    tokens: usize,
    seconds: f64,
    tokens_per_s: f64,
    /// Attention's share of the step's GPU time (the rest: projections, norms, RoPE, the head).
    attention_share: f64,
    /// llama-bench's pp of the same length in the same command, when it ran.
    llama_cpp_tokens_per_s: Option<f64>,
}

/// Long inputs: prefill across prompt lengths, decode deep in the cache, and perplexity at ctx 2048 beside
/// llama-perplexity on the same text (8-bit activations; a 4,096-position cache).
#[derive(Debug, serde::Serialize)]
struct LongReport {
    prefill: Vec<PrefillRow>,
    /// Decode after a 2,048-token prompt: tokens per second over 64 tokens.
    tg_at_2048_tokens_per_s: f64,
    /// llama-bench's tg64 after a 2,048-token prompt (`-d 2048`), when it ran.
    llama_cpp_tg_at_2048: Option<f64>,
    /// `wring perplexity` on tests/fixtures/eighty_days_eval.txt (4,096 tokens) at ctx 2048.
    ppl_2048: f64,
    ppl_2048_tokens_per_s: f64,
    /// llama-perplexity on the same text and context: (PPL, tokens per second).
    llama_perplexity_2048: Option<(f64, f64)>,
    /// Peak host memory after the long runs (VmHWM of the whole command).
    peak_rss_mib: f64,
    /// The 4,096-position cache's bytes.
    kv_cache_mib: f64,
}

#[derive(Debug, serde::Serialize)]
struct LlmReport {
    model: String,
    adapter: String,
    rows: Vec<LlmRow>,
    configs: Vec<LlmConfig>,
    llama_bench: Option<String>,
    /// llama-bench's mean tokens/s per test, parsed from its table.
    llama_cpp: Vec<(String, f64)>,
    /// llama-perplexity on the same text: (PPL, tokens per second), when it ran.
    llama_perplexity: Option<(f64, f64)>,
    /// llama-bench on llama.cpp's Vulkan back end (every layer offloaded to wring's device), when the
    /// build has it.
    llama_bench_vulkan: Option<String>,
    /// Its mean tokens/s per test.
    llama_cpp_vulkan: Vec<(String, f64)>,
    /// llama-perplexity on the Vulkan back end: (PPL, tokens per second).
    llama_perplexity_vulkan: Option<(f64, f64)>,
    /// The Vulkan device llama.cpp reported using.
    vulkan_device: Option<String>,
    peak_rss_mib: f64,
    model_file_mib: f64,
    kv_cache_mib: f64,
    /// `wring generate`'s peak resident memory in its own process (128 tokens, the default 4,096-position
    /// f32 cache), when the binary was there to run.
    generate_peak_rss_mib: Option<f64>,
    /// That run's KV cache.
    generate_kv_cache_mib: f64,
    /// Long inputs (not in a quick run).
    long: Option<LongReport>,
    /// What bounds a decode step on this adapter.
    decode_bound: DecodeBound,
}

/// What bounds a decode step on this adapter (8-bit activations), from figures measured in the same
/// command: the weight bytes a step must read at the copy kernel's bandwidth, plus its launches at the
/// measured per-launch overhead, give the fastest decode this launch count allows if every product ran at
/// the copy rate; beside it, a profiled step's measured split.
#[derive(Debug, Clone, serde::Serialize)]
struct DecodeBound {
    /// Weight bytes one decode step reads, in MB (10^6): every tensor once (the products read every
    /// linear's weights, the tied head the whole embedding table; an untied table is only looked up).
    weight_mb: f64,
    /// The copy kernel's bandwidth (read + write), measured in this command.
    copy_gb_per_s: f64,
    /// One launch's overhead inside a step, measured in this command.
    dispatch_overhead_us: f64,
    /// Launches per decode step.
    launches: usize,
    /// `weight_mb` at `copy_gb_per_s`, in ms.
    weights_at_copy_ms: f64,
    /// `launches` x `dispatch_overhead_us`, in ms.
    launches_ms: f64,
    /// The two together: the floor of a step.
    floor_ms: f64,
    /// 1 / floor.
    ceiling_tokens_per_s: f64,
    /// The ceiling over llama.cpp's tg in this command (filled once llama-bench has run).
    ceiling_vs_llama_cpp: Option<f64>,
    /// Measured (GPU timestamps, 32 decode steps after a 16-token prompt): GPU time per step.
    step_gpu_ms: f64,
    /// Of which the quantized products (every `qmatvec` launch).
    products_gpu_ms: f64,
    /// `weight_mb` over `products_gpu_ms`.
    products_gb_per_s: f64,
    /// Launches per step in the profiled steps.
    profiled_launches: usize,
    /// CPU time per step to record and encode its launches (first-use pipeline creation left out).
    step_cpu_ms: f64,
    /// The profiled step per kernel variant, biggest GPU time first.
    kernels: Vec<KernelBudget>,
}

/// One kernel variant's share of a profiled decode step.
#[derive(Debug, Clone, serde::Serialize)]
struct KernelBudget {
    /// `kernel/variant`.
    kernel: String,
    /// Its launches per step.
    launches: f64,
    /// Its GPU time per step, ms.
    gpu_ms: f64,
    /// Its CPU time per step to record and encode, ms.
    cpu_ms: f64,
}

/// The model on a context with 8-bit activations and GPU timestamps, with `n_ctx` cache positions: what
/// the decode bound and the long-input runs profile.
fn profiled_q8_model(
    g: &wring_gguf::Gguf,
    n_ctx: usize,
) -> Result<(wring_runtime::Context, wring_llm::Llama), String> {
    let ctx = wring_runtime::Context::new(wring_runtime::ContextOptions {
        q8_activations: true,
        profile: true,
        ..Default::default()
    })
    .map_err(|x| x.to_string())?;
    let m = wring_llm::Llama::load(&ctx, g, n_ctx, |_, _| {}).map_err(|x| x.to_string())?;
    Ok((ctx, m))
}

/// Measures [`DecodeBound`] for the model in `g`: the copy bandwidth and launch overhead as the kernel
/// suite measures them, then 32 profiled decode steps with 8-bit activations.
fn decode_bound(g: &wring_gguf::Gguf, quick: bool, launches: usize) -> Result<DecodeBound, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let all: u64 = g.tensors.iter().map(|t| t.bytes).sum();
    let untied_table = match (g.tensor("output.weight"), g.tensor("token_embd.weight")) {
        (Some(_), Some(table)) => table.bytes,
        _ => 0,
    };
    let weight_mb = (all - untied_table) as f64 / 1e6;
    let copy_gb_per_s = suite::copy_bandwidth(quick).map_err(|x| e(&x))?;
    let dispatch_overhead_us = suite::dispatch_overhead_us().map_err(|x| e(&x))?;
    let weights_at_copy_ms = weight_mb / copy_gb_per_s;
    let launches_ms = launches as f64 * dispatch_overhead_us / 1e3;
    let floor_ms = weights_at_copy_ms + launches_ms;
    let ceiling_tokens_per_s = 1e3 / floor_ms;
    let (ctx, mut m) = profiled_q8_model(g, 1024)?;
    let prompt: Vec<u32> = (0..16u32).map(|i| 100 + 37 * i).collect();
    m.forward(&ctx, &prompt, false).map_err(|x| e(&x))?;
    m.take_launch_times();
    let steps = 32u32;
    for i in 0..steps {
        m.forward(&ctx, &[1000 + 13 * i], false)
            .map_err(|x| e(&x))?;
    }
    let times = m.take_launch_times();
    let per_step = |f: &dyn Fn(&str) -> bool| {
        times
            .iter()
            .filter(|t| f(&t.kernel))
            .map(|t| t.nanos)
            .sum::<f64>()
            / 1e6
            / f64::from(steps)
    };
    let step_gpu_ms = per_step(&|_| true);
    let products_gpu_ms = per_step(&|k| k.starts_with("qmatvec"));
    let n = f64::from(steps);
    let step_cpu_ms = times.iter().map(|t| t.cpu_nanos).sum::<f64>() / 1e6 / n;
    let mut by_kernel: std::collections::BTreeMap<&str, KernelBudget> =
        std::collections::BTreeMap::new();
    for t in &times {
        let k = by_kernel
            .entry(t.kernel.as_str())
            .or_insert_with(|| KernelBudget {
                kernel: t.kernel.clone(),
                launches: 0.0,
                gpu_ms: 0.0,
                cpu_ms: 0.0,
            });
        k.launches += 1.0 / n;
        k.gpu_ms += t.nanos / 1e6 / n;
        k.cpu_ms += t.cpu_nanos / 1e6 / n;
    }
    let mut kernels: Vec<KernelBudget> = by_kernel.into_values().collect();
    kernels.sort_by(|a, b| b.gpu_ms.total_cmp(&a.gpu_ms));
    let bound = DecodeBound {
        weight_mb,
        copy_gb_per_s,
        dispatch_overhead_us,
        launches,
        weights_at_copy_ms,
        launches_ms,
        floor_ms,
        ceiling_tokens_per_s,
        ceiling_vs_llama_cpp: None,
        step_gpu_ms,
        products_gpu_ms,
        products_gb_per_s: weight_mb / products_gpu_ms,
        profiled_launches: times.len() / steps as usize,
        step_cpu_ms,
        kernels,
    };
    println!("decode bound: {bound:?}");
    Ok(bound)
}

fn stats(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Bytes in MiB, as every memory figure of the reports is given.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Peak resident memory of this process (VmHWM), in MiB, where /proc has it.
fn peak_rss_mib() -> f64 {
    vmhwm_mib("/proc/self/status").unwrap_or(0.0)
}

/// The VmHWM line of a /proc status file, in MiB.
fn vmhwm_mib(status: &str) -> Option<f64> {
    std::fs::read_to_string(status).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    })
}

/// Runs `cmd` to completion and returns its peak resident memory (VmHWM) in MiB, read from /proc every 5 ms
/// while it runs (the high-water mark only rises, so the last reading is the peak unless it rose in the
/// final 5 ms), or None when it did not start, failed, or /proc has no VmHWM.
fn child_peak_rss_mib(cmd: &mut std::process::Command) -> Option<f64> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let status = format!("/proc/{}/status", child.id());
    let mut peak = None;
    loop {
        if let Some(mib) = vmhwm_mib(&status) {
            peak = Some(mib);
        }
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return peak,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

/// llama-bench's method: pp512 (a 512-token prompt in one batch) and tg128 (128 tokens one at a time from
/// an empty cache), random tokens, 5 repetitions after a warm-up, mean and standard deviation; for each
/// configuration (f32 activations, the state before 8-bit activations, and q8 activations), with the
/// launches per decode step and the time to first token cold and warm. llama-bench itself (on PATH, or
/// `LLAMA_BENCH`) runs in the same command on the same file, and each row carries its ratio.
///
/// `bench gpu` passes `long_inputs: false` and 3 repetitions: it must fit its time on a CPU adapter, where
/// llama.cpp's Vulkan back end alone decodes at a few tokens per second.
fn bench_llm(
    quick: bool,
    long_inputs: bool,
    repetitions: Option<usize>,
) -> Result<LlmReport, String> {
    let path = PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let g = wring_gguf::Gguf::open(&path)
        .map_err(|e| format!("{e} (fetch it with `bash .ci/fetch-model.sh`)"))?;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (pp, tg, reps) = if quick { (64, 16, 2) } else { (512, 128, 5) };
    let reps = repetitions.unwrap_or(reps);
    let mut rows = Vec::new();
    let mut configs = Vec::new();
    let mut adapter = String::new();
    let mut kv_cache_mib = 0.0;
    let ppl_file = PathBuf::from("tests/fixtures/perplexity_text.txt");
    let tok = wring_llm::GgufTokenizer::from_gguf(&g).map_err(|x| e(&x))?;
    let ppl_text = std::fs::read_to_string(&ppl_file).map_err(|x| e(&x))?;
    let ppl_ids = tok.encode(&ppl_text).map_err(|x| e(&x))?;
    let bos = if tok.add_bos { tok.bos } else { None };
    for (config, q8) in [("f32 activations", false), ("q8 activations", true)] {
        let cold = std::time::Instant::now();
        let ctx = wring_runtime::Context::new(wring_runtime::ContextOptions {
            q8_activations: q8,
            ..Default::default()
        })
        .map_err(|x| e(&x))?;
        let mut m = wring_llm::Llama::load(&ctx, &g, 1024, |_, _| {}).map_err(|x| e(&x))?;
        let load_s = cold.elapsed().as_secs_f64();
        adapter = ctx.label();
        kv_cache_mib = mib(m.kv_bytes());
        let vocab = m.cfg.vocab as u64;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = |n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % vocab) as u32
                })
                .collect()
        };
        m.forward(&ctx, &random(5), false).map_err(|x| e(&x))?;
        let ttft_cold_s = cold.elapsed().as_secs_f64();
        m.reset();
        let warm = std::time::Instant::now();
        m.forward(&ctx, &random(5), false).map_err(|x| e(&x))?;
        let ttft_warm_s = warm.elapsed().as_secs_f64();
        m.forward(&ctx, &random(1), false).map_err(|x| e(&x))?;
        let launches_per_token = m.last_launches();
        m.set_unit_fusion(false);
        m.forward(&ctx, &random(1), false).map_err(|x| e(&x))?;
        let launches_unfused = m.last_launches();
        m.set_unit_fusion(true);
        m.set_norm_split(false);
        m.forward(&ctx, &random(1), false).map_err(|x| e(&x))?;
        let launches_unsplit = m.last_launches();
        m.set_norm_split(true);
        println!(
            "{config}: {launches_per_token} launches per decode step ({launches_unfused} without the 8-bit unit fusion, {launches_unsplit} with the norms unsplit); first token {ttft_cold_s:.2} s cold (load {load_s:.2} s), {ttft_warm_s:.3} s warm"
        );
        configs.push(LlmConfig {
            config: config.into(),
            launches_per_token,
            launches_unfused,
            launches_unsplit,
            ttft_cold_s,
            ttft_warm_s,
            load_s,
            ppl: 0.0,
            ppl_tokens_per_s: 0.0,
            ppl_vs_llama_cpp: None,
            ppl_vs_llama_cpp_vulkan: None,
            device_peak_mib: 0.0,
        });
        for (test, n) in [(format!("pp{pp}"), pp), (format!("tg{tg}"), tg)] {
            let mut runs = Vec::new();
            for rep in 0..=reps {
                let toks = random(n);
                m.reset();
                let start = std::time::Instant::now();
                if test.starts_with("pp") {
                    m.forward(&ctx, &toks, false).map_err(|x| e(&x))?;
                } else {
                    for &t in &toks {
                        m.forward(&ctx, &[t], false).map_err(|x| e(&x))?;
                    }
                }
                let tps = n as f64 / start.elapsed().as_secs_f64();
                // The first run compiles pipelines and warms the pool: not counted, as llama-bench's warm-up.
                if rep > 0 {
                    runs.push(tps);
                }
            }
            let (mean, sd) = stats(&runs);
            println!("{config:>16} {test:>6}: {mean:8.2} ± {sd:.2} tokens/s on {adapter}");
            rows.push(LlmRow {
                config: config.into(),
                test,
                reps: runs,
                mean_tokens_per_s: mean,
                stddev: sd,
                vs_llama_cpp: None,
                vs_llama_cpp_vulkan: None,
            });
        }
        // What splitting the norms between the products buys (`Llama::set_norm_split`), as decode rows
        // timed in alternating rounds: this machine's speed drifts by more than the effect over the minutes
        // between two separately timed rows.
        if q8 {
            let mut ab = [Vec::new(), Vec::new()];
            for rep in 0..=reps {
                for (runs, split) in ab.iter_mut().zip([true, false]) {
                    m.set_norm_split(split);
                    let toks = random(tg);
                    m.reset();
                    let start = std::time::Instant::now();
                    for &t in &toks {
                        m.forward(&ctx, &[t], false).map_err(|x| e(&x))?;
                    }
                    if rep > 0 {
                        runs.push(tg as f64 / start.elapsed().as_secs_f64());
                    }
                }
            }
            m.set_norm_split(true);
            for (runs, name) in ab
                .into_iter()
                .zip(["q8, norms split (A/B)", "q8, norms unsplit (A/B)"])
            {
                let (mean, sd) = stats(&runs);
                println!("{name:>16} tg{tg}: {mean:8.2} ± {sd:.2} tokens/s on {adapter}");
                rows.push(LlmRow {
                    config: name.into(),
                    test: format!("tg{tg}"),
                    reps: runs,
                    mean_tokens_per_s: mean,
                    stddev: sd,
                    vs_llama_cpp: None,
                    vs_llama_cpp_vulkan: None,
                });
            }
        }
        // Perplexity as `wring perplexity` runs it (every chunk of 512 in one pass each).
        let start = std::time::Instant::now();
        let p = m
            .perplexity(&ctx, &ppl_ids, 512, if quick { Some(1) } else { None }, bos)
            .map_err(|x| e(&x))?;
        let ppl_tokens_per_s = (p.chunks * 512) as f64 / start.elapsed().as_secs_f64();
        println!(
            "{config:>16} perplexity: {:.4} over {} chunks of 512 at {ppl_tokens_per_s:.1} tokens/s",
            p.ppl, p.chunks
        );
        let last = configs.last_mut().expect("pushed above");
        last.ppl = p.ppl;
        last.ppl_tokens_per_s = ppl_tokens_per_s;
        last.device_peak_mib = mib(ctx.memory().peak_bytes);
    }
    // What bounds decode, measured right after the decode rows (this machine's speed drifts over minutes).
    let q8_launches = configs
        .iter()
        .find(|c| c.config == "q8 activations")
        .map_or(0, |c| c.launches_per_token);
    let mut decode_bound = decode_bound(&g, quick, q8_launches)?;
    // llama.cpp's own numbers on this machine, in the same command.
    let exe = llama_bench_exe();
    let llama_bench = llama_command(&exe, &Peer::Cpu)
        .args([
            "-m",
            &path.display().to_string(),
            "-p",
            &pp.to_string(),
            "-n",
            &tg.to_string(),
            "-r",
            &reps.to_string(),
            "-o",
            "md",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let mut llama_cpp = Vec::new();
    match &llama_bench {
        Some(out) => {
            println!("{out}");
            for test in [format!("pp{pp}"), format!("tg{tg}")] {
                if let Some(t) = llama_bench_mean(out, &test) {
                    llama_cpp.push((test, t));
                }
            }
            for r in &mut rows {
                if let Some((_, t)) = llama_cpp.iter().find(|(k, _)| *k == r.test) {
                    r.vs_llama_cpp = Some(r.mean_tokens_per_s / t);
                    println!(
                        "{} {}: wring / llama.cpp (CPU) = {:.2}",
                        r.config,
                        r.test,
                        r.mean_tokens_per_s / t
                    );
                }
            }
        }
        None => println!("{exe} did not run: no llama.cpp numbers in this run"),
    }
    // llama.cpp's Vulkan back end on the device wring ran on, from the same build when it has one: a GPU
    // engine on the same GPU (on lavapipe, the same software rasteriser).
    let vulkan_peer = vulkan_peer(&exe);
    let mut llama_bench_vulkan = None;
    let mut llama_cpp_vulkan = Vec::new();
    let mut vulkan_device = None;
    if let Some(peer) = &vulkan_peer {
        let out = llama_command(&exe, peer)
            .args(["-m", &path.display().to_string()])
            .args(["-p", &pp.to_string(), "-n", &tg.to_string()])
            .args(["-r", &reps.to_string(), "-ngl", "99", "-o", "md"])
            .output()
            .ok()
            .filter(|o| o.status.success());
        if let Some(o) = out {
            let table = String::from_utf8_lossy(&o.stdout).to_string();
            vulkan_device = String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| l.starts_with("ggml_vulkan: ") && l.contains(" = "))
                .map(|l| l.trim_start_matches("ggml_vulkan: ").to_string());
            println!("llama.cpp's Vulkan back end ({vulkan_device:?}):\n{table}");
            for test in [format!("pp{pp}"), format!("tg{tg}")] {
                if let Some(t) = llama_bench_mean(&table, &test) {
                    llama_cpp_vulkan.push((test, t));
                }
            }
            for r in &mut rows {
                if let Some((_, t)) = llama_cpp_vulkan.iter().find(|(k, _)| *k == r.test) {
                    r.vs_llama_cpp_vulkan = Some(r.mean_tokens_per_s / t);
                    println!(
                        "{} {}: wring / llama.cpp (Vulkan) = {:.2}",
                        r.config,
                        r.test,
                        r.mean_tokens_per_s / t
                    );
                }
            }
            llama_bench_vulkan = Some(table);
        } else {
            println!("llama-bench on the Vulkan back end did not run");
        }
    } else {
        println!("{exe} has no Vulkan back end (build it with tools/build-llama-cpp.sh)");
    }
    // llama-perplexity beside it: the same file, text and context, two threads, as this machine has.
    let perplexity_exe = Path::new(&exe).with_file_name("llama-perplexity");
    let chunks = if quick { 1 } else { ppl_ids.len() / 512 };
    let llama_perplexity = run_llama_perplexity(
        &perplexity_exe,
        &Peer::Cpu,
        &path,
        &ppl_file,
        512,
        chunks,
        quick,
    );
    match llama_perplexity {
        Some((ppl, tps)) => {
            println!("llama-perplexity: {ppl:.4} at {tps:.1} tokens/s (process start included)");
            for c in &mut configs {
                c.ppl_vs_llama_cpp = Some(c.ppl_tokens_per_s / tps);
            }
        }
        None => println!("{} did not run", perplexity_exe.display()),
    }
    let llama_perplexity_vulkan = vulkan_peer.as_ref().and_then(|peer| {
        run_llama_perplexity(&perplexity_exe, peer, &path, &ppl_file, 512, chunks, quick)
    });
    if let Some((ppl, tps)) = llama_perplexity_vulkan {
        println!(
            "llama-perplexity (Vulkan): {ppl:.4} at {tps:.1} tokens/s (process start included)"
        );
        for c in &mut configs {
            c.ppl_vs_llama_cpp_vulkan = Some(c.ppl_tokens_per_s / tps);
        }
    }
    let peak = peak_rss_mib();
    // `wring generate` as a user runs it (its default 4,096-position f32 cache), in its own process so that
    // its peak is its own: 128 tokens, greedy, after a short prompt that it continues past 128 tokens.
    let wring_exe = std::env::current_exe()
        .map_err(|x| e(&x))?
        .with_file_name("wring");
    let generate_peak_rss_mib = child_peak_rss_mib(
        std::process::Command::new(&wring_exe)
            .args(["generate", "--model", &path.display().to_string()])
            .args([
                "--prompt",
                "Once upon a time, in a small village by the sea,",
            ])
            .args(["--max-tokens", &tg.to_string(), "--temperature", "0"]),
    );
    let generate_kv_cache_mib = kv_cache_mib * 4096.0 / 1024.0;
    println!(
        "wring generate ({}): peak {generate_peak_rss_mib:?} MiB; its KV cache {generate_kv_cache_mib:.0} MiB",
        wring_exe.display()
    );
    let model_file_mib = std::fs::metadata(&path).map_or(0.0, |m| mib(m.len()));
    println!(
        "peak host memory: {peak:.0} MiB (model file {model_file_mib:.0} MiB, KV cache {kv_cache_mib:.0} MiB)"
    );
    let long = if quick || !long_inputs {
        None
    } else {
        Some(bench_long(&g, &path, &exe, &perplexity_exe)?)
    };
    if let Some((_, t)) = llama_cpp.iter().find(|(t, _)| *t == format!("tg{tg}")) {
        decode_bound.ceiling_vs_llama_cpp = Some(decode_bound.ceiling_tokens_per_s / t);
    }
    Ok(LlmReport {
        model: path.display().to_string(),
        adapter,
        rows,
        configs,
        llama_bench,
        llama_cpp,
        llama_perplexity,
        llama_bench_vulkan,
        llama_cpp_vulkan,
        llama_perplexity_vulkan,
        vulkan_device,
        peak_rss_mib: peak,
        model_file_mib,
        kv_cache_mib,
        generate_peak_rss_mib,
        generate_kv_cache_mib,
        long,
        decode_bound,
    })
}

/// llama-perplexity on `text` at context `n_ctx` (the first `chunks` chunks): its PPL and tokens per
/// second over `chunks * n_ctx` tokens, its process start included; None when it did not run.
fn run_llama_perplexity(
    exe: &Path,
    peer: &Peer,
    model: &Path,
    text: &Path,
    n_ctx: usize,
    chunks: usize,
    limit: bool,
) -> Option<(f64, f64)> {
    let start = std::time::Instant::now();
    let n = n_ctx.to_string();
    let c = chunks.to_string();
    llama_command(exe, peer)
        .args(["-m", &model.display().to_string(), "-f"])
        .arg(text)
        .args(["-c", &n])
        .args(if limit { vec!["--chunks", &c] } else { vec![] })
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let secs = start.elapsed().as_secs_f64();
            let text = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            let ppl = text
                .lines()
                .find_map(|l| l.split("Final estimate: PPL = ").nth(1))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())?;
            Some((ppl, (chunks * n_ctx) as f64 / secs))
        })
}

/// llama-bench's mean tokens/s for one test (its markdown table), with extra arguments.
fn llama_bench_one(exe: &str, model: &Path, args: &[&str], test: &str) -> Option<f64> {
    let out = llama_command(exe, &Peer::Cpu)
        .args(["-m", &model.display().to_string(), "-r", "2", "-o", "md"])
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{out}");
    llama_bench_mean(&out, test)
}

/// The host's CPU model (ratios against llama.cpp's CPU back end depend on it), from /proc/cpuinfo.
pub(crate) fn host_cpu() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {cores} threads")
}

/// Which of llama.cpp's back ends a command runs on.
#[derive(Debug, Clone)]
enum Peer {
    /// The CPU back end: the Vulkan devices hidden (`GGML_VK_VISIBLE_DEVICES` empty), so that a Vulkan
    /// build computes on the CPU alone.
    Cpu,
    /// The Vulkan back end with every layer offloaded (`-ngl 99`); `Some(i)` makes device `i` the only one
    /// it sees (wring's adapter when that is a CPU adapter, which llama.cpp passes over by default).
    Vulkan(Option<usize>),
}

/// A llama.cpp tool's command for one back end.
fn llama_command(exe: impl AsRef<std::ffi::OsStr>, peer: &Peer) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    match peer {
        Peer::Cpu => {
            cmd.env("GGML_VK_VISIBLE_DEVICES", "");
        }
        Peer::Vulkan(Some(i)) => {
            cmd.env("GGML_VK_VISIBLE_DEVICES", i.to_string());
        }
        Peer::Vulkan(None) => {
            cmd.env_remove("GGML_VK_VISIBLE_DEVICES");
        }
    }
    cmd
}

/// llama-bench: `LLAMA_BENCH`, else the build of tools/build-llama-cpp.sh, else the one on PATH.
fn llama_bench_exe() -> String {
    if let Ok(e) = std::env::var("LLAMA_BENCH") {
        return e;
    }
    let built = Path::new("target/llama.cpp/build/bin/llama-bench");
    if built.is_file() {
        return built.display().to_string();
    }
    "llama-bench".into()
}

/// The Vulkan peer, when the llama.cpp build beside `exe` has the Vulkan back end. Where wring runs on a
/// Vulkan adapter that is a CPU adapter (lavapipe), llama.cpp is pointed at that device by its index
/// among the Vulkan adapters (both enumerate the Vulkan instance's physical devices in order); on a
/// hardware GPU it picks the device as it does by default (the dedicated GPU first, as wring does).
fn vulkan_peer(exe: &str) -> Option<Peer> {
    let dir = Path::new(exe).parent()?;
    let has_vulkan = [
        "libggml-vulkan.so",
        "libggml-vulkan.dylib",
        "ggml-vulkan.dll",
    ]
    .iter()
    .any(|f| dir.join(f).is_file());
    if !has_vulkan {
        return None;
    }
    let (reports, chosen, _) = wring_runtime::adapter_reports().ok()?;
    let ours = &reports[chosen].info;
    // Compared by name: xtask reaches wgpu's types only through the runtime's reports.
    let vulkan =
        |i: &wring_runtime::adapter::AdapterReport| format!("{:?}", i.info.backend) == "Vulkan";
    let index = (vulkan(&reports[chosen]) && format!("{:?}", ours.device_type) == "Cpu")
        .then(|| reports[..chosen].iter().filter(|r| vulkan(r)).count());
    Some(Peer::Vulkan(index))
}

/// The mean tokens/s of `test` (pp512, tg128, "tg64 @ d2048" matches tg64) in llama-bench's markdown table.
fn llama_bench_mean(table: &str, test: &str) -> Option<f64> {
    table
        .lines()
        .find(|l| l.contains(&format!(" {test} ")))
        .and_then(|l| l.split('|').rev().nth(1))
        .and_then(|c| c.split('±').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// The long-input rows (see [`LongReport`]).
fn bench_long(
    g: &wring_gguf::Gguf,
    path: &Path,
    llama_bench: &str,
    llama_perplexity_exe: &Path,
) -> Result<LongReport, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (ctx, mut m) = profiled_q8_model(g, 4096)?;
    let kv_cache_mib = mib(m.kv_bytes());
    // Token ids from the evaluation text, so that attention sees real text rather than noise.
    let tok = wring_llm::GgufTokenizer::from_gguf(g).map_err(|x| e(&x))?;
    let text_path = PathBuf::from("tests/fixtures/eighty_days_eval.txt");
    let text = std::fs::read_to_string(&text_path).map_err(|x| e(&x))?;
    let ids = tok.encode(&text).map_err(|x| e(&x))?;
    if ids.len() < 4096 {
        return Err(format!(
            "{} has fewer than 4,096 tokens",
            text_path.display()
        ));
    }
    // Pipelines compiled and the pool warmed before anything is timed.
    m.forward(&ctx, &ids[..64], false).map_err(|x| e(&x))?;
    let mut prefill = Vec::new();
    for n in [512usize, 1024, 2048] {
        m.reset();
        m.take_launch_times();
        let start = std::time::Instant::now();
        m.forward(&ctx, &ids[..n], false).map_err(|x| e(&x))?;
        let seconds = start.elapsed().as_secs_f64();
        let times = m.take_launch_times();
        let total: f64 = times.iter().map(|t| t.nanos).sum();
        let attention: f64 = times
            .iter()
            .filter(|t| t.kernel.starts_with("attn"))
            .map(|t| t.nanos)
            .sum();
        let theirs = llama_bench_one(
            llama_bench,
            path,
            &["-p", &n.to_string(), "-n", "0"],
            &format!("pp{n}"),
        );
        let row = PrefillRow {
            tokens: n,
            seconds,
            tokens_per_s: n as f64 / seconds,
            attention_share: if total > 0.0 { attention / total } else { 0.0 },
            llama_cpp_tokens_per_s: theirs,
        };
        println!(
            "prefill {n}: {seconds:.2} s, {:.1} tokens/s, attention {:.0}% of GPU time; llama.cpp {theirs:?}",
            row.tokens_per_s,
            row.attention_share * 100.0
        );
        prefill.push(row);
    }
    // Decode 64 tokens after the 2,048-token prompt (the cache now holds it).
    let start = std::time::Instant::now();
    for &t in &ids[2048..2112] {
        m.forward(&ctx, &[t], false).map_err(|x| e(&x))?;
    }
    let tg_at_2048_tokens_per_s = 64.0 / start.elapsed().as_secs_f64();
    m.take_launch_times();
    let llama_cpp_tg_at_2048 = llama_bench_one(
        llama_bench,
        path,
        &["-p", "0", "-n", "64", "-d", "2048"],
        "tg64",
    );
    println!(
        "decode after 2,048 tokens: {tg_at_2048_tokens_per_s:.1} tokens/s; llama.cpp {llama_cpp_tg_at_2048:?}"
    );
    // Perplexity at ctx 2048 over the text's 4,096 tokens, in a context that does not time launches.
    // Both go first, so that the profiling context's pooled buffers are not counted beside the next one's.
    drop(m);
    drop(ctx);
    let plain = wring_runtime::Context::new(wring_runtime::ContextOptions {
        q8_activations: true,
        ..Default::default()
    })
    .map_err(|x| e(&x))?;
    let mut m = wring_llm::Llama::load(&plain, g, 4096, |_, _| {}).map_err(|x| e(&x))?;
    let bos = if tok.add_bos { tok.bos } else { None };
    let start = std::time::Instant::now();
    let p = m
        .perplexity(&plain, &ids[..4096], 2048, None, bos)
        .map_err(|x| e(&x))?;
    let ppl_2048_tokens_per_s = (p.chunks * 2048) as f64 / start.elapsed().as_secs_f64();
    let llama_perplexity_2048 = run_llama_perplexity(
        llama_perplexity_exe,
        &Peer::Cpu,
        path,
        &text_path,
        2048,
        2,
        true,
    );
    println!(
        "perplexity at ctx 2048: {:.4} over {} chunks at {ppl_2048_tokens_per_s:.1} tokens/s; llama-perplexity {llama_perplexity_2048:?}",
        p.ppl, p.chunks
    );
    Ok(LongReport {
        prefill,
        tg_at_2048_tokens_per_s,
        llama_cpp_tg_at_2048,
        ppl_2048: p.ppl,
        ppl_2048_tokens_per_s,
        llama_perplexity_2048,
        peak_rss_mib: peak_rss_mib(),
        kv_cache_mib,
    })
}

fn save_codec(dir: &Path, r: &codec::CodecReport) -> std::io::Result<()> {
    save_json(dir, "codec.json", r)?;
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let md = codec::summary_md(r, &command, &today(), &host_cpu());
    std::fs::write(dir.join("summary.md"), md)?;
    println!("results written to {}", dir.join("summary.md").display());
    Ok(())
}

/// Writes a report with the command, the date and the locked dependency versions as `dir/name`.
fn save_json(dir: &Path, name: &str, r: &impl serde::Serialize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let json = serde_json::json!({ "command": command, "date": today(), "versions": locked_versions(), "report": r });
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&json)? + "\n")?;
    println!("results written to {}", dir.join(name).display());
    Ok(())
}

fn save_llm(root: &Path, r: &LlmReport) -> std::io::Result<PathBuf> {
    let dir = root.join(format!("{}-{}", today(), slug(&r.adapter)));
    std::fs::create_dir_all(&dir)?;
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let json = serde_json::json!({ "command": command, "date": today(), "versions": locked_versions(), "report": r });
    std::fs::write(
        dir.join("llm.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let mut md = format!(
        "# wring vs llama.cpp, {}\n\nCommand: `{command}`  \nModel: `{}`  \nAdapter: {}  \nHost CPU: {}  \n\
         Peers: llama-bench (llama.cpp from the llama-cpp-python 0.3.36 sdist, same file, same command) on its CPU back end \
         and on its Vulkan back end with every layer offloaded ({})\n\n",
        today(),
        r.model,
        r.adapter,
        host_cpu(),
        r.vulkan_device
            .as_deref()
            .unwrap_or("not run: the build has no Vulkan back end")
    );
    md += "| configuration | test | wring tokens/s | llama.cpp CPU tokens/s | ratio | llama.cpp Vulkan tokens/s | ratio |\n|---|---|---:|---:|---:|---:|---:|\n";
    let theirs = |table: &[(String, f64)], test: &str| {
        table
            .iter()
            .find(|(t, _)| t == test)
            .map_or("-".into(), |(_, v)| format!("{v:.2}"))
    };
    let ratio = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
    for row in &r.rows {
        md += &format!(
            "| {} | {} | {:.2} ± {:.2} | {} | {} | {} | {} |\n",
            row.config,
            row.test,
            row.mean_tokens_per_s,
            row.stddev,
            theirs(&r.llama_cpp, &row.test),
            ratio(row.vs_llama_cpp),
            theirs(&r.llama_cpp_vulkan, &row.test),
            ratio(row.vs_llama_cpp_vulkan),
        );
    }
    md += "\n| configuration | launches per decode step (without 8-bit unit fusion; norms unsplit) | first token, cold (s) | of which load (s) | first token, warm (s) | PPL (perplexity_text.txt, ctx 512) | perplexity tokens/s | vs llama-perplexity (CPU) | vs llama-perplexity (Vulkan) | device memory peak (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for c in &r.configs {
        md += &format!(
            "| {} | {} ({}; {}) | {:.2} | {:.2} | {:.3} | {:.4} | {:.1} | {} | {} | {:.0} |\n",
            c.config,
            c.launches_per_token,
            c.launches_unfused,
            c.launches_unsplit,
            c.ttft_cold_s,
            c.load_s,
            c.ttft_warm_s,
            c.ppl,
            c.ppl_tokens_per_s,
            ratio(c.ppl_vs_llama_cpp),
            ratio(c.ppl_vs_llama_cpp_vulkan),
            c.device_peak_mib
        );
    }
    if let Some((ppl, tps)) = r.llama_perplexity {
        md += &format!(
            "\nllama-perplexity (same file, text and context): PPL {ppl:.4} at {tps:.1} tokens/s on the CPU back end, its process start included.\n"
        );
    }
    if let Some((ppl, tps)) = r.llama_perplexity_vulkan {
        md += &format!(
            "\nllama-perplexity on the Vulkan back end: PPL {ppl:.4} at {tps:.1} tokens/s, its process start included.\n"
        );
    }
    md += &format!(
        "\nPeak host memory (VmHWM, whole command): {:.0} MiB; model file {:.0} MiB; KV cache (1,024 positions) {:.0} MiB.\n",
        r.peak_rss_mib, r.model_file_mib, r.kv_cache_mib
    );
    if let Some(g) = r.generate_peak_rss_mib {
        let budget = (r.model_file_mib + r.generate_kv_cache_mib) * 1.3;
        md += &format!(
            "\n`wring generate` (128 tokens, its own process): peak {g:.0} MiB against model file + KV cache ({:.0} + {:.0} MiB) + 30% = {budget:.0} MiB ({:.2}x of model + KV).\n",
            r.model_file_mib,
            r.generate_kv_cache_mib,
            g / (r.model_file_mib + r.generate_kv_cache_mib)
        );
    }
    let b = &r.decode_bound;
    md += &format!(
        "\n## What bounds decode (8-bit activations; every figure measured in this command)\n\n\
         A decode step reads {:.1} MB of weights (every tensor once; the tied head reads the whole embedding table): \
         {:.1} ms at the copy kernel's {:.2} GB/s. Its {} launches cost {:.1} ms at {:.1} us each (the overhead of one \
         tiny launch inside a step of 200). Together, {:.1} ms: at most **{:.1} tokens/s** ({}) with this launch count \
         even if every product ran at the copy rate.\n\n\
         Measured (GPU timestamps, 32 decode steps, {} launches each): {:.1} ms of GPU time per step, of which the \
         quantized products {:.1} ms ({:.2} GB/s, {:.0}% of the copy kernel's bandwidth); recording and encoding \
         its launches took {:.2} ms of CPU time.\n",
        b.weight_mb,
        b.weights_at_copy_ms,
        b.copy_gb_per_s,
        b.launches,
        b.launches_ms,
        b.dispatch_overhead_us,
        b.floor_ms,
        b.ceiling_tokens_per_s,
        b.ceiling_vs_llama_cpp
            .map_or("llama.cpp's tg did not run".into(), |v| format!(
                "{v:.2}x llama.cpp's tg in this command"
            )),
        b.profiled_launches,
        b.step_gpu_ms,
        b.products_gpu_ms,
        b.products_gb_per_s,
        100.0 * b.products_gb_per_s / b.copy_gb_per_s,
        b.step_cpu_ms
    );
    md += "\n| kernel/variant (profiled decode step) | launches | GPU ms | CPU ms to record and encode |\n|---|---:|---:|---:|\n";
    for k in &b.kernels {
        md += &format!(
            "| {} | {:.0} | {:.2} | {:.3} |\n",
            k.kernel, k.launches, k.gpu_ms, k.cpu_ms
        );
    }
    if let Some(l) = &r.long {
        let ratio = |ours: f64, theirs: Option<f64>| {
            theirs.map_or("-".into(), |t| format!("{t:.1} ({:.2}x)", ours / t))
        };
        md += "
## Long inputs (8-bit activations, a 4,096-position cache, tests/fixtures/eighty_days_eval.txt)

";
        md += "| prompt tokens | seconds | tokens/s | attention's share of GPU time | llama-bench (ratio) |
|---:|---:|---:|---:|---:|
";
        for p in &l.prefill {
            md += &format!(
                "| {} | {:.2} | {:.1} | {:.0}% | {} |
",
                p.tokens,
                p.seconds,
                p.tokens_per_s,
                p.attention_share * 100.0,
                ratio(p.tokens_per_s, p.llama_cpp_tokens_per_s)
            );
        }
        md += &format!(
            "
Decode after a 2,048-token prompt: {:.1} tokens/s; llama-bench tg64 at depth 2048: {}.
",
            l.tg_at_2048_tokens_per_s,
            ratio(l.tg_at_2048_tokens_per_s, l.llama_cpp_tg_at_2048)
        );
        md += &format!(
            "
Perplexity at ctx 2048 over 4,096 tokens: PPL {:.4} at {:.1} tokens/s; llama-perplexity (same file, text, context): {}.
",
            l.ppl_2048,
            l.ppl_2048_tokens_per_s,
            l.llama_perplexity_2048.map_or("-".into(), |(p, t)| format!(
                "PPL {p:.4} at {t:.1} tokens/s ({:.2}x)",
                l.ppl_2048_tokens_per_s / t
            ))
        );
        md += &format!(
            "
Peak host memory after the long runs: {:.0} MiB (4,096-position KV cache {:.0} MiB).
",
            l.peak_rss_mib, l.kv_cache_mib
        );
    }
    std::fs::write(dir.join("summary.md"), md)?;
    println!("results written to {}", dir.join("llm.json").display());
    Ok(dir)
}
