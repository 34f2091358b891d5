//! `cargo xtask bench serve`: many users at once against `wring serve` and, in the same command on the
//! same file, llama.cpp's `llama-server` (built from the same llama-cpp-python sdist by
//! tools/build-llama-cpp.sh, its CPU back end, `-np 8`).
//!
//! Each server runs two loads: one client, then 8 at once; every client sends R streaming chat requests one
//! after another (temperature 0.7, seeded). Per load: requests per second, time to first token (from
//! sending the request to the first content chunk) at p50 and p99, generated tokens per second over the
//! wall time (all clients together), and every error. The batching gain is the 8-client tokens/s over the
//! 1-client tokens/s, each server against itself. Then prefix reuse: a ~1,024-token prompt, then a second
//! one sharing all but its last sentence; the first's time to first token over the second's is the gain
//! from the prefix cache (wring's paged blocks; llama-server's slot prompt cache).
//!
//! wring runs in this process: `--parallel 8`, a paged f16 KV cache of 4,096 positions (llama-server's
//! default cache type is f16), 8-bit decode activations (as llama.cpp's CPU back end).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One load on one server.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    pub server: String,
    pub clients: usize,
    pub requests: usize,
    /// Requests that did not end in a complete stream (any status but 200, or a stream without [DONE]).
    pub errors: usize,
    /// Of the errors, 429s.
    pub rejected: usize,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    /// Completion tokens (from each stream's usage chunk, or its content chunks) over the wall time.
    pub tokens_per_s: f64,
}

/// Prefix reuse on one server.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixRow {
    pub server: String,
    /// Tokens of the shared prefix (wring's tokenizer).
    pub prefix_tokens: usize,
    pub first_ttft_ms: f64,
    pub second_ttft_ms: f64,
    /// first / second.
    pub speedup: f64,
}

/// Decode with N sequences in every step, without HTTP (`wring_llm::Batcher` directly).
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub sequences: usize,
    /// Steps that decoded all N sequences (after their prompts), and their mean time.
    pub steps: usize,
    pub step_ms: f64,
    /// N tokens per step over the step time.
    pub tokens_per_s: f64,
    /// tokens/s over the 1-sequence row's.
    pub gain: f64,
}

/// One decode step of one sequence at depth 4,096 with a KV cache mode, contiguous or paged.
#[derive(Debug, Clone, Serialize)]
pub struct DepthRow {
    pub cache: String,
    pub step_ms: f64,
    pub tokens_per_s: f64,
    /// Device bytes of the whole KV cache (every layer; a contiguous packed mode's f32 working cache
    /// included).
    pub kv_bytes: u64,
    /// kv_bytes over the 4,096 positions.
    pub bytes_per_position: f64,
}

/// What the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub adapter: String,
    pub cpu: String,
    pub model: String,
    pub requests_per_client: usize,
    pub max_tokens: usize,
    pub scaling: Vec<ScaleRow>,
    pub depth: Vec<DepthRow>,
    pub loads: Vec<LoadRow>,
    pub prefix: Vec<PrefixRow>,
    /// 8 clients' tokens/s over 1 client's, per server.
    pub gains: Vec<(String, f64)>,
    /// Why llama-server did not run, when it did not.
    pub peer_note: Option<String>,
    /// wring's /metrics after its loads.
    pub metrics: String,
}

impl ServeReport {
    /// Requests that failed, over every load.
    pub fn errors(&self) -> usize {
        self.loads.iter().map(|l| l.errors).sum()
    }
}

/// One request's outcome: time to the first content chunk and completion tokens, or what went wrong.
type Outcome = Result<(Duration, usize), String>;

fn one_request(agent: &ureq::Agent, url: &str, body: &str) -> Outcome {
    let sent = Instant::now();
    let resp = match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(format!("status {code}")),
        Err(e) => return Err(e.to_string()),
    };
    let mut first = None;
    let mut usage = None;
    let mut chunks = 0;
    let mut done = false;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if v.get("error").is_some() {
            return Err(format!("stream error: {data}"));
        }
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            chunks += 1;
            first.get_or_insert_with(|| sent.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            usage = Some(n as usize);
        }
    }
    match (done, first) {
        (true, Some(f)) => Ok((f, usage.unwrap_or(chunks))),
        (true, None) => Ok((sent.elapsed(), 0)),
        _ => Err("the stream ended early".into()),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

const QUESTIONS: [&str; 5] = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is 12 times 7?",
    "Say hello in Spanish.",
];

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(900))
        .build()
}

