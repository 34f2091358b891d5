//! `shaders/kv/kv_paged_store.wgsl`, `kv_paged_seal.wgsl` and `attn_paged.wgsl`: the paged KV cache of
//! continuous batching (vLLM's PagedAttention). Each layer keeps two pools of blocks of `2^block_shift`
//! positions, slot = block x size + offset, in f32, f16 or KIVI's 8/4/2-bit codes ([`Pool`], attention
//! dequantizing codes in registers as it reads them); a sequence's positions live in the blocks its block
//! table lists, so sequences of any length share one pool and a full block of a common prefix can be held
//! by several of them. `kv_paged_store` writes a step's keys and values at their tokens' slots;
//! `attn_paged` is attn_fused over block tables, for a step whose rows belong to several sequences, each
//! token seeing the positions of its own sequence up to its own. A code pool quantizes keys per channel
//! over a block's positions (KIVI), so a block is quantized only when full (`kv_paged_seal`); a
//! sequence's newest positions (its last two blocks) are also kept in an f16 ring that attention reads
//! beside the codes.

use half::f16;
use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::{Score, attend_row, window_start};
use wring_kernels_core::{Kernel, Operand};

/// What a pool holds per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// f32 values.
    F32,
    /// f16 values, two to a u32 word (rounded to nearest, ties to even, as `shaders/common/f16.wgsl`).
    F16,
    /// KIVI at 8 bits (`shaders/common/kvquant.wgsl`'s min/max quantizer): a block's keys quantized per
    /// channel over its positions (codes [position][kv x bits / 32 words], then an f16 (scale, minimum)
    /// per channel: [`kivi_keys`]), its values per (position, head) (each slot's codes, then one pair per
    /// head: [`Pool::store`]), quantized by [`KvPagedSeal`] when the block's last position arrives. Each
    /// running sequence also keeps its newest positions in an f16 tail, a ring of two blocks
    /// ([`Pool::F16`]'s layout, position p at ring slot p mod 2 x block): attention reads the last full
    /// block and the unfinished one from there, 32 to 63 recent positions at full precision as the
    /// contiguous cache's window and unfinished group.
    Q8,
    /// KIVI at 4 bits, as [`Pool::Q8`].
    Q4,
    /// KIVI at 2 bits, as [`Pool::Q8`].
    Q2,
}

