//! The one thread that owns the device context and the model: jobs arrive through a bounded queue and run
//! one at a time, in order, each streaming its text back as events. The GPU work is blocking, so it stays
//! off the async runtime entirely; handlers only tokenize, enqueue and relay.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use wring_llm::{Cancel, GgufTokenizer, Llama, LlmError, Sampler, TextStream};
use wring_runtime::Context;

use crate::metrics::Metrics;

/// What a loader hands the engine: the device context, the model on it and the model's tokenizer.
#[derive(Debug)]
pub struct Loaded {
    /// The device context the model's tensors live on.
    pub ctx: Context,
    /// The model, with its KV cache sized for the longest request the server accepts.
    pub model: Llama,
    /// The model's tokenizer (special tokens, chat template).
    pub tokenizer: GgufTokenizer,
}

/// Why a generation ended, in the OpenAI API's words where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The client went away or the request was cancelled.
    Cancelled,
}

impl FinishReason {
    /// The `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// The end of a job: why, and the token counts the `usage` object reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// Why generation ended.
    pub reason: FinishReason,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (a stop token is not counted; tokens up to a stop string are).
    pub completion_tokens: usize,
}

/// What a running job sends back.
#[derive(Debug)]
pub enum Event {
    /// Text that will not be taken back (whole characters, never part of a stop string).
    Text(String),
    /// The job ended.
    Done(Finish),
    /// The job failed; the model's cache was reset.
    Error(String),
}

/// One generation request, tokenized and checked against the context by the handler.
#[derive(Debug)]
pub struct Job {
    /// The prompt's token ids (not empty).
    pub prompt: Vec<u32>,
    /// Sampling settings, seeded.
    pub sampler: Sampler,
    /// At most this many tokens are generated.
    pub max_tokens: usize,
    /// Stop strings (the text ends before the first one).
    pub stops: Vec<String>,
    /// Set when the client goes away; checked before every token.
    pub cancel: Cancel,
    /// Where the text goes. Unbounded so that a slow client never stalls the device; `max_tokens` bounds it.
    pub events: mpsc::UnboundedSender<Event>,
    /// When the job was queued (time to first token counts the wait).
    pub queued_at: Instant,
}

/// A job with its place in the line: the permit is given back by the engine before the job's last event is
/// sent, so a client that sends its next request the moment it has its answer always finds the place free.
#[derive(Debug)]
struct Queued {
    job: Job,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// The handle the HTTP side holds: the queue's sending end and what it needs to check requests.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: mpsc::UnboundedSender<Queued>,
    /// One permit per request in the server, running or waiting: the queue's capacity plus the one running.
    slots: Arc<tokio::sync::Semaphore>,
    tokenizer: Arc<GgufTokenizer>,
    context: usize,
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// The queue refused a job.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// Every queue slot is taken.
    #[error("the server is busy: {0} requests are already waiting")]
    Full(usize),
    /// The engine thread has stopped (the model failed in a way it cannot recover from).
    #[error("the model is not running")]
    Stopped,
}