/// `clients` clients at once against `base`, each sending `per_client` streaming chat requests.
fn load(server: &str, base: &str, clients: usize, per_client: usize, max_tokens: usize) -> LoadRow {
    let url = format!("{base}/v1/chat/completions");
    let start = Instant::now();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = &url;
                s.spawn(move || {
                    let agent = agent();
                    (0..per_client)
                        .map(|r| {
                            let q = QUESTIONS[(c + r) % QUESTIONS.len()];
                            let body = serde_json::json!({
                                "messages": [{"role": "user", "content": q}],
                                "max_tokens": max_tokens, "temperature": 0.7, "seed": (c * 100 + r) as u64,
                                "stream": true, "stream_options": {"include_usage": true},
                            });
                            one_request(&agent, url, &body.to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("client panicked".into())])
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut ttft: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|(t, _)| t.as_secs_f64() * 1e3)
        .collect();
    ttft.sort_by(f64::total_cmp);
    let tokens: usize = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|(_, n)| n)
        .sum();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    for err in &errors {
        eprintln!("{server}: request failed: {err}");
    }
    let row = LoadRow {
        server: server.into(),
        clients,
        requests: outcomes.len(),
        errors: errors.len(),
        rejected: errors.iter().filter(|e| e.as_str() == "status 429").count(),
        wall_s: wall,
        requests_per_s: outcomes.len() as f64 / wall,
        ttft_p50_ms: percentile(&ttft, 50.0),
        ttft_p99_ms: percentile(&ttft, 99.0),
        tokens_per_s: tokens as f64 / wall,
    };
    println!(
        "{server}, {clients} clients: {:.2} tokens/s, {:.3} requests/s, TTFT p50 {:.0} ms, {} errors",
        row.tokens_per_s, row.requests_per_s, row.ttft_p50_ms, row.errors
    );
    row
}

/// A ~1,024-token prompt and a second sharing all of it but the last sentence: the first's time to first
/// token over the second's.
fn prefix(server: &str, base: &str, prefix_text: &str, prefix_tokens: usize) -> PrefixRow {
    let url = format!("{base}/v1/completions");
    let agent = agent();
    let ttft = |question: &str| -> f64 {
        let body = serde_json::json!({
            "prompt": format!("{prefix_text}\nQuestion: {question}\nAnswer:"),
            "max_tokens": 4, "temperature": 0, "stream": true,
        });
        let sent = Instant::now();
        let resp = agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        let Ok(resp) = resp else {
            return f64::NAN;
        };
        for line in BufReader::new(resp.into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("data: ") {
                return sent.elapsed().as_secs_f64() * 1e3;
            }
        }
        f64::NAN
    };
    let first = ttft("What is this text about?");
    let second = ttft("How long is this text?");
    let row = PrefixRow {
        server: server.into(),
        prefix_tokens,
        first_ttft_ms: first,
        second_ttft_ms: second,
        speedup: first / second,
    };
    println!(
        "{server}, prefix of {prefix_tokens} tokens: first {first:.0} ms, second {second:.0} ms ({:.1}x)",
        row.speedup
    );
    row
}

/// Decode steps of N sequences at once (N = 1, 2, 4, 8) on the batcher directly: each sequence a short
/// prompt then `tokens` greedy tokens; only the steps in which all N decode are timed.
fn scaling(
    ctx: &wring_runtime::Context,
    g: &wring_gguf::Gguf,
    tok: &wring_llm::GgufTokenizer,
    tokens: usize,
) -> Result<Vec<ScaleRow>, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut model = wring_llm::Llama::load(ctx, g, 1024, |_, _| {}).map_err(|x| e(&x))?;
    model
        .set_paged(ctx, wring_llm::KvMode::F16, 1024 / 16, 16)
        .map_err(|x| e(&x))?;
    let mut rows: Vec<ScaleRow> = Vec::new();
    // The first pass compiles the pipelines of every batch size and is not kept.
    for pass in 0..2 {
        rows.clear();
        for n in [1usize, 2, 4, 8] {
            let mut b = wring_llm::Batcher::new(&model, n, 256).map_err(|x| e(&x))?;
            for i in 0..n {
                let prompt = tok
                    .encode(QUESTIONS[i % QUESTIONS.len()])
                    .map_err(|x| e(&x))?;
                let req = wring_llm::batch::Request {
                    prompt,
                    sampler: wring_llm::Sampler::greedy(),
                    stop: Vec::new(),
                    max_tokens: if pass == 0 { 2 } else { tokens },
                    cancel: wring_llm::Cancel::new(),
                };
                b.submit(i as u64, req).map_err(|x| e(&x))?;
            }
            let (mut full, mut time) = (0usize, 0f64);
            while !b.is_idle() {
                let all = b.running() == n && b.waiting() == 0;
                let t = Instant::now();
                let events = b.step(&mut model, ctx).map_err(|x| e(&x))?;
                let took = t.elapsed().as_secs_f64();
                let decoded = events
                    .iter()
                    .filter(|ev| matches!(ev, wring_llm::Event::Token { .. }))
                    .count();
                if all && decoded == n {
                    full += 1;
                    time += took;
                }
            }
            let step_ms = time / full.max(1) as f64 * 1e3;
            let tokens_per_s = n as f64 * 1e3 / step_ms;
            let gain = rows.first().map_or(1.0, |r| tokens_per_s / r.tokens_per_s);
            rows.push(ScaleRow {
                sequences: n,
                steps: full,
                step_ms,
                tokens_per_s,
                gain,
            });
        }
    }
    for r in &rows {
        println!(
            "batched decode, {} sequences: {:.1} ms a step, {:.2} tokens/s ({:.2}x one sequence's)",
            r.sequences, r.step_ms, r.tokens_per_s, r.gain
        );
    }
    Ok(rows)
}