impl Pool {
    /// The variant-name suffix (`shaders/kv/permutations`' `pool` axis).
    fn name(self) -> &'static str {
        match self {
            Pool::F32 => "f32",
            Pool::F16 => "f16",
            Pool::Q8 => "q8",
            Pool::Q4 => "q4",
            Pool::Q2 => "q2",
        }
    }

    /// Bits per code of a code pool.
    pub fn bits(self) -> Option<u32> {
        match self {
            Pool::Q8 => Some(8),
            Pool::Q4 => Some(4),
            Pool::Q2 => Some(2),
            Pool::F32 | Pool::F16 => None,
        }
    }

    /// Whether the pool holds codes, as KIVI lays them out: keys per channel over a block, f16 tails.
    pub fn kivi(self) -> bool {
        self.bits().is_some()
    }

    /// u32 words (f32 elements for [`Pool::F32`]) of the key and the value pool of `blocks` blocks of
    /// `block` positions; saturating, for the callers' bounds checks.
    pub fn pool_words(self, kv: usize, head_dim: usize, block: usize, blocks: usize) -> [usize; 2] {
        let values = blocks
            .saturating_mul(block)
            .saturating_mul(self.words_per_slot(kv, head_dim));
        if let Some(bits) = self.bits() {
            let per_block = block
                .saturating_mul(kv * bits as usize / 32)
                .saturating_add(kv);
            return [blocks.saturating_mul(per_block), values];
        }
        [values, values]
    }

    /// u32 words (f32 elements for [`Pool::F32`]) one position of `kv` channels in heads of `head_dim`
    /// takes (a KIVI pool's values; its keys are laid out per block, see [`Pool::pool_words`]).
    pub fn words_per_slot(self, kv: usize, head_dim: usize) -> usize {
        match self.bits() {
            None if self == Pool::F32 => kv,
            None => kv / 2,
            Some(bits) => kv * bits as usize / 32 + kv / head_dim.max(1),
        }
    }

    /// The element type of a pool's buffer.
    pub fn dtype(self) -> DType {
        match self {
            Pool::F32 => DType::F32,
            _ => DType::U32,
        }
    }

    /// Checks that heads of `head_dim` in `kv` channels pack into whole words.
    pub fn check(
        self,
        kernel: &'static str,
        kv: usize,
        head_dim: usize,
    ) -> Result<(), KernelError> {
        let per = self.bits().map_or(4, |b| (32 / b as usize).max(4));
        plan::ensure(
            head_dim > 0 && head_dim.is_multiple_of(per) && kv.is_multiple_of(head_dim),
            kernel,
            || {
                format!(
                    "a {} pool packs heads of a multiple of {per} channels, not {head_dim} of {kv}",
                    self.name()
                )
            },
        )
    }

    /// One position's `kv` values (heads of `head_dim`) as the pool stores them: kv_paged_store's twin for
    /// f32 and f16, kv_paged_seal's for a code pool's values.
    pub fn store(self, x: &[f32], head_dim: usize) -> Vec<u32> {
        let Some(bits) = self.bits() else {
            return match self {
                Pool::F32 => x.iter().map(|v| v.to_bits()).collect(),
                _ => x
                    .chunks(2)
                    .map(|p| {
                        let h = |v: f32| u32::from(f16::from_f32(store_f16(v)).to_bits());
                        h(p[0]) | (h(p.get(1).copied().unwrap_or(0.0)) << 16)
                    })
                    .collect(),
            };
        };
        let cpw = (32 / bits) as usize;
        let mut words = vec![0u32; x.len() / cpw];
        let mut stats = Vec::with_capacity(x.len() / head_dim);
        for (h, head) in x.chunks(head_dim).enumerate() {
            let mn = head.iter().fold(65504f32, |m, &v| m.min(v));
            let mx = head.iter().fold(-65504f32, |m, &v| m.max(v));
            let st = crate::cache::stat_for(bits, mn, mx);
            for (c, &v) in head.iter().enumerate() {
                let at = h * head_dim + c;
                words[at / cpw] |=
                    crate::cache::code_for(bits, v, st) << ((at % cpw) as u32 * bits);
            }
            stats.push(crate::cache::pack(st.0, st.1));
        }
        words.extend(stats);
        words
    }

    /// The values one position's words stand for.
    pub fn load(self, words: &[u32], kv: usize, head_dim: usize) -> Vec<f32> {
        let Some(bits) = self.bits() else {
            return match self {
                Pool::F32 => words.iter().map(|&w| f32::from_bits(w)).collect(),
                _ => words
                    .iter()
                    .flat_map(|&w| {
                        let (a, b) = crate::cache::unpack(w);
                        [a, b]
                    })
                    .collect(),
            };
        };
        let cpw = (32 / bits) as usize;
        let mask = (1u32 << bits) - 1;
        let stats = &words[kv / cpw..];
        (0..kv)
            .map(|at| {
                let (d, m) = crate::cache::unpack(stats[at / head_dim]);
                let code = (words[at / cpw] >> ((at % cpw) as u32 * bits)) & mask;
                m + d * code as f32
            })
            .collect()
    }

    /// Every position of `values` (\[position\]\[kv\]) as the pool stores them.
    pub fn pack(self, values: &[f32], kv: usize, head_dim: usize) -> Vec<u32> {
        values
            .chunks(kv)
            .flat_map(|x| self.store(x, head_dim))
            .collect()
    }

    /// The values of every position of a pool's words.
    pub fn unpack(self, words: &[u32], kv: usize, head_dim: usize) -> Vec<f32> {
        words
            .chunks(self.words_per_slot(kv, head_dim))
            .flat_map(|w| self.load(w, kv, head_dim))
            .collect()
    }
}

