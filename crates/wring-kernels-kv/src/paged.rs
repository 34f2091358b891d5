//! `shaders/kv/kv_paged_store.wgsl` and `shaders/kv/attn_paged.wgsl`: the paged KV cache of continuous
//! batching (vLLM's PagedAttention). Each layer keeps two pools of blocks of `2^block_shift` positions,
//! [slot][kv head][head_dim] with slot = block x size + offset, in f32, f16 or 8/4-bit codes ([`Pool`],
//! attention dequantizing codes in registers as it reads them); a sequence's
//! positions live in the blocks its block table lists, so sequences of any length share one pool and a
//! full block of a common prefix can be held by several of them. `kv_paged_store` writes a step's keys and
//! values at their tokens' slots; `attn_paged` is attn_fused over block tables, for a step whose rows
//! belong to several sequences, each token seeing the positions of its own sequence up to its own.

use half::f16;
use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::attend_row;
use wring_kernels_core::{Kernel, Operand};

/// What a pool holds per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// f32 values.
    F32,
    /// f16 values, two to a u32 word (rounded to nearest, ties to even, as `shaders/common/f16.wgsl`).
    F16,
    /// 8-bit codes, then one f16 (scale, minimum) pair per head: each (position, head) vector of keys or
    /// values quantized on its own (`shaders/common/kvquant.wgsl`'s min/max quantizer).
    Q8,
    /// 4-bit codes, as [`Pool::Q8`].
    Q4,
}

impl Pool {
    /// The variant-name suffix (`shaders/kv/permutations`' `pool` axis).
    fn name(self) -> &'static str {
        match self {
            Pool::F32 => "f32",
            Pool::F16 => "f16",
            Pool::Q8 => "q8",
            Pool::Q4 => "q4",
        }
    }

    /// Bits per code of a code pool.
    pub fn bits(self) -> Option<u32> {
        match self {
            Pool::Q8 => Some(8),
            Pool::Q4 => Some(4),
            Pool::F32 | Pool::F16 => None,
        }
    }

    /// u32 words (f32 elements for [`Pool::F32`]) one position of `kv` channels in heads of `head_dim`
    /// takes.
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

    /// One position's `kv` values (heads of `head_dim`) as the pool stores them: kv_paged_store's twin.
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

    /// Every position of `values` ([position][kv]) as the pool stores them.
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

/// What kv_paged_store writes for `x` in an f16 pool: clamped into f16's range and rounded as the shader
/// rounds (so that packing it is exact).
fn store_f16(x: f32) -> f32 {
    crate::cache::f16_round(x.clamp(-65504.0, 65504.0))
}

/// kv_paged_store's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StoreParams {
    pub kv: u32,
    pub tokens: u32,
    pub head_dim: u32,
    pub pad: u32,
}

/// attn_paged's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub block_shift: u32,
    pub tiles: u32,
    pub tokens: u32,
    pub scale: f32,
    pub pad: u32,
}

/// One launch of `kv_paged_store`: `tokens` rows of keys and values ([token][kv], f32) into pools of
/// `slots` positions, token t at slot `slots[t]`.
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
        // Code pools: one invocation per (token, head); the others per four channels.
        let items = match self.pool.bits() {
            Some(_) => self.tokens * (self.kv / self.head_dim),
            None => self.tokens * self.kv / 4,
        } as u64;
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
        let at = slot as usize * per;
        kp[at..at + per].copy_from_slice(&u.pool.store(&k[t * kv..(t + 1) * kv], u.head_dim));
        vp[at..at + per].copy_from_slice(&u.pool.store(&v[t * kv..(t + 1) * kv], u.head_dim));
    }
}

/// The pool a variant of kv_paged_store or attn_paged reads or writes (its `pool` axis).
pub fn variant_pool(v: &wring_kernels_core::Variant) -> Pool {
    match (v.define("F16POOL").is_some(), v.define("BITS")) {
        (true, _) => Pool::F16,
        (false, Some("8")) => Pool::Q8,
        (false, Some("4")) => Pool::Q4,
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
    pub tile_rows: usize,
    /// What the pools hold.
    pub pool: Pool,
    /// Score scale, 1 / sqrt(head_dim) for llama.
    pub scale: f32,
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
        plan::index_u32(
            k,
            "pool words",
            self.slots
                .saturating_mul(self.pool.words_per_slot(kv, self.head_dim)),
        )?;
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
            pad: 0,
        })
    }

    /// CPU twin, row by row in the row-per-lane form's order of operations (the keys in order, the
    /// running maximum, the rescaled sum and accumulator); `kp` and `vp` are the pools' values. Only the
    /// rows the tiles name are written.
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
                    let keys = (0..=pos).map(|j| {
                        let slot = (table[(toff + (j >> shift)) as usize] << shift)
                            | (j & (self.block as u32 - 1));
                        let base = slot as usize * kv + hk * d;
                        (&kp[base..][..d], &vp[base..][..d])
                    });
                    attend_row(&q[th * d..][..d], keys, self.scale, &mut o[th * d..][..d]);
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
        let (pool, dtype) = (
            self.slots * self.pool.words_per_slot(kv, self.head_dim),
            self.pool.dtype(),
        );
        vec![
            Operand::read("q", DType::F32, rows),
            Operand::read("k", dtype, pool),
            Operand::read("v", dtype, pool),
            Operand::read("table", DType::U32, self.table_len),
            Operand::read("seqs", DType::U32, 2 * self.tokens),
            Operand::read("tiles", DType::U32, 2 * self.tiles),
            Operand::write("o", DType::F32, rows),
        ]
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