/// Decode at depth 4,096: the contiguous f16 and q4 caches (a packed mode expands the past into an f32
/// working cache before attention) beside the paged f16 and KIVI q8, q4 (rotated) and q2 pools
/// (attention reads the codes where they lie, and the sequence's last full block and unfinished one from
/// its f16 ring). The cache's contents are whatever its buffers hold (zeros): a step's work does not
/// depend on them. The modes are timed in turn over `rounds` rounds of `steps` steps (after two untimed
/// ones), so that a slow spell of this shared machine falls on every mode alike; each row is the median
/// of its rounds' means.
fn depth(
    ctx: &wring_runtime::Context,
    g: &wring_gguf::Gguf,
    steps: usize,
    rounds: usize,
) -> Result<Vec<DepthRow>, String> {
    use wring_llm::KvMode;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    const DEPTH: usize = 4096;
    let mut m = wring_llm::Llama::load(ctx, g, DEPTH, |_, _| {}).map_err(|x| e(&x))?;
    let kivi = |bits, rotate| KvMode::Kivi { bits, rotate };
    // (paged, mode) in the table's order.
    let modes = [
        (false, KvMode::F16),
        (false, kivi(4, false)),
        (true, KvMode::F16),
        (true, kivi(8, false)),
        (true, kivi(4, false)),
        (true, kivi(4, true)),
        (true, kivi(2, false)),
    ];
    let mut times = vec![Vec::new(); modes.len()];
    let mut bytes = vec![0u64; modes.len()];
    for _ in 0..rounds.max(1) {
        for (i, &(paged, mode)) in modes.iter().enumerate() {
            let block = mode.paged_block();
            if paged {
                m.set_paged(ctx, mode, DEPTH / block, block)
                    .map_err(|x| e(&x))?;
                // Pooled buffers may hold another mode's bytes; zeros decode to zeros in every pool.
                m.assume_filled(ctx, 0).map_err(|x| e(&x))?;
            } else {
                m.set_kv_mode(ctx, mode).map_err(|x| e(&x))?;
            }
            let mut total = 0f64;
            for s in 0..steps + 2 {
                if !paged {
                    m.assume_filled(ctx, DEPTH - 2).map_err(|x| e(&x))?;
                }
                let t = Instant::now();
                if paged {
                    m.forward_paged_alone(ctx, &[504], DEPTH - 2, 1)
                        .map_err(|x| e(&x))?;
                } else {
                    m.forward(ctx, &[504], false).map_err(|x| e(&x))?;
                }
                if s >= 2 {
                    total += t.elapsed().as_secs_f64();
                }
            }
            times[i].push(total / steps as f64 * 1e3);
            bytes[i] = m.kv_bytes();
        }
    }
    let mut rows = Vec::new();
    for (i, &(paged, mode)) in modes.iter().enumerate() {
        let t = &mut times[i];
        t.sort_by(f64::total_cmp);
        let step_ms = t[t.len() / 2];
        let name = format!("{} {mode}", if paged { "paged" } else { "contiguous" });
        println!(
            "decode at depth {DEPTH}, {name}: {step_ms:.1} ms a step (rounds: {t:.1?}), KV {} bytes",
            bytes[i]
        );
        rows.push(DepthRow {
            cache: name,
            step_ms,
            tokens_per_s: 1e3 / step_ms,
            kv_bytes: bytes[i],
            bytes_per_position: bytes[i] as f64 / DEPTH as f64,
        });
    }
    Ok(rows)
}