/// A full KIVI key block, `x` = \[block\]\[kv\] as f16 holds it: each channel quantized over the block's
/// positions at `bits`, codes [position][kv x bits / 32] (32 / bits channels a word, the first in the low
/// bits), then one (scale, minimum) f16 pair per channel. kv_paged_seal's twin for keys.
pub fn kivi_keys(x: &[f32], kv: usize, block: usize, bits: u32) -> Vec<u32> {
    let cpw = (32 / bits) as usize;
    let words = kv / cpw;
    let mut out = vec![0u32; block * words + kv];
    for c in 0..kv {
        let column = (0..block).map(|o| x[o * kv + c]);
        let mn = column.clone().fold(65504f32, f32::min);
        let mx = column.clone().fold(-65504f32, f32::max);
        let st = crate::cache::stat_for(bits, mn, mx);
        out[block * words + c] = crate::cache::pack(st.0, st.1);
        for (o, v) in column.enumerate() {
            out[o * words + c / cpw] |=
                crate::cache::code_for(bits, v, st) << (bits * (c % cpw) as u32);
        }
    }
    out
}

/// The values a KIVI key block's words stand for, \[block\]\[kv\].
pub fn kivi_load_keys(words: &[u32], kv: usize, block: usize, bits: u32) -> Vec<f32> {
    let cpw = (32 / bits) as usize;
    let per = kv / cpw;
    let mask = (1u32 << bits) - 1;
    (0..block * kv)
        .map(|at| {
            let (o, c) = (at / kv, at % kv);
            let (d, m) = crate::cache::unpack(words[block * per + c]);
            let code = (words[o * per + c / cpw] >> (bits * (c % cpw) as u32)) & mask;
            m + d * code as f32
        })
        .collect()
}

/// What kv_paged_store writes for `x` in an f16 pool: clamped into f16's range and rounded as the shader
/// rounds (so that packing it is exact).
pub fn store_f16(x: f32) -> f32 {
    crate::cache::f16_round(x.clamp(-65504.0, 65504.0))
}

/// kv_paged_store's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StoreParams {
    pub kv: u32,
    pub tokens: u32,
    pub head_dim: u32,
    pub pad: u32,
}

/// attn_paged's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub block_shift: u32,
    pub tiles: u32,
    pub tokens: u32,
    pub scale: f32,
    pub softcap: f32,
    pub window: u32,
    pub pad: [u32; 3],
}

/// One launch of `kv_paged_store`: `tokens` rows of keys and values (\[token\]\[kv\], f32) into f32 or f16
/// pools of `slots` positions (or a code pool's f16 tails), token t at slot `slots[t]` unless that is
/// [`NO_SLOT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPagedStore {
    /// Channels per position (key/value heads x head dimension), a multiple of 4.
    pub kv: usize,
    /// Channels per head (a code pool's group).
    pub head_dim: usize,
    /// Rows written.
    pub tokens: usize,
    /// Positions the pools hold.
    pub slots: usize,
    /// What the pools hold.
    pub pool: Pool,
}

impl KvPagedStore {
    fn checked(&self) -> Result<StoreParams, KernelError> {
        plan::ensure(
            self.kv > 0 && self.kv.is_multiple_of(4),
            "kv_paged_store",
            || format!("{} channels must be a positive multiple of 4", self.kv),
        )?;
        plan::ensure(!self.pool.kivi(), "kv_paged_store", || {
            format!(
                "kv_paged_store writes f32 and f16 pools; a {:?} pool's blocks are written by kv_paged_seal, its newest positions to f16 tails",
                self.pool
            )
        })?;
        self.pool.check("kv_paged_store", self.kv, self.head_dim)?;
        plan::index_u32(
            "kv_paged_store",
            "pool values",
            self.slots.saturating_mul(self.kv),
        )?;
        plan::index_u32(
            "kv_paged_store",
            "step values",
            self.tokens.saturating_mul(self.kv),
        )?;
        Ok(StoreParams {
            kv: self.kv as u32,
            tokens: self.tokens as u32,
            head_dim: self.head_dim as u32,
            pad: 0,
        })
    }
}

