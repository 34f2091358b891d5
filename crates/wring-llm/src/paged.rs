//! The bookkeeping of a paged KV cache (vLLM's PagedAttention; issue 32): a pool of fixed-size blocks of
//! positions, a block table per sequence, reference counts so that sequences share the full blocks of a
//! common prefix, and a prefix index keyed by a chained hash of each full block's tokens, whose blocks no
//! sequence holds any more are kept for reuse and evicted least recently used first.
//!
//! This module decides which block holds which positions; it owns no device memory. A block's hash
//! chains its parent's, so equal tokens at different depths (or after different prefixes) never share a
//! block: a block's keys and values depend on every position before it.

use std::collections::{BTreeMap, HashMap};

/// The pool has no block left for a request (every block is held by a running sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the KV block pool is full ({blocks} blocks of {block} positions, all held)")]
pub struct PoolFull {
    /// Blocks in the pool.
    pub blocks: usize,
    /// Positions per block.
    pub block: usize,
}

/// One sequence's blocks, in position order, and how many positions it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockTable {
    /// Block ids, position `p` in block `blocks[p / block]`.
    pub blocks: Vec<u32>,
    /// Positions written.
    pub len: usize,
    /// The chained hash of each full block whose keys and values are computed (the prefix index's keys).
    hashes: Vec<u64>,
    /// The token of every position (what the hashes are of).
    tokens: Vec<u32>,
}

/// The pool.
#[derive(Debug, Clone)]
pub struct BlockPool {
    block: usize,
    refs: Vec<u32>,
    /// The hash a block is indexed under, if it is a full block of some prefix.
    hash_of: Vec<Option<u64>>,
    free: Vec<u32>,
    index: HashMap<u64, u32>,
    /// Indexed blocks no sequence holds, by the tick they were released at (oldest first).
    idle: BTreeMap<u64, u32>,
    idle_tick: Vec<u64>,
    tick: u64,
    lookups: u64,
    hits: u64,
}

