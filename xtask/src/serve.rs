//! `cargo xtask bench serve`: a bounded load test of `wring serve` on a loopback port. The server runs in
//! this process over the default model with a queue of Q waiting slots; Q + 1 clients (one request running,
//! Q waiting: the queue exactly at capacity) each send R streaming chat requests one after another. It
//! reports requests per second, time to first token (from sending the request to the first content chunk,
//! so the wait in the queue counts) at p50 and p99, generated tokens per second over the run, and every
//! error; at capacity there must be none.

use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one load test measured.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub adapter: String,
    pub model: String,
    /// Waiting slots of the server's queue.
    pub queue: usize,
    /// Concurrent clients (queue + 1).
    pub clients: usize,
    pub requests_per_client: usize,
    pub max_tokens: usize,
    pub requests: usize,
    /// Requests that did not end in a complete stream (any status but 200, or a stream without [DONE]).
    pub errors: usize,
    /// Of the errors, 429s.
    pub rejected: usize,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub ttft_max_ms: f64,
    /// Completion tokens (from each stream's usage chunk) over the wall time.
    pub tokens_per_s: f64,
    /// The server's /metrics after the run.
    pub metrics: String,
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
    let mut tokens = None;
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
        if first.is_none()
            && v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        {
            first = Some(sent.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n as usize);
        }
    }
    match (done, first, tokens) {
        (true, Some(f), Some(n)) => Ok((f, n)),
        (true, None, Some(0)) => Ok((sent.elapsed(), 0)),
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

pub fn run(quick: bool) -> Result<ServeReport, String> {
    let path = std::path::PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let g = wring_gguf::Gguf::open(&path)
        .map_err(|x| format!("{x} (fetch it with `bash .ci/fetch-model.sh`)"))?;
    let (queue, per_client, max_tokens) = if quick { (2, 2, 8) } else { (4, 4, 32) };
    let clients = queue + 1;
    let (adapter_tx, adapter_rx) = std::sync::mpsc::channel();
    let engine = wring_server::Engine::start(queue, move || {
        let ctx = wring_runtime::Context::new(wring_runtime::ContextOptions {
            q8_activations: true,
            ..Default::default()
        })?;
        let model = wring_llm::Llama::load(&ctx, &g, 1024, |_, _| {})?;
        let tokenizer = wring_llm::GgufTokenizer::from_gguf(&g)?;
        let _ = adapter_tx.send(ctx.label());
        Ok(wring_server::Loaded {
            ctx,
            model,
            tokenizer,
            parallel: 1,
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
    let url = format!("{base}/v1/chat/completions");
    let questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Write one sentence about the sea.",
        "What is 12 times 7?",
        "Say hello in Spanish.",
    ];
    println!(
        "load test: {clients} clients x {per_client} streaming chat requests (max_tokens {max_tokens}), queue {queue}, on {adapter}"
    );
    let start = Instant::now();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = &url;
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(600))
                        .build();
                    (0..per_client)
                        .map(|r| {
                            let q = questions[(c + r) % questions.len()];
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
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .map_err(|x| e(&x))?
        .into_string()
        .map_err(|x| e(&x))?;
    server.stop().map_err(|x| e(&x))?;
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
        eprintln!("request failed: {err}");
    }
    let report = ServeReport {
        adapter,
        model: path.display().to_string(),
        queue,
        clients,
        requests_per_client: per_client,
        max_tokens,
        requests: outcomes.len(),
        errors: errors.len(),
        rejected: errors.iter().filter(|e| e.as_str() == "status 429").count(),
        wall_s: wall,
        requests_per_s: outcomes.len() as f64 / wall,
        ttft_p50_ms: percentile(&ttft, 50.0),
        ttft_p99_ms: percentile(&ttft, 99.0),
        ttft_max_ms: ttft.last().copied().unwrap_or(0.0),
        tokens_per_s: tokens as f64 / wall,
        metrics,
    };
    Ok(report)
}

/// The summary table.
pub fn table(r: &ServeReport) -> String {
    format!(
        "# wring serve under load on {}\n\nModel `{}`, q8 activations; {} clients at once (queue {} + 1 running), {} streaming chat \
         requests each, max_tokens {}, temperature 0.7; time to first token from sending the request to the first \
         content chunk (queueing included).\n\n\
         | requests | errors | 429s | wall s | requests/s | TTFT p50 ms | TTFT p99 ms | TTFT max ms | generated tokens/s |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {:.1} | {:.3} | {:.0} | {:.0} | {:.0} | {:.2} |\n",
        r.adapter,
        r.model,
        r.clients,
        r.queue,
        r.requests_per_client,
        r.max_tokens,
        r.requests,
        r.errors,
        r.rejected,
        r.wall_s,
        r.requests_per_s,
        r.ttft_p50_ms,
        r.ttft_p99_ms,
        r.ttft_max_ms,
        r.tokens_per_s
    )
}