impl Kernel for KvPagedStore {
    fn kernel(&self) -> &'static str {
        "kv_paged_store"
    }

    fn operands(&self) -> Vec<Operand> {
        let step = self.tokens * self.kv;
        let (pool, dtype) = (
            self.slots * self.pool.words_per_slot(self.kv, self.head_dim),
            self.pool.dtype(),
        );
        vec![
            Operand::read("k", DType::F32, step),
            Operand::read("v", DType::F32, step),
            Operand::read("slots", DType::U32, self.tokens),
            // Either pool is words; a caller may hold an f32 pool's as u32 (its bits).
            Operand::write("kp", dtype, pool).words(),
            Operand::write("vp", dtype, pool).words(),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = crate::select(
            "kv_paged_store",
            self.pool.name(),
            "the pool's element type",
            caps,
            choice,
        )?;
        plan::ensure(variant_pool(v) == self.pool, "kv_paged_store", || {
            format!("variant {} does not write a {:?} pool", v.name, self.pool)
        })?;
        // One invocation per four channels of a token.
        let items = (self.tokens * self.kv / 4) as u64;
        plan::per_item("kv_paged_store", v, items, bytemuck::bytes_of(&p), caps)
    }
}

/// CPU twin of `kv_paged_store` on the pools' words: each token's keys and values stored at its slot.
pub fn cpu_store(
    u: &KvPagedStore,
    k: &[f32],
    v: &[f32],
    slots: &[u32],
    kp: &mut [u32],
    vp: &mut [u32],
) {
    let (kv, per) = (u.kv, u.pool.words_per_slot(u.kv, u.head_dim));
    for (t, &slot) in slots.iter().enumerate().take(u.tokens) {
        if slot == NO_SLOT {
            continue;
        }
        let at = slot as usize * per;
        kp[at..at + per].copy_from_slice(&u.pool.store(&k[t * kv..(t + 1) * kv], u.head_dim));
        vp[at..at + per].copy_from_slice(&u.pool.store(&v[t * kv..(t + 1) * kv], u.head_dim));
    }
}

/// Blocks of a code pool's f16 ring per running sequence: its last full block and its unfinished one
/// (`shaders/kv/attn_paged.wgsl` reads position p at ring slot p mod 2 x block).
pub const RING_BLOCKS: usize = 2;

/// Positions the rings of `tails` sequences hold in blocks of `block`; saturating, for bounds checks.
pub fn ring_positions(tails: usize, block: usize) -> usize {
    tails.saturating_mul(RING_BLOCKS * block)
}

/// A token kv_paged_store leaves unwritten (the shader's NONE): a KIVI step's positions in blocks it
/// seals.
pub const NO_SLOT: u32 = u32::MAX;

/// kv_paged_seal's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SealParams {
    pub kv: u32,
    pub head_dim: u32,
    pub block_shift: u32,
    pub jobs: u32,
}

/// One launch of `kv_paged_seal`: `jobs` full blocks of a code pool ([`Pool::Q8`], KIVI's layout)
/// quantized from the step's keys and values (\[token\]\[kv\], f32) and the positions earlier steps left in
/// their sequence's tail.
/// A job is `[block, ring, staged, first]`: the block's first `staged` positions are at tail slots
/// `ring + o` (the ring slot of the block's first position), the rest the step's tokens from `first` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPagedSeal {
    /// The code pool (q8, q4 or q2).
    pub pool: Pool,
    /// Channels per position.
    pub kv: usize,
    /// Channels per head (a value group), a multiple of the channels a code word holds.
    pub head_dim: usize,
    /// Positions per block, a power of two, at least 8.
    pub block: usize,
    /// Blocks the pools hold.
    pub blocks: usize,
    /// Tails (rings of two blocks of positions each).
    pub tails: usize,
    /// The step's tokens.
    pub tokens: usize,
    /// Blocks sealed.
    pub jobs: usize,
}

