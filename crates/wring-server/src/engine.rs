//! The one thread that owns the device context and the model: jobs arrive through a bounded queue and
//! stream their text back as events. With a paged KV cache the thread runs continuous batching
//! (`wring_llm::Batcher`): every running job decodes a token in each forward step, a waiting prompt joins
//! in chunks, and a job that ends frees its place for the next at once. Otherwise jobs run one at a time,
//! in order, reusing the cached prefix of the previous one. The GPU work is blocking, so it stays off the
//! async runtime entirely; handlers only tokenize, enqueue and relay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use wring_llm::{Batcher, Cancel, GgufTokenizer, Llama, LlmError, Sampler, TextStream};
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
    /// Jobs that run at once when the model's KV cache is paged (`Llama::set_paged`); with any other
    /// cache jobs run one at a time.
    pub parallel: usize,
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
    /// One permit per request in the server, running or waiting: the queue's capacity plus those running.
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
                    let parallel = match loaded.model.paged() {
                        Some(_) => loaded.parallel.max(1),
                        None => 1,
                    };
                    let mut worker = Worker {
                        ctx: loaded.ctx,
                        model: loaded.model,
                        tokenizer: tokenizer.clone(),
                        cached: Vec::new(),
                        metrics: m,
                    };
                    let context = worker.model.max_context;
                    if worker.model.paged().is_some() {
                        match Batcher::new(&worker.model, parallel, PROMPT_CHUNK) {
                            Ok(batcher) => {
                                let _ = ready_tx.send(Ok((tokenizer, context, parallel)));
                                worker.run_batched(rx, batcher);
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    } else {
                        let _ = ready_tx.send(Ok((tokenizer, context, 1)));
                        worker.run(rx);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| LlmError::Request(format!("cannot start the engine thread: {e}")))?;
        let (tokenizer, context, parallel) = ready_rx
            .recv()
            .map_err(|_| LlmError::Request("the engine thread ended while loading".into()))??;
        metrics.set_parallel(parallel);
        Ok(Engine {
            jobs,
            slots: Arc::new(tokio::sync::Semaphore::new(queue + parallel)),
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

/// Prompt tokens a batched step takes from one waiting prompt (chunked prefill): long prompts never stall
/// the running sequences' decoding for more than a chunk's time.
const PROMPT_CHUNK: usize = 256;

/// A job the batcher runs, with what the worker needs to relay it.
struct BatchJob<'t> {
    job: Job,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    stream: TextStream<'t>,
    generated: usize,
    admitted: Instant,
    decode: Option<Instant>,
    /// A stop string ended the text (the batcher reports the ending as a cancellation).
    stopped: bool,
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

    /// Continuous batching: jobs join the batcher as they arrive (the thread blocks only when it is idle),
    /// every step runs one forward over all of them, and each token's text goes to its job's client.
    fn run_batched(&mut self, mut rx: mpsc::UnboundedReceiver<Queued>, mut batcher: Batcher) {
        let tokenizer = self.tokenizer.clone();
        let mut live: HashMap<u64, BatchJob<'_>> = HashMap::new();
        let mut next_id = 0u64;
        let capacity = batcher.capacity();
        loop {
            let mut arrived = Vec::new();
            if batcher.is_idle() {
                match rx.blocking_recv() {
                    Some(q) => arrived.push(q),
                    None => return,
                }
            }
            while let Ok(q) = rx.try_recv() {
                arrived.push(q);
            }
            for Queued { job, slot } in arrived {
                self.metrics.queued(-1);
                if job.cancel.is_cancelled() || job.events.is_closed() {
                    self.metrics.cancelled();
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let req = wring_llm::batch::Request {
                    prompt: job.prompt.clone(),
                    sampler: job.sampler.clone(),
                    stop: tokenizer.stop_tokens.clone(),
                    max_tokens: job.max_tokens,
                    cancel: job.cancel.clone(),
                };
                if let Err(e) = batcher.submit(id, req) {
                    drop(slot);
                    self.metrics.failed();
                    let _ = job.events.send(Event::Error(e.to_string()));
                    continue;
                }
                let stream = TextStream::with_stops(&tokenizer, &job.stops);
                live.insert(
                    id,
                    BatchJob {
                        job,
                        slot: Some(slot),
                        stream,
                        generated: 0,
                        admitted: Instant::now(),
                        decode: None,
                        stopped: false,
                    },
                );
            }
            // A client that went away ends its sequence before the step.
            for (&id, j) in &live {
                if j.job.events.is_closed() {
                    batcher.cancel(id);
                }
            }
            let events = match batcher.step(&mut self.model, &self.ctx) {
                Ok(events) => events,
                Err(e) => {
                    // The pools may hold part of a step: every live job fails, and the next start over.
                    tracing::warn!("batched step failed: {e}");
                    for id in batcher.abort_all() {
                        if let Some(j) = live.remove(&id) {
                            self.metrics.failed();
                            let _ = j.job.events.send(Event::Error(e.to_string()));
                        }
                    }
                    continue;
                }
            };
            for event in events {
                match event {
                    wring_llm::Event::Token { id, token } => {
                        let Some(j) = live.get_mut(&id) else { continue };
                        if j.generated == 0 {
                            self.metrics.first_token(j.job.queued_at.elapsed());
                            self.metrics
                                .prompt(j.job.prompt.len(), j.admitted.elapsed());
                            j.decode = Some(Instant::now());
                        }
                        j.generated += 1;
                        match j.stream.push(token) {
                            Ok(piece) => {
                                if !piece.is_empty()
                                    && j.job.events.send(Event::Text(piece)).is_err()
                                {
                                    batcher.cancel(id);
                                } else if j.stream.stopped() {
                                    j.stopped = true;
                                    batcher.cancel(id);
                                }
                            }
                            Err(e) => {
                                batcher.cancel(id);
                                if let Some(j) = live.remove(&id) {
                                    self.metrics.failed();
                                    let _ = j.job.events.send(Event::Error(e.to_string()));
                                }
                            }
                        }
                    }
                    wring_llm::Event::Finished { id, reason } => {
                        let Some(mut j) = live.remove(&id) else {
                            continue;
                        };
                        // A stop string may end the text on the step that reached max_tokens.
                        let reason = match reason {
                            _ if j.stopped => FinishReason::Stop,
                            wring_llm::Finish::Stop => FinishReason::Stop,
                            wring_llm::Finish::Length => FinishReason::Length,
                            wring_llm::Finish::Cancelled => {
                                self.metrics.cancelled();
                                FinishReason::Cancelled
                            }
                        };
                        let tail = j.stream.finish();
                        if !tail.is_empty() {
                            let _ = j.job.events.send(Event::Text(tail));
                        }
                        if let Some(d) = j.decode {
                            self.metrics.generated(j.generated, d.elapsed());
                        }
                        drop(j.slot.take());
                        let _ = j.job.events.send(Event::Done(Finish {
                            reason,
                            prompt_tokens: j.job.prompt.len(),
                            completion_tokens: j.generated,
                        }));
                    }
                }
            }
            let pool = batcher.pool();
            self.metrics.batch(
                batcher.running(),
                batcher.waiting(),
                capacity,
                pool.blocks() - pool.available(),
                pool.blocks(),
                pool.hit_rate(),
            );
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
