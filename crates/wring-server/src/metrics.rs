//! The server's counters, written in Prometheus' text exposition format by `GET /metrics`. Plain atomics:
//! the engine thread and the handlers update them without a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets: from a warm short prompt on a
/// discrete GPU to a long prompt queued behind others on a software adapter.
const TTFT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counters and gauges of one server.
#[derive(Debug)]
pub struct Metrics {
    capacity: usize,
    queue_depth: AtomicI64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    prompt_micros: AtomicU64,
    generated_tokens: AtomicU64,
    decode_micros: AtomicU64,
    /// Per bucket of [`TTFT_BUCKETS`] (not cumulative; the +Inf bucket last), and the sum in microseconds.
    ttft: [AtomicU64; TTFT_BUCKETS.len() + 1],
    ttft_micros: AtomicU64,
    /// Sequences that run at once, and (after each batched step) those running, the paged cache's blocks
    /// held and in all, and the prefix index's hit rate in millionths.
    parallel: AtomicU64,
    running: AtomicU64,
    /// Requests admitted to the batch but not yet running (they wait as those in the queue do).
    batch_waiting: AtomicU64,
    kv_blocks_used: AtomicU64,
    kv_blocks: AtomicU64,
    prefix_hits_ppm: AtomicU64,
}

impl Metrics {
    /// Zeroed counters for a queue of `capacity` slots.
    pub fn new(capacity: usize) -> Metrics {
        Metrics {
            capacity,
            queue_depth: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            prompt_micros: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            decode_micros: AtomicU64::new(0),
            ttft: std::array::from_fn(|_| AtomicU64::new(0)),
            ttft_micros: AtomicU64::new(0),
            parallel: AtomicU64::new(1),
            running: AtomicU64::new(0),
            batch_waiting: AtomicU64::new(0),
            kv_blocks_used: AtomicU64::new(0),
            kv_blocks: AtomicU64::new(0),
            prefix_hits_ppm: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_parallel(&self, n: usize) {
        self.parallel.store(n as u64, Ordering::Relaxed);
    }

    /// The batch's state after a step: sequences running of `parallel`, paged-cache blocks held of
    /// `blocks`, and the prefix index's hit rate.
    pub(crate) fn batch(
        &self,
        running: usize,
        waiting: usize,
        parallel: usize,
        used: usize,
        blocks: usize,
        hit_rate: f64,
    ) {
        self.running.store(running as u64, Ordering::Relaxed);
        self.batch_waiting.store(waiting as u64, Ordering::Relaxed);
        self.parallel.store(parallel as u64, Ordering::Relaxed);
        self.kv_blocks_used.store(used as u64, Ordering::Relaxed);
        self.kv_blocks.store(blocks as u64, Ordering::Relaxed);
        self.prefix_hits_ppm
            .store((hit_rate * 1e6).round() as u64, Ordering::Relaxed);
    }

    pub(crate) fn queued(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn prompt(&self, tokens: usize, took: Duration) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.prompt_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn generated(&self, tokens: usize, took: Duration) {
        self.generated_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.decode_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn first_token(&self, after: Duration) {
        let s = after.as_secs_f64();
        let bucket = TTFT_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(TTFT_BUCKETS.len());
        self.ttft[bucket].fetch_add(1, Ordering::Relaxed);
        self.ttft_micros
            .fetch_add(after.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests waiting now (in the queue, or in the batch for a place), not those running.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth.load(Ordering::Relaxed).max(0) as usize
            + self.batch_waiting.load(Ordering::Relaxed) as usize
    }

    /// Requests refused because the queue was full.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Requests that ended because their client went away.
    pub fn cancelled_total(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |a: &AtomicU64| get(a) as f64 * 1e-6;
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "wring_queue_depth",
            "gauge",
            "Requests waiting for the model.",
            self.queue_depth().to_string(),
        );
        one(
            "wring_queue_capacity",
            "gauge",
            "Requests that may wait before new ones are refused with 429.",
            self.capacity.to_string(),
        );
        one(
            "wring_requests_total",
            "counter",
            "Generation requests accepted into the queue.",
            get(&self.accepted).to_string(),
        );
        one(
            "wring_requests_rejected_total",
            "counter",
            "Generation requests refused because the queue was full.",
            get(&self.rejected).to_string(),
        );
        one(
            "wring_requests_cancelled_total",
            "counter",
            "Generation requests stopped because the client went away.",
            get(&self.cancelled).to_string(),
        );
        one(
            "wring_requests_failed_total",
            "counter",
            "Generation requests that ended with a model error.",
            get(&self.failed).to_string(),
        );
        one(
            "wring_prompt_tokens_total",
            "counter",
            "Prompt tokens run through the model (a reused prefix counts again).",
            get(&self.prompt_tokens).to_string(),
        );
        one(
            "wring_prompt_seconds_total",
            "counter",
            "Time spent running prompts.",
            format!("{:.6}", secs(&self.prompt_micros)),
        );
        one(
            "wring_generated_tokens_total",
            "counter",
            "Tokens generated.",
            get(&self.generated_tokens).to_string(),
        );
        one(
            "wring_decode_seconds_total",
            "counter",
            "Time spent generating; generated tokens over this is the decode rate.",
            format!("{:.6}", secs(&self.decode_micros)),
        );
        let decode = secs(&self.decode_micros);
        one(
            "wring_decode_tokens_per_second",
            "gauge",
            "Generated tokens per second of generation time since the server started.",
            format!(
                "{:.3}",
                if decode > 0.0 {
                    get(&self.generated_tokens) as f64 / decode
                } else {
                    0.0
                }
            ),
        );
        one(
            "wring_batch_parallel",
            "gauge",
            "Sequences the model runs at once (--parallel; 1 when the KV cache is not paged).",
            get(&self.parallel).to_string(),
        );
        one(
            "wring_batch_running",
            "gauge",
            "Sequences running after the last step (their share of wring_batch_parallel is the batch occupancy).",
            get(&self.running).to_string(),
        );
        one(
            "wring_kv_blocks_used",
            "gauge",
            "Blocks of the paged KV cache held by running sequences (the rest are free or idle prefixes).",
            get(&self.kv_blocks_used).to_string(),
        );
        one(
            "wring_kv_blocks",
            "gauge",
            "Blocks in the paged KV cache (0 when the cache is not paged).",
            get(&self.kv_blocks).to_string(),
        );
        one(
            "wring_prefix_cache_hit_rate",
            "gauge",
            "Of the full prompt blocks looked up in the prefix index, the fraction found there.",
            format!("{:.6}", get(&self.prefix_hits_ppm) as f64 * 1e-6),
        );
        let name = "wring_time_to_first_token_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From queueing a request to its first sampled token.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, b) in self.ttft.iter().enumerate() {
            cumulative += get(b);
            let le = TTFT_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |v| v.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {:.6}", secs(&self.ttft_micros));
        let _ = writeln!(out, "{name}_count {cumulative}");
        out
    }
}