impl KvPagedSeal {
    fn checked(&self) -> Result<SealParams, KernelError> {
        let k = "kv_paged_seal";
        plan::ensure(self.pool.kivi(), k, || {
            format!("a {:?} pool holds no codes to seal", self.pool)
        })?;
        self.pool.check(k, self.kv, self.head_dim)?;
        plan::ensure(self.block >= 8 && self.block.is_power_of_two(), k, || {
            format!(
                "blocks of {} positions (a power of two, at least 8)",
                self.block
            )
        })?;
        plan::ensure(self.jobs > 0, k, || "no block to seal".into())?;
        let [kw, vw] = self
            .pool
            .pool_words(self.kv, self.head_dim, self.block, self.blocks);
        plan::index_u32(k, "pool words", kw.max(vw))?;
        plan::index_u32(
            k,
            "tail values",
            ring_positions(self.tails, self.block).saturating_mul(self.kv),
        )?;
        plan::index_u32(k, "step values", self.tokens.saturating_mul(self.kv))?;
        Ok(SealParams {
            kv: self.kv as u32,
            head_dim: self.head_dim as u32,
            block_shift: self.block.trailing_zeros(),
            jobs: self.jobs as u32,
        })
    }

    /// Invocations per job: a key word column each, a value group each.
    fn per_job(&self) -> usize {
        let words = self.kv * self.pool.bits().unwrap_or(32) as usize / 32;
        words + self.block * (self.kv / self.head_dim)
    }
}

impl Kernel for KvPagedSeal {
    fn kernel(&self) -> &'static str {
        "kv_paged_seal"
    }

    fn operands(&self) -> Vec<Operand> {
        let [kw, vw] = self
            .pool
            .pool_words(self.kv, self.head_dim, self.block, self.blocks);
        let step = self.tokens * self.kv;
        let tail = ring_positions(self.tails, self.block) * self.kv / 2;
        vec![
            Operand::read("k", DType::F32, step),
            Operand::read("v", DType::F32, step),
            Operand::read("tk", DType::U32, tail),
            Operand::read("tv", DType::U32, tail),
            Operand::read("jobs", DType::U32, 4 * self.jobs),
            Operand::write("kp", DType::U32, kw),
            Operand::write("vp", DType::U32, vw),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = crate::select(
            "kv_paged_seal",
            self.pool.name(),
            "the pool's code width",
            caps,
            choice,
        )?;
        plan::ensure(variant_pool(v) == self.pool, "kv_paged_seal", || {
            format!("variant {} does not write a {:?} pool", v.name, self.pool)
        })?;
        let items = self.jobs.saturating_mul(self.per_job()) as u64;
        plan::per_item("kv_paged_seal", v, items, bytemuck::bytes_of(&p), caps)
    }
}

/// CPU twin of `kv_paged_seal` on the pools' and tails' words.
#[allow(
    clippy::too_many_arguments,
    reason = "the kernel's operands, one argument each, as the shader binds them"
)]
pub fn cpu_seal(
    u: &KvPagedSeal,
    k: &[f32],
    v: &[f32],
    tk: &[u32],
    tv: &[u32],
    jobs: &[[u32; 4]],
    kp: &mut [u32],
    vp: &mut [u32],
) {
    let (kv, b) = (u.kv, u.block);
    // Position o of a job's block, keys or values, as f16 holds it.
    let position = |x: &[f32], tail: &[u32], job: [u32; 4], o: usize| -> Vec<f32> {
        let [_, ring, staged, first] = job.map(|w| w as usize);
        if o < staged {
            let at = (ring + o) * kv / 2;
            Pool::F16.load(&tail[at..at + kv / 2], kv, u.head_dim)
        } else {
            let at = (first + o - staged) * kv;
            x[at..at + kv].iter().map(|&x| store_f16(x)).collect()
        }
    };
    let bits = u.pool.bits().unwrap_or(32);
    let per_value = u.pool.words_per_slot(kv, u.head_dim);
    let key_block = b * kv * bits as usize / 32 + kv;
    for &job in jobs.iter().take(u.jobs) {
        let block = job[0] as usize;
        let keys: Vec<f32> = (0..b).flat_map(|o| position(k, tk, job, o)).collect();
        kp[block * key_block..][..key_block].copy_from_slice(&kivi_keys(&keys, kv, b, bits));
        for o in 0..b {
            let at = (block * b + o) * per_value;
            vp[at..at + per_value]
                .copy_from_slice(&u.pool.store(&position(v, tv, job, o), u.head_dim));
        }
    }
}

