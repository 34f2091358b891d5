//! `shaders/kv/kv_load.wgsl` and `shaders/kv/kv_store.wgsl` over one layer's compressed KV cache, laid out
//! as `shaders/common/kv.wgsl` describes: one u32 buffer of key and value codes, their statistics, and an
//! f16 ring of the positions not yet compressed.
//!
//! The quantizer is KIVI's (Liu et al., 2024): keys per channel over a group of `group` tokens (keys have
//! outlier channels, so a channel's scale must not be shared with others), values per token over
//! `value_group` channels (one head), asymmetric min/max with an f16 scale and minimum, and the most
//! recent `window` positions kept unquantized so that the tokens attention weighs most are exact. A
//! position is compressed once it is `window` positions old and its whole key group is; until then it
//! lives in the ring, of `window + group` slots.

use half::f16;
use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The shaders' `Params` (shared by kv_load and kv_store).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub kv: u32,
    pub group: u32,
    pub value_group: u32,
    pub ring: u32,
    pub k_codes: u32,
    pub v_codes: u32,
    pub k_stats: u32,
    pub v_stats: u32,
    pub ring_k: u32,
    pub ring_v: u32,
    pub compressed: u32,
    pub upto: u32,
    pub pos0: u32,
    pub pos: u32,
    pub items_k: u32,
    pub items_v: u32,
    pub outliers: u32,
    pub rank: u32,
    pub out_off: u32,
    pub fac_off: u32,
    pub block0: u32,
    pub blocks: u32,
    pub pad: [u32; 2],
}

/// How one layer's compressed cache is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// Bits per kept value: 16 (every position in the f16 ring), or 8, 4 or 2 (codes).
    pub bits: u32,
    /// Channels per position: key/value heads x head dimension.
    pub kv: usize,
    /// Channels sharing one value statistic (the head dimension).
    pub value_group: usize,
    /// Positions the cache holds.
    pub capacity: usize,
    /// Tokens sharing one key statistic; positions are compressed a whole group at a time.
    pub group: usize,
    /// Most recent positions kept in the ring.
    pub window: usize,
    /// GEAR: outliers kept exactly per side (largest, smallest) of each block of `group` positions x
    /// `value_group` channels, keys and values each (0: none).
    pub outliers: usize,
    /// GEAR: rank of the low-rank correction of each block's quantization error (0: none).
    pub rank: usize,
}

/// The largest GEAR block side (tokens or channels): `shaders/kv/permutations`' MAX_SIDE.
pub const GEAR_MAX_SIDE: usize = 128;
/// The largest GEAR rank (MAX_FACTOR / MAX_SIDE).
pub const GEAR_MAX_RANK: usize = 4;
/// The most entries a GEAR block may have (MARK_WORDS x 32; the selection key's 13-bit index).
pub const GEAR_MAX_BLOCK: usize = 8192;
/// Power-iteration rounds (GEAR's `loop`): POWER_ROUNDS.
pub const GEAR_ROUNDS: usize = 3;

impl KvLayout {
    /// Whether positions become codes (bits below 16).
    pub fn quantized(&self) -> bool {
        self.bits < 16
    }

    /// Checks the layout's arithmetic: supported bits, whole words of codes per position and per value
    /// group, channels in fours, and every word offset within u32.
    pub fn check(&self, kernel: &'static str) -> Result<(), KernelError> {
        plan::ensure(matches!(self.bits, 2 | 4 | 8 | 16), kernel, || {
            format!("{} bits per value (2, 4, 8 or 16)", self.bits)
        })?;
        plan::ensure(self.kv > 0 && self.kv.is_multiple_of(4), kernel, || {
            format!(
                "{} channels per position must be a positive multiple of 4",
                self.kv
            )
        })?;
        plan::ensure(self.capacity > 0, kernel, || {
            "a cache of 0 positions".into()
        })?;
        if self.quantized() {
            let cpw = 32 / self.bits as usize;
            plan::ensure(
                self.value_group > 0
                    && self.kv.is_multiple_of(self.value_group)
                    && self.value_group.is_multiple_of(cpw.max(4)),
                kernel,
                || {
                    format!(
                        "a value group of {} channels must divide {} and be a multiple of {}",
                        self.value_group,
                        self.kv,
                        cpw.max(4)
                    )
                },
            )?;
        }
        plan::ensure(self.group > 0, kernel, || "a key group of 0 tokens".into())?;
        if self.gear() {
            let n = self.group.saturating_mul(self.value_group);
            plan::ensure(
                self.quantized()
                    && self.group <= GEAR_MAX_SIDE
                    && self.value_group <= GEAR_MAX_SIDE
                    && n <= GEAR_MAX_BLOCK
                    && self.rank <= GEAR_MAX_RANK
                    && self.outliers.saturating_mul(2) <= n
                    && self.group.is_multiple_of(2),
                kernel,
                || {
                    format!(
                        "a GEAR block of {} tokens x {} channels at {} bits with {} outliers per side and rank {} (codes, sides up to {GEAR_MAX_SIDE} and even tokens, at most {GEAR_MAX_BLOCK} entries, rank up to {GEAR_MAX_RANK}, outliers at most half the entries)",
                        self.group, self.value_group, self.bits, self.outliers, self.rank
                    )
                },
            )?;
        }
        plan::index_u32(kernel, "cache words", self.words())?;
        Ok(())
    }

