//! Continuous batching: many generations at once over one model with a paged KV cache
//! ([`Llama::set_paged`]). Every [`Batcher::step`] runs one forward over the decode rows of every running
//! sequence and a chunk of one waiting prompt ([`Scheduler`]'s plan), samples each decode row with its
//! own sampler and stop rules, and reports tokens and endings as [`Event`]s. A sequence that ends frees its
//! place and blocks at once; the next request joins at the next step. The server, the batch command and
//! the Python bindings all drive this one type.

use std::collections::HashMap;

use wring_runtime::Context;

use crate::model::{Cancel, Llama};
use crate::paged::BlockPool;
use crate::schedule::{Scheduler, SeqId};
use crate::{LlmError, Sampler};

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt's token ids (at least one).
    pub prompt: Vec<u32>,
    /// How its tokens are drawn.
    pub sampler: Sampler,
    /// Tokens that end the generation (not reported).
    pub stop: Vec<u32>,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Set by whoever may stop this request; it ends before its next token.
    pub cancel: Cancel,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It sampled a stop token.
    Stop,
    /// It generated `max_tokens`.
    Length,
    /// Its cancel flag was set.
    Cancelled,
}

/// What a step produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Sequence `id` generated `token`.
    Token {
        /// The sequence.
        id: SeqId,
        /// The token it generated.
        token: u32,
    },
    /// Sequence `id` ended; its place and blocks are free.
    Finished {
        /// The sequence.
        id: SeqId,
        /// Why it ended.
        reason: Finish,
    },
}

#[derive(Debug)]
struct Live {
    sampler: Sampler,
    stop: Vec<u32>,
    max_tokens: usize,
    generated: usize,
    /// The prompt and the tokens generated (what a repeat penalty looks at).
    seen: Vec<u32>,
    cancel: Cancel,
}

/// What the batcher has done so far (for `/metrics` and benches).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    /// Forward steps run.
    pub steps: u64,
    /// Decode rows run, over all steps (divided by steps: the mean batch occupancy).
    pub decode_rows: u64,
    /// Prompt tokens computed (not counting those a shared prefix supplied).
    pub prompt_tokens: u64,
    /// Sequences preempted for lack of blocks (and recomputed later).
    pub preempted: u64,
}

/// The batch's state: the scheduler over the block pool and each live request's sampling state.
#[derive(Debug)]
pub struct Batcher {
    sched: Scheduler,
    live: HashMap<SeqId, Live>,
    /// Endings decided outside a step (requests that ask for no tokens), reported by the next one.
    pending: Vec<Event>,
    /// Positions a sequence may reach: the model's context and the pool's size, whichever is smaller.
    max_positions: usize,
    max_running: usize,
    stats: BatchStats,
}

impl Batcher {
    /// A batcher over `model`'s paged cache (set with [`Llama::set_paged`]): at most `max_running`
    /// sequences at once, prompts taken `chunk` tokens a step.
    pub fn new(model: &Llama, max_running: usize, chunk: usize) -> Result<Batcher, LlmError> {
        let shape = model.paged().ok_or_else(|| {
            LlmError::Request("batching needs a paged KV cache (Llama::set_paged)".into())
        })?;
        let pool = BlockPool::new(shape.blocks, shape.block);
        Ok(Batcher {
            sched: Scheduler::new(pool, max_running, chunk),
            live: HashMap::new(),
            pending: Vec::new(),
            max_positions: model.max_context.min(shape.positions()),
            max_running: max_running.max(1),
            stats: BatchStats::default(),
        })
    }

    /// Queues request `id` (ids must be unique among live requests). Refused before any work: an empty
    /// prompt, or one that with `max_tokens` would pass the context or the whole pool.
    pub fn submit(&mut self, id: SeqId, req: Request) -> Result<(), LlmError> {
        if self.live.contains_key(&id) {
            return Err(LlmError::Request(format!(
                "request id {id} is already live"
            )));
        }
        crate::model::check_generation(req.prompt.len(), req.max_tokens, self.max_positions)?;
        if req.max_tokens == 0 {
            self.pending.push(Event::Finished {
                id,
                reason: Finish::Length,
            });
            return Ok(());
        }
        self.sched.submit(id, req.prompt.clone())?;
        self.live.insert(
            id,
            Live {
                sampler: req.sampler,
                stop: req.stop,
                max_tokens: req.max_tokens,
                generated: 0,
                seen: req.prompt,
                cancel: req.cancel,
            },
        );
        Ok(())
    }

    /// Requests live (running or waiting).
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Sequences running (holding a place in the batch).
    pub fn running(&self) -> usize {
        self.sched.running()
    }

    /// Requests waiting for a place.
    pub fn waiting(&self) -> usize {
        self.sched.waiting()
    }