/// The pool a variant of kv_paged_store or attn_paged reads or writes (its `pool` axis).
pub fn variant_pool(v: &wring_kernels_core::Variant) -> Pool {
    match (v.define("F16POOL").is_some(), v.define("BITS")) {
        (true, _) => Pool::F16,
        (false, Some("8")) => Pool::Q8,
        (false, Some("4")) => Pool::Q4,
        (false, Some("2")) => Pool::Q2,
        _ => Pool::F32,
    }
}

/// Query rows a tile of `attn_paged` holds at most, per variant (`shaders/kv/permutations`' `rows`).
pub const TILE_ROWS: [usize; 5] = [1, 2, 3, 4, 8];

/// The rows per tile the row-per-lane form takes (its workgroup's lanes).
pub const LANE_ROWS: usize = 8;

/// One launch of `attn_paged`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnPaged {
    /// Query tokens in the step (rows of `q` and `o`, each of every head).
    pub tokens: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Dimensions per head (a multiple of 4, at most 128).
    pub head_dim: usize,
    /// Positions per cache block: a power of two, at least 8.
    pub block: usize,
    /// Positions the pools hold.
    pub slots: usize,
    /// Entries of the concatenated block tables.
    pub table_len: usize,
    /// Tiles (see [`tiles`]) and the rows each holds at most.
    pub tiles: usize,
    /// The most rows one tile holds.
    pub tile_rows: usize,
    /// What the pools hold.
    pub pool: Pool,
    /// A code pool's tails, rings of two blocks of positions each (0 for other pools).
    pub tails: usize,
    /// Score scale, 1 / sqrt(head_dim) for llama.
    pub scale: f32,
    /// Attention soft-capping (Gemma 2), 0 for none.
    pub softcap: f32,
    /// A sliding-window layer's window (a query at p sees positions p - window + 1 ..= p), 0 for none.
    pub window: usize,
}

/// What attention reads of a code pool's tails in [`AttnPaged::cpu`]: each token's (its sequence's first
/// ring slot, the first position read from the ring), and the tails' keys and values, \[tail slot\]\[kv\];
/// position j at or past that first one is at ring slot first slot + j mod 2 x block.
#[derive(Debug, Clone, Copy)]
pub struct TailView<'a> {
    /// Per token: its sequence's first ring slot and the first position read from the ring.
    pub info: &'a [[u32; 2]],
    /// The tails' keys, \[tail slot\]\[kv\].
    pub k: &'a [f32],
    /// The tails' values, \[tail slot\]\[kv\].
    pub v: &'a [f32],
}

/// The largest head the row-per-lane form's private arrays hold.
pub const MAX_HEAD_DIM: usize = 128;

/// The rows per tile the planner's variant takes for `head_dim`, `group` query heads per key/value head
/// and a step of only decode rows (`decode_only`) or not, on an adapter with `caps`: build the step's
/// tiles with it. On a CPU adapter with 8-lane subgroups, the tiled form over the smallest tile holding a
/// decode row's heads (8 rows once a prompt chunk is in the step), as attn_fused measured; elsewhere the
/// row-per-lane form's 8.
pub fn tile_rows(caps: &Caps, head_dim: usize, group: usize, decode_only: bool) -> usize {
    if tiled(caps, head_dim) {
        if decode_only {
            return TILE_ROWS.iter().copied().find(|&r| r >= group).unwrap_or(8);
        }
        return 8;
    }
    LANE_ROWS
}

fn tiled(caps: &Caps, head_dim: usize) -> bool {
    caps.software
        && caps.subgroup
        && caps.subgroup_min_size >= 8
        && (head_dim == 64 || head_dim == 128)
}