    /// Whether blocks carry GEAR's outliers or low-rank factors (written by kv_gear, not kv_store).
    pub fn gear(&self) -> bool {
        self.outliers > 0 || self.rank > 0
    }

    /// Key/value heads (value groups per position).
    pub(crate) fn heads(&self) -> usize {
        self.kv / self.value_group.max(1)
    }

    /// GEAR words per block (of `group` positions): outlier lists and factors of every head, keys and
    /// values.
    fn gear_words(&self) -> (usize, usize) {
        if !self.gear() {
            return (0, 0);
        }
        let units = 2 * self.heads();
        (
            units * 2 * self.outliers,
            units * (self.group + self.value_group) * self.rank / 2,
        )
    }

    /// Code words per position (0 in f16).
    fn code_words(&self) -> usize {
        if self.quantized() {
            self.kv * self.bits as usize / 32
        } else {
            0
        }
    }

    /// Positions the ring holds: `window + group` (or the capacity), enough for the positions not yet
    /// compressed after any step. An f16 cache sets the window to the capacity: everything stays in the
    /// ring. A 16-bit layout with a smaller window is the ring of a cache whose older positions are kept
    /// elsewhere (the low-rank features): kv_load leaves positions before `compressed` to that other form.
    pub fn ring(&self) -> usize {
        (self.window.saturating_add(self.group)).min(self.capacity)
    }

    /// Word offsets: key codes, value codes, key statistics, value statistics, ring keys, ring values,
    /// GEAR outliers, GEAR factors, and the end.
    pub fn offsets(&self) -> [usize; 9] {
        let cw = self.code_words() * self.capacity;
        let (key_stats, value_stats) = if self.quantized() {
            (
                self.capacity.div_ceil(self.group) * self.kv,
                self.capacity * (self.kv / self.value_group),
            )
        } else {
            (0, 0)
        };
        let ring = self.ring() * self.kv / 2;
        let k_stats = 2 * cw;
        let v_stats = k_stats + key_stats;
        let ring_k = v_stats + value_stats;
        let out = ring_k + 2 * ring;
        let blocks = self.capacity.div_ceil(self.group);
        let (ow, fw) = self.gear_words();
        [
            0,
            cw,
            k_stats,
            v_stats,
            ring_k,
            ring_k + ring,
            out,
            out + blocks * ow,
            out + blocks * (ow + fw),
        ]
    }

    /// Words of the layer's buffer (saturating: [`KvLayout::check`] refuses what does not fit u32).
    pub fn words(&self) -> usize {
        let sat = |a: usize, b: usize| a.saturating_mul(b);
        let cw = sat(self.code_words(), self.capacity);
        let stats = if self.quantized() && self.group > 0 && self.value_group > 0 {
            sat(self.capacity.div_ceil(self.group), self.kv)
                .saturating_add(sat(self.capacity, self.kv / self.value_group))
        } else {
            0
        };
        let (ow, fw) = if self.value_group > 0 && self.group > 0 {
            self.gear_words()
        } else {
            (0, 0)
        };
        let gear = sat(
            self.capacity.div_ceil(self.group.max(1)),
            ow.saturating_add(fw),
        );
        sat(2, cw)
            .saturating_add(stats)
            .saturating_add(sat(self.ring(), self.kv))
            .saturating_add(gear)
    }