/// The hash of a full block of `tokens` after the prefix whose last full block hashed to `parent` (FNV-1a
/// over the parent and the tokens: stable across runs, so an index could be persisted).
fn chain(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in parent
        .to_le_bytes()
        .into_iter()
        .chain(tokens.iter().flat_map(|t| t.to_le_bytes()))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl BlockPool {
    /// A pool of `blocks` blocks of `block` positions each (both at least 1).
    pub fn new(blocks: usize, block: usize) -> BlockPool {
        let blocks = blocks.clamp(1, u32::MAX as usize);
        BlockPool {
            block: block.max(1),
            refs: vec![0; blocks],
            hash_of: vec![None; blocks],
            // Popped from the end: block 0 first.
            free: (0..blocks as u32).rev().collect(),
            index: HashMap::new(),
            idle: BTreeMap::new(),
            idle_tick: vec![0; blocks],
            tick: 0,
            lookups: 0,
            hits: 0,
        }
    }

    /// Positions per block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Blocks in the pool.
    pub fn blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks no running sequence holds (free, or idle in the prefix index).
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// Of the full prompt blocks looked up so far, the fraction found in the prefix index.
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.hits as f64 / self.lookups as f64
        }
    }

    fn full(&self) -> PoolFull {
        PoolFull {
            blocks: self.refs.len(),
            block: self.block,
        }
    }

    /// A block for new positions: a free one, else the least recently released idle one (dropped from
    /// the index).
    fn take(&mut self) -> Option<u32> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let (&tick, &id) = self.idle.iter().next()?;
                self.idle.remove(&tick);
                if let Some(h) = self.hash_of[id as usize].take() {
                    self.index.remove(&h);
                }
                id
            }
        };
        self.refs[id as usize] = 1;
        Some(id)
    }

    /// Holds block `id` once more (taking it out of the idle set if no one held it).
    fn hold(&mut self, id: u32) {
        if self.refs[id as usize] == 0 {
            self.idle.remove(&self.idle_tick[id as usize]);
        }
        self.refs[id as usize] += 1;
    }

    /// Starts a sequence for `prompt`: its full blocks found in the prefix index are shared, the rest
    /// allocated. Returns the table and how many leading positions are already computed (a multiple of
    /// the block size, and always less than the prompt's length, so the last prompt token is computed
    /// and gives the first logits). Nothing is held on failure.
    pub fn admit(&mut self, prompt: &[u32]) -> Result<(BlockTable, usize), PoolFull> {
        let mut t = BlockTable::default();
        let mut parent = 0u64;
        let mut reused = 0usize;
        // Only blocks that end before the last token may be reused.
        let reusable = prompt.len().saturating_sub(1) / self.block;
        for chunk in prompt.chunks_exact(self.block).take(reusable) {
            let h = chain(parent, chunk);
            self.lookups += 1;
            match self.index.get(&h).copied() {
                Some(id) => {
                    self.hits += 1;
                    self.hold(id);
                    t.blocks.push(id);
                    t.hashes.push(h);
                    t.tokens.extend_from_slice(chunk);
                    parent = h;
                    reused += self.block;
                }
                None => {
                    // The rest of the prompt's full blocks are misses too (their chains differ).
                    self.lookups += (reusable - t.blocks.len() - 1) as u64;
                    break;
                }
            }
        }
        t.len = reused;
        for &tok in &prompt[reused..] {
            if let Err(e) = self.append(&mut t, tok) {
                self.release(t);
                return Err(e);
            }
        }
        Ok((t, reused))
    }

    /// Records one more position of `t` (its token), taking a block when the last one is full.
    pub fn append(&mut self, t: &mut BlockTable, token: u32) -> Result<(), PoolFull> {
        if t.len == t.blocks.len() * self.block {
            let id = self.take().ok_or_else(|| self.full())?;
            t.blocks.push(id);
        }
        t.tokens.push(token);
        t.len += 1;
        Ok(())
    }

    /// Says that the keys and values of `t`'s first `upto` positions are in its blocks: every full block
    /// among them enters the prefix index (the first block to hold a prefix is the one indexed; an equal
    /// block computed later by another sequence stays private to it). Until then a block is never
    /// offered to another sequence, so an admission that fails or a sequence preempted before its
    /// prompt ran leaves no block claiming values it does not hold.
    pub fn computed(&mut self, t: &mut BlockTable, upto: usize) {
        let full = upto.min(t.len) / self.block;
        while t.hashes.len() < full {
            let b = t.hashes.len();
            let parent = t.hashes.last().copied().unwrap_or(0);
            let h = chain(parent, &t.tokens[b * self.block..(b + 1) * self.block]);
            t.hashes.push(h);
            let id = t.blocks[b];
            if !self.index.contains_key(&h) && self.hash_of[id as usize].is_none() {
                self.index.insert(h, id);
                self.hash_of[id as usize] = Some(h);
            }
        }
    }

    /// Ends a sequence: its blocks are released; an indexed block no one holds stays for reuse until
    /// evicted, any other is freed.
    pub fn release(&mut self, t: BlockTable) {
        for id in t.blocks {
            let r = &mut self.refs[id as usize];
            *r = r.saturating_sub(1);
            if *r == 0 {
                if self.hash_of[id as usize].is_some() {
                    self.tick += 1;
                    self.idle_tick[id as usize] = self.tick;
                    self.idle.insert(self.tick, id);
                } else {
                    self.free.push(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize, seed: u32) -> Vec<u32> {
        (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) ^ seed)
            .collect()
    }

    #[test]
    fn a_shared_prefix_reuses_its_full_blocks() {
        let mut pool = BlockPool::new(16, 4);
        let system = tokens(10, 1);
        let mut a = system.clone();
        a.extend([100, 101]);
        let (mut ta, reused) = pool.admit(&a).unwrap();
        assert_eq!(reused, 0);
        assert_eq!(ta.blocks.len(), 3);
        pool.computed(&mut ta, a.len());
        let mut b = system.clone();
        b.extend([200, 201, 202]);
        let (tb, reused) = pool.admit(&b).unwrap();
        // Two full blocks (8 tokens) of the 10-token prefix are shared; the third differs.
        assert_eq!(reused, 8);
        assert_eq!(tb.blocks[..2], ta.blocks[..2]);
        assert_ne!(tb.blocks[2], ta.blocks[2]);
        assert!(pool.hit_rate() > 0.0);
        pool.release(ta);
        pool.release(tb);
        assert_eq!(pool.available(), 16);
    }

    #[test]
    fn equal_tokens_after_different_prefixes_are_not_shared() {
        let mut pool = BlockPool::new(16, 4);
        let mut a = tokens(4, 1);
        a.extend(tokens(5, 9));
        let mut b = tokens(4, 2);
        b.extend(tokens(5, 9));
        let (mut ta, _) = pool.admit(&a).unwrap();
        pool.computed(&mut ta, a.len());
        let (tb, reused) = pool.admit(&b).unwrap();
        assert_eq!(reused, 0);
        assert!(ta.blocks.iter().all(|x| !tb.blocks.contains(x)));
    }

    #[test]
    fn a_whole_prompt_in_the_index_still_computes_its_last_token() {
        let mut pool = BlockPool::new(8, 4);
        let p = tokens(8, 3);
        let (mut t, _) = pool.admit(&p).unwrap();
        pool.computed(&mut t, p.len());
        pool.release(t);
        let (t, reused) = pool.admit(&p).unwrap();
        assert_eq!(reused, 4);
        assert_eq!(t.len, 8);
    }

    #[test]
    fn a_full_pool_refuses_and_holds_nothing() {
        let mut pool = BlockPool::new(4, 4);
        let (mut t, _) = pool.admit(&tokens(12, 1)).unwrap();
        pool.computed(&mut t, 12);
        assert_eq!(pool.available(), 1);
        assert_eq!(
            pool.admit(&tokens(9, 2)),
            Err(PoolFull {
                blocks: 4,
                block: 4
            })
        );
        assert_eq!(pool.available(), 1);
        pool.release(t);
        assert_eq!(pool.available(), 4);
        // The failed admission's blocks went back free, not into the index.
        let (_, reused) = pool.admit(&tokens(5, 2)).unwrap();
        assert_eq!(reused, 0);
    }

    #[test]
    fn blocks_enter_the_index_only_once_computed() {
        let mut pool = BlockPool::new(8, 4);
        let p = tokens(9, 4);
        let (mut t, _) = pool.admit(&p).unwrap();
        pool.computed(&mut t, 5);
        let (u, reused) = pool.admit(&p).unwrap();
        assert_eq!(reused, 4, "only the first block was computed");
        pool.release(u);
        pool.computed(&mut t, 9);
        let (_, reused) = pool.admit(&p).unwrap();
        assert_eq!(reused, 8);
    }

    #[test]
    fn idle_prefix_blocks_are_kept_then_evicted_oldest_first() {
        let mut pool = BlockPool::new(3, 2);
        let (mut a, _) = pool.admit(&[1, 2, 9]).unwrap();
        pool.computed(&mut a, 3);
        pool.release(a);
        // [1, 2] stays indexed while idle: a second request finds it.
        let (a, reused) = pool.admit(&[1, 2, 9]).unwrap();
        assert_eq!(reused, 2);
        pool.release(a);
        // A sequence needing every block takes the free ones, then evicts the idle prefix.
        let (mut c, reused) = pool.admit(&[5, 6, 7, 8, 9]).unwrap();
        assert_eq!(reused, 0);
        assert_eq!(c.blocks.len(), 3);
        pool.computed(&mut c, 5);
        pool.release(c);
        let (_, reused) = pool.admit(&[1, 2, 9]).unwrap();
        assert_eq!(reused, 0, "the evicted prefix is gone from the index");
    }
}