/// The tiles of a step: each sequence's rows (`segments`: its first token and token count, in row order)
/// cut into tiles of at most `rows` of the `group` query heads of one key/value head, as [first row, rows]
/// with row = token x group + head in the group; no tile spans two sequences.
pub fn tiles(segments: &[(usize, usize)], group: usize, rows: usize) -> Vec<[u32; 2]> {
    let rows = rows.max(1);
    let mut out = Vec::new();
    for &(first, n) in segments {
        let (start, end) = (first * group, (first + n) * group);
        let mut u = start;
        while u < end {
            let take = rows.min(end - u);
            out.push([u as u32, take as u32]);
            u += take;
        }
    }
    out
}

impl AttnPaged {
    fn checked(&self) -> Result<Params, KernelError> {
        let k = "attn_paged";
        plan::ensure(
            self.head_dim > 0 && self.head_dim.is_multiple_of(4) && self.head_dim <= MAX_HEAD_DIM,
            k,
            || {
                format!(
                    "head_dim {} must be a multiple of 4 up to {MAX_HEAD_DIM}",
                    self.head_dim
                )
            },
        )?;
        plan::ensure(
            self.n_kv_heads > 0 && self.n_heads.is_multiple_of(self.n_kv_heads),
            k,
            || {
                format!(
                    "{} key/value heads must divide {} query heads",
                    self.n_kv_heads, self.n_heads
                )
            },
        )?;
        plan::ensure(self.block >= 8 && self.block.is_power_of_two(), k, || {
            format!(
                "blocks of {} positions (a power of two, at least 8)",
                self.block
            )
        })?;
        plan::ensure(self.tiles > 0 && self.tile_rows > 0, k, || {
            "a step with no tiles".into()
        })?;
        let kv = self.n_kv_heads * self.head_dim;
        self.pool.check(k, kv, self.head_dim)?;
        let [kw, vw] = self
            .pool
            .pool_words(kv, self.head_dim, self.block, self.blocks());
        plan::index_u32(k, "pool words", kw.max(vw))?;
        plan::index_u32(
            k,
            "tail values",
            ring_positions(self.tails, self.block).saturating_mul(kv),
        )?;
        // A slot in the tails is marked by the top bit (TAIL in the shader).
        plan::ensure(self.slots < 1 << 31, k, || {
            format!("{} slots leave no bit for the tail mark", self.slots)
        })?;
        plan::index_u32(
            k,
            "query values",
            self.tokens
                .saturating_mul(self.n_heads)
                .saturating_mul(self.head_dim),
        )?;
        plan::index_u32(k, "workgroups", self.tiles.saturating_mul(self.n_kv_heads))?;
        Ok(Params {
            n_heads: self.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            head_dim: self.head_dim as u32,
            block_shift: self.block.trailing_zeros(),
            tiles: self.tiles as u32,
            tokens: self.tokens as u32,
            scale: self.scale,
            softcap: self.softcap,
            window: plan::index_u32(k, "window", self.window)?,
            pad: [0; 3],
        })
    }

    /// Blocks the pools hold.
    fn blocks(&self) -> usize {
        self.slots / self.block.max(1)
    }

