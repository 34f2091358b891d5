//! Continuous batching's plan (run by [`crate::batch::Batcher`]): which sequences a step runs. Every
//! running sequence past its prompt decodes one token; prompts take chunks of at most `chunk` tokens in all
//! per step (chunked prefill, so a long prompt never stalls the others' decoding, and several short ones
//! start together); a waiting request joins as soon as a place and its blocks are free, unless a running
//! prompt is still computing its first block, which it then waits for so as to share it. When the block pool runs out, the
//! newest running sequence is preempted: its blocks are released and it goes back to the front of the
//! queue with its generated tokens appended to its prompt, to be recomputed later (never an out-of-memory
//! error). Positions enter the pool's prefix index only once a step has computed them.

use std::collections::VecDeque;

use crate::paged::{BlockPool, BlockTable};

/// A sequence's id, as the caller names it.
pub type SeqId = u64;

/// What one step computes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepPlan {
    /// Sequences decoding one token each (their last token's position).
    pub decode: Vec<SeqId>,
    /// Chunks of prompts, at most `chunk` tokens together: each an id and the prompt positions
    /// `start..end` (never the prompt's last token: that is the sequence's first decode row).
    pub prefill: Vec<(SeqId, usize, usize)>,
    /// Sequences preempted by this plan (back in the queue; their computed values are gone).
    pub preempted: Vec<SeqId>,
}

#[derive(Debug)]
struct Running {
    id: SeqId,
    /// The tokens to have computed: the prompt, then each generated token.
    tokens: Vec<u32>,
    table: BlockTable,
    /// Positions computed so far.
    done: usize,
    /// Its tail in a code pool: the smallest not held by another running sequence when it was admitted,
    /// so tails stay below the most sequences that run at once.
    tail: u32,
    /// Positions its prompt found in the prefix cache when it was admitted.
    reused: usize,
}

/// The scheduler's state: the waiting queue, the running set and the block pool.
#[derive(Debug)]
pub struct Scheduler {
    pool: BlockPool,
    waiting: VecDeque<(SeqId, Vec<u32>)>,
    running: Vec<Running>,
    max_running: usize,
    chunk: usize,
}

impl Scheduler {
    /// At most `max_running` sequences at once over `pool`, prompts taken `chunk` tokens a step.
    pub fn new(pool: BlockPool, max_running: usize, chunk: usize) -> Scheduler {
        Scheduler {
            pool,
            waiting: VecDeque::new(),
            running: Vec::new(),
            max_running: max_running.max(1),
            chunk: chunk.max(1),
        }
    }

    /// Queues a request (in arrival order). An empty prompt is refused: a sequence starts from at least
    /// one token.
    pub fn submit(&mut self, id: SeqId, prompt: Vec<u32>) -> Result<(), crate::LlmError> {
        if prompt.is_empty() {
            return Err(crate::LlmError::Request("an empty prompt".into()));
        }
        self.waiting.push_back((id, prompt));
        Ok(())
    }

    /// Sequences running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The pool (for its occupancy and prefix hit rate).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// The block table of running sequence `id`.
    pub fn table(&self, id: SeqId) -> Option<&BlockTable> {
        self.running.iter().find(|r| r.id == id).map(|r| &r.table)
    }