    /// Bytes the compressed form takes per position, keys and values, every code and statistic counted
    /// (the ring's positions are f16: 4 bytes per channel; in f16 that is the whole cost).
    pub fn bytes_per_position(&self) -> f64 {
        if self.quantized() {
            let codes = 2.0 * (self.kv * self.bits as usize) as f64 / 8.0;
            let key_stats = 4.0 * self.kv as f64 / self.group as f64;
            let value_stats = 4.0 * (self.kv / self.value_group) as f64;
            let (ow, fw) = self.gear_words();
            let gear = 4.0 * (ow + fw) as f64 / self.group as f64;
            codes + key_stats + value_stats + gear
        } else {
            4.0 * self.kv as f64
        }
    }

    /// The positions compressed after a step that fills `pos`, when `compressed` were before: every
    /// complete key group at least `window` positions old.
    pub fn compressible(&self, compressed: usize, pos: usize) -> usize {
        (pos.saturating_sub(self.window) / self.group.max(1) * self.group).max(compressed)
    }

    pub(crate) fn params(&self) -> Params {
        let o = self.offsets();
        Params {
            kv: self.kv as u32,
            group: self.group as u32,
            value_group: self.value_group as u32,
            ring: self.ring() as u32,
            k_codes: o[0] as u32,
            v_codes: o[1] as u32,
            k_stats: o[2] as u32,
            v_stats: o[3] as u32,
            ring_k: o[4] as u32,
            ring_v: o[5] as u32,
            outliers: self.outliers as u32,
            rank: self.rank as u32,
            out_off: o[6] as u32,
            fac_off: o[7] as u32,
            ..Params::default()
        }
    }

    /// The variant of `kernel` for this layout's bits: the planner's, or a forced one that must be it
    /// (the codes' width is a property of the data, not a choice).
    pub(crate) fn variant(
        &self,
        kernel: &'static str,
        caps: &Caps,
        choice: Choice<'_>,
    ) -> Result<&'static wring_kernels_core::Variant, KernelError> {
        let name = self.variant_name();
        let v = crate::select(kernel, name, "it is the cache's format", caps, choice)?;
        plan::ensure(v.name == name, kernel, || {
            format!("variant {} does not hold {}-bit caches", v.id(), self.bits)
        })?;
        Ok(v)
    }

    fn variant_name(&self) -> &'static str {
        match self.bits {
            8 => "q8",
            4 => "q4",
            2 => "q2",
            _ => "f16",
        }
    }

    /// A group's (scale, minimum) as stored: `shaders/common/kv.wgsl`'s `stat_of`.
    pub(crate) fn stat_of(&self, mn: f32, mx: f32) -> (f32, f32) {
        stat_for(self.bits, mn, mx)
    }

    /// `shaders/common/kv.wgsl`'s `code_of`.
    pub(crate) fn code_of(&self, x: f32, st: (f32, f32)) -> u32 {
        code_for(self.bits, x, st)
    }
}

/// `shaders/common/kvquant.wgsl`'s `stat_of` at `bits`: (scale, minimum) of a group spanning [mn, mx].
pub(crate) fn stat_for(bits: u32, mn: f32, mx: f32) -> (f32, f32) {
    let levels = ((1u32 << bits) - 1) as f32;
    let m = f16_round(mn.clamp(-65504.0, 65504.0));
    let d = f16_round(((mx - m) / levels).clamp(0.0, 65504.0));
    (d, m)
}

/// `shaders/common/kvquant.wgsl`'s `code_of` at `bits`.
pub(crate) fn code_for(bits: u32, x: f32, (d, m): (f32, f32)) -> u32 {
    if d <= 0.0 {
        return 0;
    }
    let levels = ((1u32 << bits) - 1) as f32;
    ((x - m) / d + 0.5).floor().clamp(0.0, levels) as u32
}

/// `shaders/common/f16.wgsl`'s `f16_round`: the nearest f16 (ties to even) by integer arithmetic on the
/// bits, magnitudes below 2^-14 flushed to zero.
pub fn f16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff < 0x3880_0000 {
        return 0.0;
    }
    let up = bits.wrapping_add(0x0fff + ((bits >> 13) & 1));
    f32::from_bits(up & 0xffff_e000)
}

pub(crate) fn pack(lo: f32, hi: f32) -> u32 {
    u32::from(f16::from_f32(lo).to_bits()) | (u32::from(f16::from_f32(hi).to_bits()) << 16)
}

pub(crate) fn unpack(w: u32) -> (f32, f32) {
    (
        f16::from_bits(w as u16).to_f32(),
        f16::from_bits((w >> 16) as u16).to_f32(),
    )
}