impl Engine {
    /// Starts the engine thread, loads the model there with `load` (the device context is created on the
    /// thread that uses it) and returns once loading is done. `queue` is how many requests may wait
    /// while one runs.
    pub fn start<F>(queue: usize, load: F) -> Result<Engine, LlmError>
    where
        F: FnOnce() -> Result<Loaded, LlmError> + Send + 'static,
    {
        if queue == 0 {
            return Err(LlmError::Request(
                "the request queue needs at least one slot".into(),
            ));
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let metrics = Arc::new(Metrics::new(queue));
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("wring-engine".into())
            .spawn(move || match load() {
                Ok(loaded) => {
                    let tokenizer = Arc::new(loaded.tokenizer);
                    let mut worker = Worker {
                        ctx: loaded.ctx,
                        model: loaded.model,
                        tokenizer: tokenizer.clone(),
                        cached: Vec::new(),
                        metrics: m,
                    };
                    let _ = ready_tx.send(Ok((tokenizer, worker.model.max_context)));
                    worker.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| LlmError::Request(format!("cannot start the engine thread: {e}")))?;
        let (tokenizer, context) = ready_rx
            .recv()
            .map_err(|_| LlmError::Request("the engine thread ended while loading".into()))??;
        Ok(Engine {
            jobs,
            slots: Arc::new(tokio::sync::Semaphore::new(queue + 1)),
            tokenizer,
            context,
            capacity: queue,
            metrics,
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// Positions the model's KV cache holds: prompt plus generated tokens may not exceed it.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Queues a job, or refuses it at once when every slot is taken: a client learns it should retry instead
    /// of waiting behind an unbounded line.
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.rejected();
            return Err(Rejected::Full(self.capacity));
        };
        self.metrics.queued(1);
        if self.jobs.send(Queued { job, slot }).is_err() {
            self.metrics.queued(-1);
            return Err(Rejected::Stopped);
        }
        self.metrics.accepted();
        Ok(())
    }
}

struct Worker {
    ctx: Context,
    model: Llama,
    tokenizer: Arc<GgufTokenizer>,
    /// The ids the KV cache holds, so a request that extends the previous one (the next turn of a chat)
    /// only runs its new tokens.
    cached: Vec<u32>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        while let Some(Queued { job, slot }) = rx.blocking_recv() {
            self.metrics.queued(-1);
            if job.cancel.is_cancelled() || job.events.is_closed() {
                self.metrics.cancelled();
                continue;
            }
            let result = self.generate(&job);
            drop(slot);
            match result {
                Ok(finish) => {
                    if finish.reason == FinishReason::Cancelled {
                        self.metrics.cancelled();
                    }
                    let _ = job.events.send(Event::Done(finish));
                }
                Err(e) => {
                    // The cache may hold part of a step: start the next request from an empty one.
                    self.model.reset();
                    self.cached.clear();
                    self.metrics.failed();
                    tracing::warn!("generation failed: {e}");
                    let _ = job.events.send(Event::Error(e.to_string()));
                }
            }
        }
    }

    fn generate(&mut self, job: &Job) -> Result<Finish, LlmError> {
        let keep = self
            .cached
            .iter()
            .zip(&job.prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The cache cannot be cut back to a shorter prefix, and the last prompt token must run to give
        // logits: otherwise start over.
        if keep < self.cached.len() || keep == job.prompt.len() {
            self.model.reset();
            self.cached.clear();
        }
        let start = Instant::now();
        let mut logits = self
            .model
            .forward(&self.ctx, &job.prompt[self.cached.len()..], false)?;
        self.metrics.prompt(job.prompt.len(), start.elapsed());
        self.cached.clone_from(&job.prompt);
        let mut sampler = job.sampler.clone();
        let mut stream = TextStream::with_stops(&self.tokenizer, &job.stops);
        let decode = Instant::now();
        let mut generated = 0;
        let mut reason = FinishReason::Length;
        while generated < job.max_tokens {
            if job.cancel.is_cancelled() {
                reason = FinishReason::Cancelled;
                break;
            }
            let next = sampler.sample(&logits, &self.cached)?;
            if generated == 0 {
                self.metrics.first_token(job.queued_at.elapsed());
            }
            if self.tokenizer.stop_tokens.contains(&next) {
                reason = FinishReason::Stop;
                break;
            }
            generated += 1;
            let piece = stream.push(next)?;
            if !piece.is_empty() && job.events.send(Event::Text(piece)).is_err() {
                reason = FinishReason::Cancelled;
                break;
            }
            if stream.stopped() {
                reason = FinishReason::Stop;
                break;
            }
            if generated < job.max_tokens {
                logits = self.model.forward(&self.ctx, &[next], false)?;
                self.cached.push(next);
            }
        }
        let tail = stream.finish();
        if !tail.is_empty() {
            let _ = job.events.send(Event::Text(tail));
        }
        self.metrics.generated(generated, decode.elapsed());
        Ok(Finish {
            reason,
            prompt_tokens: job.prompt.len(),
            completion_tokens: generated,
        })
    }
}