    /// The most sequences that run at once.
    pub fn capacity(&self) -> usize {
        self.max_running
    }

    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty()
    }

    /// The block pool (occupancy, prefix hit rate).
    pub fn pool(&self) -> &BlockPool {
        self.sched.pool()
    }

    /// What the batcher has done so far.
    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    /// Ends request `id` now, wherever it is (as its cancel flag would before the next step).
    pub fn cancel(&mut self, id: SeqId) -> bool {
        if self.live.remove(&id).is_some() {
            self.sched.finish(id);
            self.pending.push(Event::Finished {
                id,
                reason: Finish::Cancelled,
            });
            return true;
        }
        false
    }

    /// Ends every live request (after a step failed: the device state of a failed step is unknown);
    /// returns their ids.
    pub fn abort_all(&mut self) -> Vec<SeqId> {
        let ids: Vec<SeqId> = self.live.keys().copied().collect();
        for &id in &ids {
            self.live.remove(&id);
            self.sched.finish(id);
        }
        ids
    }

    /// Runs one step: cancelled requests end, the scheduler's plan runs as one forward on `model`, each
    /// decode row is sampled. Returns what happened, in order; nothing when idle.
    pub fn step(&mut self, model: &mut Llama, ctx: &Context) -> Result<Vec<Event>, LlmError> {
        let mut events = std::mem::take(&mut self.pending);
        let cancelled: Vec<SeqId> = self
            .live
            .iter()
            .filter(|(_, l)| l.cancel.is_cancelled())
            .map(|(&id, _)| id)
            .collect();
        for id in cancelled {
            self.cancel(id);
        }
        events.append(&mut self.pending);
        let plan = self.sched.plan();
        self.stats.preempted += plan.preempted.len() as u64;
        if plan.decode.is_empty() && plan.prefill.is_empty() {
            return Ok(events);
        }
        let logits = {
            let rows = self.sched.rows(&plan);
            model.forward_paged(ctx, &rows, plan.decode.len())?
        };
        self.stats.steps += 1;
        self.stats.decode_rows += plan.decode.len() as u64;
        for &(_, a, b) in &plan.prefill {
            self.stats.prompt_tokens += (b - a) as u64;
        }
        let vocab = model.cfg.vocab;
        let mut sampled = Vec::with_capacity(plan.decode.len());
        let mut ended = Vec::new();
        for (i, &id) in plan.decode.iter().enumerate() {
            let live = self
                .live
                .get_mut(&id)
                .expect("every scheduled sequence is live");
            let token = live
                .sampler
                .sample(&logits[i * vocab..(i + 1) * vocab], &live.seen)?;
            sampled.push(token);
            if live.stop.contains(&token) {
                ended.push((id, Finish::Stop));
                continue;
            }
            live.generated += 1;
            live.seen.push(token);
            events.push(Event::Token { id, token });
            if live.generated >= live.max_tokens {
                ended.push((id, Finish::Length));
            }
        }
        self.sched.ran(&plan, &sampled);
        for (id, reason) in ended {
            self.live.remove(&id);
            self.sched.finish(id);
            events.push(Event::Finished { id, reason });
        }
        Ok(events)
    }
}

/// One finished text of [`generate_texts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The generated text, ending before the first stop string.
    pub text: String,
    /// Why it ended (a stop string counts as [`Finish::Stop`]).
    pub finish: Finish,
    /// Tokens generated.
    pub tokens: usize,
}

/// Generates a text for every request at once through a batcher over `model`'s paged cache, at most
/// `parallel` at a time: each request's tokens decoded with `tok`, ending before the first of its stop
/// strings (`stops`, beside each request). Returns the texts in the requests' order.
pub fn generate_texts(
    model: &mut Llama,
    ctx: &Context,
    tok: &crate::GgufTokenizer,
    requests: Vec<(Request, Vec<String>)>,
    parallel: usize,
) -> Result<Vec<Text>, LlmError> {
    let mut b = Batcher::new(model, parallel, 256)?;
    let n = requests.len();
    let mut stop_lists = Vec::with_capacity(n);
    for (i, (req, stops)) in requests.into_iter().enumerate() {
        b.submit(i as SeqId, req)?;
        stop_lists.push(stops);
    }
    let mut streams: Vec<_> = stop_lists
        .iter()
        .map(|s| crate::TextStream::with_stops(tok, s))
        .collect();
    let mut out: Vec<Text> = (0..n)
        .map(|_| Text {
            text: String::new(),
            finish: Finish::Length,
            tokens: 0,
        })
        .collect();
    let mut stopped = vec![false; n];
    while !b.is_idle() {
        for event in b.step(model, ctx)? {
            match event {
                Event::Token { id, token } => {
                    let i = id as usize;
                    out[i].tokens += 1;
                    out[i].text += &streams[i].push(token)?;
                    if streams[i].stopped() {
                        stopped[i] = true;
                        b.cancel(id);
                    }
                }
                Event::Finished { id, reason } => {
                    let i = id as usize;
                    out[i].text += &streams[i].finish();
                    out[i].finish = if stopped[i] { Finish::Stop } else { reason };
                }
            }
        }
    }
    Ok(out)
}