    /// The rows `plan` runs, decode rows first (in `plan.decode`'s order, so that their logits lead the
    /// step's), then the prompt chunk: each sequence's tokens, first position and block table.
    pub fn rows(&self, plan: &StepPlan) -> Vec<crate::model::SeqRows<'_>> {
        let find = |id: SeqId| self.running.iter().find(|r| r.id == id);
        let mut out = Vec::new();
        for r in plan.decode.iter().filter_map(|&id| find(id)) {
            out.push(crate::model::SeqRows {
                tokens: &r.tokens[r.done..r.done + 1],
                pos0: r.done,
                table: &r.table.blocks,
                tail: r.tail,
                reused: r.reused,
            });
        }
        for r in plan
            .prefill
            .iter()
            .filter_map(|&(id, start, end)| find(id).map(|r| (r, start, end)))
        {
            let (r, start, end) = r;
            out.push(crate::model::SeqRows {
                tokens: &r.tokens[start..end],
                pos0: start,
                table: &r.table.blocks,
                tail: r.tail,
                reused: r.reused,
            });
        }
        out
    }

    /// Preempts the newest running sequence: releases its blocks and queues it first with what it has
    /// generated appended to its prompt.
    fn preempt_newest(&mut self, plan: &mut StepPlan) -> bool {
        let Some(r) = self.running.pop() else {
            return false;
        };
        self.pool.release(r.table);
        plan.decode.retain(|&d| d != r.id);
        plan.prefill.retain(|p| p.0 != r.id);
        plan.preempted.push(r.id);
        self.waiting.push_front((r.id, r.tokens));
        true
    }

    /// Plans the next step.
    pub fn plan(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        // Decode rows: each sequence past its prompt needs one more position.
        let mut i = 0;
        while i < self.running.len() {
            let r = &self.running[i];
            if r.done + 1 < r.tokens.len() {
                i += 1;
                continue;
            }
            let (id, next) = (r.id, r.tokens[r.done]);
            let mut placed = false;
            while !placed {
                let r = &mut self.running[i];
                // The position is in the table already (a prompt's last token), or gets a place now.
                if r.table.len > r.done || self.pool.append(&mut r.table, next).is_ok() {
                    placed = true;
                } else if !self.preempt_newest(&mut plan) {
                    break;
                } else if i >= self.running.len() {
                    // The sequence preempted was this one.
                    break;
                }
            }
            if placed && i < self.running.len() && self.running[i].id == id {
                plan.decode.push(id);
                i += 1;
            }
        }
        // Prompt chunks within a budget of `chunk` tokens: the running sequences still in their prompts
        // first (oldest first), then newly admitted ones, so that several short prompts start together.
        let mut budget = self.chunk;
        for r in &self.running {
            if budget == 0 {
                break;
            }
            if r.done + 1 < r.tokens.len() {
                let end = (r.done + budget).min(r.tokens.len() - 1);
                plan.prefill.push((r.id, r.done, end));
                budget -= end - r.done;
            }
        }
        while budget > 0 && self.running.len() < self.max_running {
            let Some((id, prompt)) = self.waiting.pop_front() else {
                break;
            };
            // A prompt whose first block a running prompt is computing waits for it, so that it finds
            // the block in the prefix index instead of computing it again (and stays first in line).
            let b = self.pool.block();
            let pending = prompt.len() > b
                && self
                    .running
                    .iter()
                    .any(|r| r.done < b && r.tokens.len() > b && r.tokens[..b] == prompt[..b]);
            if pending {
                self.waiting.push_front((id, prompt));
                break;
            }
            match self.pool.admit(&prompt) {
                Ok((table, reused)) => {
                    // The prompt's last token is left to the sequence's first decode row, which samples
                    // the first generated token (the reused positions are always fewer than the prompt's).
                    let end = (reused + budget).min(prompt.len() - 1);
                    if end > reused {
                        plan.prefill.push((id, reused, end));
                        budget -= end - reused;
                    }
                    let tail = (0..)
                        .find(|t| self.running.iter().all(|r| r.tail != *t))
                        .expect("fewer running sequences than tails");
                    self.running.push(Running {
                        id,
                        tokens: prompt,
                        table,
                        done: reused,
                        tail,
                        reused,
                    });
                }
                Err(_) => {
                    self.waiting.push_front((id, prompt));
                    break;
                }
            }
        }
        plan
    }

    /// Records that `plan` ran: the decoded sequences produced `sampled` tokens (in `plan.decode`'s
    /// order) and the prefill chunk's positions are computed.
    pub fn ran(&mut self, plan: &StepPlan, sampled: &[u32]) {
        for (&id, &tok) in plan.decode.iter().zip(sampled) {
            if let Some(r) = self.running.iter_mut().find(|r| r.id == id) {
                r.done += 1;
                r.tokens.push(tok);
                self.pool.computed(&mut r.table, r.done);
            }
        }
        for &(id, _, end) in &plan.prefill {
            if let Some(r) = self.running.iter_mut().find(|r| r.id == id) {
                r.done = end;
                self.pool.computed(&mut r.table, r.done);
            }
        }
    }

    /// Ends sequence `id` (finished or cancelled): its place and blocks are free for the next step.
    pub fn finish(&mut self, id: SeqId) {
        if let Some(at) = self.running.iter().position(|r| r.id == id) {
            let r = self.running.remove(at);
            self.pool.release(r.table);
        }
        self.waiting.retain(|(w, _)| *w != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs steps until every sequence has generated `n` tokens (the sampled token is the step count),
    /// finishing each as it does; returns each step's plan.
    fn drive(s: &mut Scheduler, n: usize, ids: &[SeqId]) -> Vec<StepPlan> {
        let mut out = Vec::new();
        let mut produced: std::collections::HashMap<SeqId, usize> = Default::default();
        for step in 0..10_000u32 {
            if s.running() == 0 && s.waiting() == 0 {
                break;
            }
            let plan = s.plan();
            let sampled: Vec<u32> = plan.decode.iter().map(|_| step).collect();
            s.ran(&plan, &sampled);
            for &id in &plan.decode {
                let c = produced.entry(id).or_default();
                *c += 1;
                if *c == n {
                    s.finish(id);
                }
            }
            for id in &plan.preempted {
                produced.insert(*id, 0);
            }
            out.push(plan);
        }
        for id in ids {
            assert_eq!(produced.get(id), Some(&n), "sequence {id}");
        }
        out
    }

    #[test]
    fn sequences_decode_together_and_prompts_come_in_chunks() {
        let mut s = Scheduler::new(BlockPool::new(64, 4), 4, 8);
        for id in 0..3 {
            s.submit(id, (0..20).map(|t| t + 100 * id as u32).collect())
                .unwrap();
        }
        let plans = drive(&mut s, 10, &[0, 1, 2]);
        // No chunk is longer than 8 tokens, and some step decodes all three at once.
        assert!(
            plans
                .iter()
                .all(|p| p.prefill.iter().map(|(_, a, b)| b - a).sum::<usize>() <= 8)
        );
        assert!(plans.iter().any(|p| p.decode.len() == 3));
        assert_eq!(s.pool().available(), 64);
    }

    #[test]
    fn a_tiny_pool_preempts_the_newest_and_everyone_finishes() {
        // 6 blocks of 4: two 9-token prompts fit, but not both growing to 17 positions.
        let mut s = Scheduler::new(BlockPool::new(6, 4), 4, 16);
        s.submit(1, (0..9).collect()).unwrap();
        s.submit(2, (50..59).collect()).unwrap();
        assert!(s.submit(3, Vec::new()).is_err());
        let plans = drive(&mut s, 8, &[1, 2]);
        assert!(plans.iter().any(|p| p.preempted == vec![2]));
        assert_eq!(s.pool().available(), 6);
    }

    #[test]
    fn a_shared_prefix_is_not_computed_twice() {
        let mut s = Scheduler::new(BlockPool::new(64, 4), 4, 64);
        let system: Vec<u32> = (0..16).collect();
        s.submit(1, [system.clone(), vec![70, 71]].concat())
            .unwrap();
        let first = s.plan();
        assert_eq!(first.prefill, vec![(1, 0, 17)]);
        s.ran(&first, &[]);
        s.submit(2, [system.clone(), vec![80, 81, 82]].concat())
            .unwrap();
        let mut second = s.plan();
        while !second.prefill.iter().any(|p| p.0 == 2) {
            s.ran(&second, &vec![0; second.decode.len()]);
            second = s.plan();
        }
        assert_eq!(second.prefill, vec![(2, 16, 18)]);
    }

    #[test]
    fn cancelling_one_sequence_leaves_the_others() {
        let mut s = Scheduler::new(BlockPool::new(64, 4), 8, 64);
        for id in 0..8 {
            s.submit(id, vec![id as u32; 5]).unwrap();
        }
        for _ in 0..12 {
            let p = s.plan();
            s.ran(&p, &vec![1; p.decode.len()]);
        }
        assert_eq!(s.running(), 8);
        s.finish(3);
        let p = s.plan();
        assert_eq!(p.decode.len(), 7);
        assert!(!p.decode.contains(&3));
    }
}