/// llama-server: `LLAMA_SERVER`, else the build of tools/build-llama-cpp.sh.
fn llama_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LLAMA_SERVER") {
        return Some(PathBuf::from(p));
    }
    let built = Path::new("target/llama.cpp/build/bin/llama-server");
    built.is_file().then(|| built.to_path_buf())
}

/// A llama-server child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts llama-server on `port` over `model` with 8 slots on its CPU back end, and waits for /health.
fn start_llama_server(bin: &Path, model: &Path, port: u16) -> Result<Child, String> {
    let child = std::process::Command::new(bin)
        .args(["-m", &model.display().to_string()])
        .args(["-np", "8", "-c", "8192", "-t", "2", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        // Its Vulkan devices hidden: llama.cpp's CPU back end, as bench llm's CPU rows.
        .env("GGML_VK_VISIBLE_DEVICES", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let child = Child(child);
    let health = format!("http://127.0.0.1:{port}/health");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if ureq::get(&health).call().is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err("llama-server did not answer /health within 120 s".into())
}

pub fn run(quick: bool) -> Result<ServeReport, String> {
    let path = PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let g = wring_gguf::Gguf::open(&path)
        .map_err(|x| format!("{x} (fetch it with `bash .ci/fetch-model.sh`)"))?;
    let tok = wring_llm::GgufTokenizer::from_gguf(&g).map_err(|x| e(&x))?;
    let (per_client, max_tokens) = if quick { (1, 16) } else { (3, 64) };
    // The shared prefix: a paragraph repeated to about 1,024 tokens.
    let paragraph = "The river runs through the old town, past the market and the mill, and the people who \
                     live along it have told stories about it for as long as anyone remembers. ";
    let per = tok.encode(paragraph).map_err(|x| e(&x))?.len().max(1);
    let prefix_text = paragraph.repeat(1024 / per);
    let prefix_tokens = tok.encode(&prefix_text).map_err(|x| e(&x))?.len();
    let scale_ctx = wring_runtime::Context::new(wring_runtime::ContextOptions {
        q8_activations: true,
        ..Default::default()
    })
    .map_err(|x| e(&x))?;
    let scale = scaling(&scale_ctx, &g, &tok, if quick { 8 } else { 48 })?;
    let depth_rows = depth(
        &scale_ctx,
        &g,
        if quick { 2 } else { 8 },
        if quick { 1 } else { 5 },
    )?;
    drop(scale_ctx);
    let (adapter_tx, adapter_rx) = std::sync::mpsc::channel();
    let engine = wring_server::Engine::start(16, move || {
        let ctx = wring_runtime::Context::new(wring_runtime::ContextOptions {
            q8_activations: true,
            ..Default::default()
        })?;
        let mut model = wring_llm::Llama::load(&ctx, &g, 4096, |_, _| {})?;
        model.set_paged(&ctx, wring_llm::KvMode::F16, 4096 / 16, 16)?;
        let tokenizer = wring_llm::GgufTokenizer::from_gguf(&g)?;
        let _ = adapter_tx.send(ctx.label());
        Ok(wring_server::Loaded {
            ctx,
            model,
            tokenizer,
            parallel: 8,
        })
    })
    .map_err(|x| e(&x))?;
    let adapter = adapter_rx.recv().map_err(|x| e(&x))?;
    let server = wring_server::spawn(
        "127.0.0.1:0".parse().map_err(|x| e(&x))?,
        engine,
        wring_server::ServeOptions::new("smollm2"),
    )
    .map_err(|x| e(&x))?;
    let base = format!("http://{}", server.addr);
    println!(
        "many users: 1 and 8 clients x {per_client} streaming chat requests (max_tokens {max_tokens}) on {adapter}"
    );
    // A warm-up request: pipelines are compiled once per process, not counted.
    let _ = load("warm-up", &base, 1, 1, 4);
    let wring = "wring serve --parallel 8";
    let mut loads = vec![
        load(wring, &base, 1, per_client, max_tokens),
        load(wring, &base, 8, per_client, max_tokens),
    ];
    let mut prefixes = vec![prefix(wring, &base, &prefix_text, prefix_tokens)];
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .map_err(|x| e(&x))?
        .into_string()
        .map_err(|x| e(&x))?;
    server.stop().map_err(|x| e(&x))?;
    let peer = "llama-server -np 8 (CPU)";
    let peer_note = match llama_server() {
        None => Some(
            "llama-server is not built: run tools/build-llama-cpp.sh or set LLAMA_SERVER"
                .to_string(),
        ),
        Some(bin) => match start_llama_server(&bin, &path, 18181) {
            Err(note) => Some(note),
            Ok(child) => {
                let base = "http://127.0.0.1:18181";
                let _ = load("warm-up", base, 1, 1, 4);
                loads.push(load(peer, base, 1, per_client, max_tokens));
                loads.push(load(peer, base, 8, per_client, max_tokens));
                prefixes.push(prefix(peer, base, &prefix_text, prefix_tokens));
                drop(child);
                None
            }
        },
    };
    let gain = |server: &str| {
        let tps = |c: usize| {
            loads
                .iter()
                .find(|l| l.server == server && l.clients == c)
                .map(|l| l.tokens_per_s)
        };
        Some((server.to_string(), tps(8)? / tps(1)?))
    };
    let gains = [gain(wring), gain(peer)].into_iter().flatten().collect();
    Ok(ServeReport {
        adapter,
        cpu: crate::host_cpu(),
        model: path.display().to_string(),
        requests_per_client: per_client,
        max_tokens,
        scaling: scale,
        depth: depth_rows,
        loads,
        prefix: prefixes,
        gains,
        peer_note,
        metrics,
    })
}

/// The summary table.
pub fn table(r: &ServeReport) -> String {
    let mut t = format!(
        "# Many users at once: wring serve beside llama-server\n\n\
         wring on {} (paged f16 KV cache, 8-bit decode activations, `--parallel 8`); llama-server from the \
         llama-cpp-python 0.3.36 sdist on its CPU back end (`-np 8 -c 8192 -t 2`); CPU {}. Model `{}`. Each \
         client sends {} streaming chat requests one after another (max_tokens {}, temperature 0.7); time to \
         first token from sending the request to the first content chunk (waiting included); tokens/s are \
         all clients' completion tokens over the wall time.\n\n\
         | server | clients | requests | errors | 429s | wall s | requests/s | TTFT p50 ms | TTFT p99 ms | tokens/s |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        r.adapter, r.cpu, r.model, r.requests_per_client, r.max_tokens
    );
    for l in &r.loads {
        t += &format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.3} | {:.0} | {:.0} | {:.2} |\n",
            l.server,
            l.clients,
            l.requests,
            l.errors,
            l.rejected,
            l.wall_s,
            l.requests_per_s,
            l.ttft_p50_ms,
            l.ttft_p99_ms,
            l.tokens_per_s
        );
    }
    t += "\nDecode with N sequences in every step, on the batcher directly (no HTTP; paged f16 cache, q8 \
          activations; only steps in which all N decode are timed):\n\n\
          | sequences | steps | ms a step | tokens/s | over one sequence |\n|---|---|---|---|---|\n";
    for s in &r.scaling {
        t += &format!(
            "| {} | {} | {:.1} | {:.2} | {:.2}x |\n",
            s.sequences, s.steps, s.step_ms, s.tokens_per_s, s.gain
        );
    }
    t += "\nOne sequence decoding at depth 4,096, by KV cache (q8 activations; the median of 5 rounds of 8 steps, \
          the modes timed in turn; a contiguous packed cache is \
          expanded into an f32 working cache before each layer's attention, a paged one is read as codes: KIVI's \
          q8/q4/q2 in blocks of 32, keys per channel, the sequence's last two blocks also in an f16 ring, \
          counted in its bytes):\n\n\
          | cache | ms a step | tokens/s | KV device bytes | bytes per position |\n|---|---|---|---|---|\n";
    for d in &r.depth {
        t += &format!(
            "| {} | {:.1} | {:.2} | {} | {:.0} |\n",
            d.cache, d.step_ms, d.tokens_per_s, d.kv_bytes, d.bytes_per_position
        );
    }
    t += "\n| server | batching gain (8 clients' tokens/s over 1 client's) |\n|---|---|\n";
    for (s, g) in &r.gains {
        t += &format!("| {s} | {g:.2}x |\n");
    }
    t += "\n| server | shared prefix, tokens | first TTFT ms | second TTFT ms | prefix-cache gain |\n|---|---|---|---|---|\n";
    for p in &r.prefix {
        t += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.1}x |\n",
            p.server, p.prefix_tokens, p.first_ttft_ms, p.second_ttft_ms, p.speedup
        );
    }
    if let Some(n) = &r.peer_note {
        t += &format!("\nllama-server did not run: {n}\n");
    }
    t
}