/// `kv_load`: keys and values of positions [0, upto) as f32 \[position\]\[channel\], decoded from codes before
/// `compressed` and read from the ring after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLoad {
    /// The layer's cache layout.
    pub layout: KvLayout,
    /// Positions held as codes.
    pub compressed: usize,
    /// Positions written (the step's first position).
    pub upto: usize,
}

impl KvLoad {
    fn checked(&self) -> Result<Params, KernelError> {
        let l = &self.layout;
        l.check("kv_load")?;
        plan::ensure(
            self.compressed <= self.upto
                && self.upto <= l.capacity
                && self.upto - self.compressed <= l.ring(),
            "kv_load",
            || {
                format!(
                    "positions [0, {}) with {} compressed do not fit a cache of {} positions and a ring of {}",
                    self.upto,
                    self.compressed,
                    l.capacity,
                    l.ring()
                )
            },
        )?;
        plan::index_u32("kv_load", "values", self.upto.saturating_mul(l.kv))?;
        Ok(Params {
            compressed: self.compressed as u32,
            upto: self.upto as u32,
            ..l.params()
        })
    }
}

impl Kernel for KvLoad {
    fn kernel(&self) -> &'static str {
        "kv_load"
    }

    fn operands(&self) -> Vec<Operand> {
        let n = self.upto.saturating_mul(self.layout.kv);
        vec![
            Operand::read("store", DType::U32, self.layout.words()),
            Operand::write("k", DType::F32, n),
            Operand::write("v", DType::F32, n),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = self.layout.variant("kv_load", caps, choice)?;
        let items = (self.upto * self.layout.kv / 4) as u64;
        plan::per_item("kv_load", v, items, bytemuck::bytes_of(&p), caps)
    }
}

/// CPU twin of `kv_load` (one iteration per 4 channels of a position, the shader's arithmetic; a 16-bit
/// layout leaves positions before `compressed` untouched).
pub fn cpu_load(u: &KvLoad, store: &[u32], k: &mut [f32], v: &mut [f32]) {
    let l = &u.layout;
    let p = u.checked().expect("a checked unit");
    let (kv, bits) = (l.kv, l.bits as usize);
    let first = if l.quantized() { 0 } else { u.compressed };
    for pos in first..u.upto {
        for c in 0..kv {
            let i = pos * kv + c;
            if pos < u.compressed {
                let cpw = 32 / bits;
                let at = i / cpw;
                let shift = (c % cpw) * bits;
                let mask = (1u32 << bits) - 1;
                let code = |off: u32| ((store[off as usize + at] >> shift) & mask) as f32;
                let (d, m) = unpack(store[p.k_stats as usize + (pos / l.group) * kv + c]);
                k[i] = m + d * code(p.k_codes);
                let (d, m) = unpack(
                    store[p.v_stats as usize + pos * (kv / l.value_group) + c / l.value_group],
                );
                v[i] = m + d * code(p.v_codes);
            } else {
                let slot = ((pos % l.ring()) * kv + c) / 2;
                let half = |off: u32| {
                    let (a, b) = unpack(store[off as usize + slot]);
                    if c % 2 == 0 { a } else { b }
                };
                k[i] = half(p.ring_k);
                v[i] = half(p.ring_v);
            }
        }
    }
}

/// `kv_store`: after a step over positions [pos0, pos) that attended to `k`, `v` \[position\]\[channel\]
/// (f32, every position up to `pos`), positions [compressed, upto) become codes and [max(pos0, upto),
/// pos) go into the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvStore {
    /// The layer's cache layout.
    pub layout: KvLayout,
    /// Positions already codes.
    pub compressed: usize,
    /// Positions codes after this launch (from [`KvLayout::compressible`]).
    pub upto: usize,
    /// The step's first position.
    pub pos0: usize,
    /// Positions filled after the step.
    pub pos: usize,
}

impl KvStore {
    /// The store after a step over [pos0, pos) with `compressed` positions codes before it.
    pub fn after_step(layout: KvLayout, compressed: usize, pos0: usize, pos: usize) -> KvStore {
        KvStore {
            layout,
            compressed,
            upto: layout.compressible(compressed, pos),
            pos0,
            pos,
        }
    }