    /// CPU twin, row by row in the row-per-lane form's order of operations (the keys in order, the
    /// running maximum, the rescaled sum and accumulator); `kp` and `vp` are the pools' values
    /// \[slot\]\[kv\], and a KIVI pool's tails come in `tails`. Only the rows the tiles name are written.
    #[allow(
        clippy::too_many_arguments,
        reason = "the kernel's operands, one argument each, as the shader binds them"
    )]
    pub fn cpu(
        &self,
        q: &[f32],
        kp: &[f32],
        vp: &[f32],
        table: &[u32],
        seqs: &[[u32; 2]],
        tiles: &[[u32; 2]],
        tails: Option<TailView<'_>>,
        o: &mut [f32],
    ) {
        let d = self.head_dim;
        let group = self.n_heads / self.n_kv_heads;
        let kv = self.n_kv_heads * d;
        let shift = self.block.trailing_zeros();
        for hk in 0..self.n_kv_heads {
            for &[u0, n] in tiles {
                for u in u0..u0 + n {
                    let u = u as usize;
                    let t = u / group;
                    let th = t * self.n_heads + hk * group + u % group;
                    let [toff, pos] = seqs[t];
                    let first = window_start(pos as usize, self.window) as u32;
                    let keys = (first..=pos).map(|j| {
                        if let Some(tv) = tails
                            && j >= tv.info[t][1]
                        {
                            let ring = tv.info[t][0] + j % (RING_BLOCKS * self.block) as u32;
                            let base = ring as usize * kv + hk * d;
                            return (&tv.k[base..][..d], &tv.v[base..][..d]);
                        }
                        let slot = (table[(toff + (j >> shift)) as usize] << shift)
                            | (j & (self.block as u32 - 1));
                        let base = slot as usize * kv + hk * d;
                        (&kp[base..][..d], &vp[base..][..d])
                    });
                    attend_row(
                        &q[th * d..][..d],
                        keys,
                        Score {
                            scale: self.scale,
                            softcap: self.softcap,
                        },
                        &mut o[th * d..][..d],
                    );
                }
            }
        }
    }
}

impl Kernel for AttnPaged {
    fn kernel(&self) -> &'static str {
        "attn_paged"
    }

    fn operands(&self) -> Vec<Operand> {
        let rows = self.tokens * self.n_heads * self.head_dim;
        let kv = self.n_kv_heads * self.head_dim;
        let [kw, vw] = self
            .pool
            .pool_words(kv, self.head_dim, self.block, self.blocks());
        let dtype = self.pool.dtype();
        let mut ops = vec![
            Operand::read("q", DType::F32, rows),
            Operand::read("k", dtype, kw),
            Operand::read("v", dtype, vw),
            Operand::read("table", DType::U32, self.table_len),
            Operand::read("seqs", DType::U32, 2 * self.tokens),
            Operand::read("tiles", DType::U32, 2 * self.tiles),
            Operand::write("o", DType::F32, rows),
        ];
        if self.pool.kivi() {
            let tail = ring_positions(self.tails, self.block) * kv / 2;
            ops.extend([
                Operand::read("tk", DType::U32, tail),
                Operand::read("tv", DType::U32, tail),
                Operand::read("kivi", DType::U32, 2 * self.tokens),
            ]);
        }
        ops
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let k = "attn_paged";
        let (auto, why) = if tiled(caps, self.head_dim) && TILE_ROWS.contains(&self.tile_rows) {
            (
                format!(
                    "tiled_d{}_r{}_{}",
                    self.head_dim,
                    self.tile_rows,
                    self.pool.name()
                ),
                "a CPU adapter with 8-lane subgroups: one key per lane over a tile of query rows",
            )
        } else {
            (
                format!("rows_{}", self.pool.name()),
                "one query row per lane (the tiled form wants a CPU adapter with 8-lane subgroups and a head of 64 or 128)",
            )
        };
        let v = crate::select(k, &auto, why, caps, choice)?;
        plan::ensure(variant_pool(v) == self.pool, k, || {
            format!("variant {} does not read a {:?} pool", v.name, self.pool)
        })?;
        let qr = v.define_u32("QR") as usize;
        plan::ensure(self.tile_rows <= qr, k, || {
            format!(
                "variant {} holds {qr} rows a tile, and the step's tiles hold {}",
                v.name, self.tile_rows
            )
        })?;
        if let Some(hd) = v.define("HD") {
            plan::ensure(self.head_dim.to_string() == hd, k, || {
                format!(
                    "variant {} is built for head_dim {hd}, not {}",
                    v.name, self.head_dim
                )
            })?;
            let wg = v.define_u32("WG");
            plan::ensure(caps.subgroup_min_size >= wg, k, || {
                format!(
                    "variant {} treats its {wg} lanes as one subgroup, and this adapter's subgroups may be {} wide",
                    v.name, caps.subgroup_min_size
                )
            })?;
        }
        let groups = (self.tiles * self.n_kv_heads) as u64;
        plan::linear(k, v, groups, bytemuck::bytes_of(&p), caps)
    }
}