    fn checked(&self) -> Result<Params, KernelError> {
        let l = &self.layout;
        l.check("kv_store")?;
        let groups_whole =
            self.compressed.is_multiple_of(l.group) && self.upto.is_multiple_of(l.group);
        plan::ensure(
            self.compressed <= self.upto
                && self.upto <= self.pos
                && self.pos0 <= self.pos
                && self.compressed <= self.pos0
                && self.pos <= l.capacity
                && self.pos - self.upto <= l.ring()
                && groups_whole,
            "kv_store",
            || {
                format!(
                    "a step over [{}, {}) compressing [{}, {}) does not fit a cache of {} positions, groups of {} and a ring of {}",
                    self.pos0,
                    self.pos,
                    self.compressed,
                    self.upto,
                    l.capacity,
                    l.group,
                    l.ring()
                )
            },
        )?;
        plan::index_u32("kv_store", "values", self.pos.saturating_mul(l.kv))?;
        // GEAR's codes are kv_gear's: its quantizer leaves the outliers out of the statistics.
        let (items_k, items_v) = if l.quantized() && !l.gear() {
            let cpw = 32 / l.bits as usize;
            let span = self.upto - self.compressed;
            (span / l.group * (l.kv / cpw), span * (l.kv / l.value_group))
        } else {
            (0, 0)
        };
        Ok(Params {
            compressed: self.compressed as u32,
            upto: self.upto as u32,
            pos0: self.pos0 as u32,
            pos: self.pos as u32,
            items_k: items_k as u32,
            items_v: items_v as u32,
            ..l.params()
        })
    }

    /// Ring positions written: [max(pos0, upto), pos).
    fn ring_first(&self) -> usize {
        self.pos0.max(self.upto)
    }
}

impl Kernel for KvStore {
    fn kernel(&self) -> &'static str {
        "kv_store"
    }

    fn operands(&self) -> Vec<Operand> {
        let n = self.pos.saturating_mul(self.layout.kv);
        vec![
            Operand::read("k", DType::F32, n),
            Operand::read("v", DType::F32, n),
            Operand::write("store", DType::U32, self.layout.words()),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = self.layout.variant("kv_store", caps, choice)?;
        let ring = (self.pos - self.ring_first()) * self.layout.kv / 4;
        let items = u64::from(p.items_k) + u64::from(p.items_v) + ring as u64;
        plan::per_item("kv_store", v, items, bytemuck::bytes_of(&p), caps)
    }
}

/// CPU twin of `kv_store`: the shader's statistics, rounding and packing, group by group.
pub fn cpu_store(u: &KvStore, k: &[f32], v: &[f32], store: &mut [u32]) {
    let l = &u.layout;
    let p = u.checked().expect("a checked unit");
    let kv = l.kv;
    if l.quantized() && !l.gear() {
        let bits = l.bits as usize;
        let cpw = 32 / bits;
        for g in u.compressed / l.group..u.upto / l.group {
            let p0 = g * l.group;
            for c in 0..kv {
                let col = (p0..p0 + l.group).map(|t| k[t * kv + c]);
                let mn = col.clone().fold(f32::INFINITY, f32::min);
                let mx = col.fold(f32::NEG_INFINITY, f32::max);
                let s = l.stat_of(mn, mx);
                store[p.k_stats as usize + g * kv + c] = pack(s.0, s.1);
                for t in p0..p0 + l.group {
                    let i = t * kv + c;
                    let w = &mut store[p.k_codes as usize + i / cpw];
                    if c % cpw == 0 {
                        *w = 0;
                    }
                    *w |= l.code_of(k[i], s) << ((c % cpw) * bits);
                }
            }
        }
        let per = kv / l.value_group;
        for pos in u.compressed..u.upto {
            for g in 0..per {
                let base = pos * kv + g * l.value_group;
                let vals = &v[base..base + l.value_group];
                let mn = vals.iter().copied().fold(f32::INFINITY, f32::min);
                let mx = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let s = l.stat_of(mn, mx);
                store[p.v_stats as usize + pos * per + g] = pack(s.0, s.1);
                for (j, &x) in vals.iter().enumerate() {
                    let w = &mut store[p.v_codes as usize + (base + j) / cpw];
                    if j % cpw == 0 {
                        *w = 0;
                    }
                    *w |= l.code_of(x, s) << ((j % cpw) * bits);
                }
            }
        }
    }
    for pos in u.ring_first()..u.pos {
        for c in (0..kv).step_by(2) {
            let slot = ((pos % l.ring()) * kv + c) / 2;
            let a = pos * kv + c;
            let pair = |x: &[f32]| pack(f16_round(x[a]), f16_round(x[a + 1]));
            store[p.ring_k as usize + slot] = pair(k);
            store[p.ring_v as usize + slot] = pair(v);
        }
    }
}
