//! EMS (Li, Li, Meng et al., 2024, "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache
//! Compression"): an f32 cache kept within a per-head budget of slots. `kv_ems_score`
//! (`shaders/kv/kv_ems_score.wgsl`) accumulates each slot's Global-Local score after attention;
//! `kv_ems_compact` (`shaders/kv/kv_ems_compact.wgsl`) keeps the recent window and the best scored as class
//! centers, merges the next tier into its most similar center and drops the rest (the zero class).
//! The state layout is `shaders/common/ems.wgsl`'s.
//!
//! There is no public reference code; this follows the paper's description as
//! `../shared/compression-methods.md` section 3.10 gives it: normalized accumulated attention plus a
//! local window (here an exponential moving average over about 32 queries, so that it means the same when
//! decoding one token at a time and when scoring 32-token steps), and merges weighted by that score.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// Largest head dimension a merge accumulates (MAX_DIM).
pub const MAX_DIM: usize = 128;
/// Most slots a head may hold before a compaction: the selection key's 13-bit index.
pub const MAX_SLOTS: usize = 8192;
/// The observation window's horizon in queries: the moving average's decay is 1 - 1 / WINDOW_QUERIES.
pub const WINDOW_QUERIES: f32 = 32.0;
/// The class of evicted slots.
pub const ZERO_CLASS: u32 = u32::MAX;

/// `shaders/common/ems.wgsl`'s `EmsParams`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub tokens: u32,
    pub cache_pos: u32,
    pub n: u32,
    pub budget: u32,
    pub window: u32,
    pub capacity: u32,
    pub acc: u32,
    pub seen: u32,
    pub obs: u32,
    pub dest: u32,
    pub centers: u32,
    pub merges: u32,
    pub route: u32,
    pub decay: f32,
    pub pad: [u32; 3],
}

/// One layer's EMS cache: its shape and budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmsLayout {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (a divisor of `n_heads`).
    pub n_kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Slots the f32 cache holds (the most a step may fill; a cache no larger than the budget is never
    /// compacted).
    pub capacity: usize,
    /// Slots per key/value head after a compaction.
    pub budget: usize,
    /// The most recent slots a compaction keeps as they are.
    pub window: usize,
}

impl EmsLayout {
    /// Words of the state buffer: seven arrays of `capacity` words per key/value head.
    pub fn state_words(&self) -> usize {
        7usize
            .saturating_mul(self.n_kv_heads)
            .saturating_mul(self.capacity)
    }

    /// Refuses a layout the kernels cannot take, naming `kernel`: query heads that are not a multiple of the
    /// key/value heads, a head wider than `MAX_DIM`, a budget not above the window, a capacity above
    /// `MAX_SLOTS`, or state too large to index.
    pub fn check(&self, kernel: &'static str) -> Result<(), KernelError> {
        plan::ensure(
            self.n_kv_heads > 0
                && self.n_heads.is_multiple_of(self.n_kv_heads)
                && self.head_dim > 0
                && self.head_dim <= MAX_DIM,
            kernel,
            || {
                format!(
                    "{} query heads over {} key/value heads of {} dimensions (at most {MAX_DIM})",
                    self.n_heads, self.n_kv_heads, self.head_dim
                )
            },
        )?;
        plan::ensure(
            self.window < self.budget && self.capacity <= MAX_SLOTS,
            kernel,
            || {
                format!(
                    "a budget of {} slots must exceed the window of {}, in a cache of {} slots (at most {MAX_SLOTS})",
                    self.budget, self.window, self.capacity
                )
            },
        )?;
        plan::index_u32(kernel, "state words", self.state_words())?;
        plan::index_u32(
            kernel,
            "cache values",
            self.capacity
                .saturating_mul(self.n_kv_heads)
                .saturating_mul(self.head_dim),
        )?;
        Ok(())
    }

    fn params(&self, cache_pos: usize, tokens: usize) -> Params {
        let a = (self.n_kv_heads * self.capacity) as u32;
        Params {
            n_heads: self.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            head_dim: self.head_dim as u32,
            tokens: tokens as u32,
            cache_pos: cache_pos as u32,
            n: (cache_pos + tokens) as u32,
            budget: self.budget as u32,
            window: self.window as u32,
            capacity: self.capacity as u32,
            acc: 0,
            seen: a,
            obs: 2 * a,
            dest: 3 * a,
            centers: 4 * a,
            merges: 5 * a,
            route: 6 * a,
            decay: 1.0 - 1.0 / WINDOW_QUERIES,
            pad: [0; 3],
        }
    }

    fn cache_values(&self) -> usize {
        self.capacity * self.n_kv_heads * self.head_dim
    }
}

/// `kv_ems_score`: after a step's attention over slots [0, cache_pos + tokens) (its queries at slots
/// cache_pos..), the softmax output `probs` \[tokens\]\[n_heads\]\[cache_pos + tokens\] added to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvEmsScore {
    /// The layer's cache shape and budget.
    pub layout: EmsLayout,
    /// Slots filled before the step.
    pub cache_pos: usize,
    /// Tokens of the step.
    pub tokens: usize,
}

/// `kv_ems_compact`: `n` slots (more than the budget) brought back to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvEmsCompact {
    /// The layer's cache shape and budget.
    pub layout: EmsLayout,
    /// Slots filled now.
    pub n: usize,
}

impl KvEmsScore {
    fn checked(&self) -> Result<Params, KernelError> {
        let l = &self.layout;
        l.check("kv_ems_score")?;
        let n = self.cache_pos.saturating_add(self.tokens);
        plan::ensure(self.tokens > 0 && n <= l.capacity, "kv_ems_score", || {
            format!(
                "a step of {} tokens after {} slots does not fit {} slots",
                self.tokens, self.cache_pos, l.capacity
            )
        })?;
        plan::index_u32(
            "kv_ems_score",
            "probabilities",
            self.tokens.saturating_mul(l.n_heads).saturating_mul(n),
        )?;
        Ok(l.params(self.cache_pos, self.tokens))
    }
}

impl KvEmsCompact {
    fn checked(&self) -> Result<Params, KernelError> {
        let l = &self.layout;
        l.check("kv_ems_compact")?;
        plan::ensure(
            self.n > l.budget && self.n <= l.capacity,
            "kv_ems_compact",
            || {
                format!(
                    "{} slots are not above the budget of {} within {}",
                    self.n, l.budget, l.capacity
                )
            },
        )?;
        Ok(l.params(self.n, 0))
    }
}

impl Kernel for KvEmsScore {
    fn kernel(&self) -> &'static str {
        "kv_ems_score"
    }

    fn operands(&self) -> Vec<Operand> {
        let n = self.cache_pos.saturating_add(self.tokens);
        vec![
            Operand::read(
                "probs",
                DType::F32,
                self.tokens
                    .saturating_mul(self.layout.n_heads)
                    .saturating_mul(n),
            ),
            Operand::write("state", DType::U32, self.layout.state_words()),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = crate::choose(
            &crate::catalogue::kv_ems_score::F32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let items = u64::from(p.n) * self.layout.n_kv_heads as u64;
        plan::per_item("kv_ems_score", v, items, bytemuck::bytes_of(&p), caps)
    }
}

impl Kernel for KvEmsCompact {
    fn kernel(&self) -> &'static str {
        "kv_ems_compact"
    }

    fn operands(&self) -> Vec<Operand> {
        let n = self.layout.cache_values();
        vec![
            Operand::write("k", DType::F32, n),
            Operand::write("v", DType::F32, n),
            Operand::write("state", DType::U32, self.layout.state_words()),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = crate::choose(
            &crate::catalogue::kv_ems_compact::F32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let groups = self.layout.n_kv_heads as u64;
        plan::linear("kv_ems_compact", v, groups, bytemuck::bytes_of(&p), caps)
    }
}

fn f(state: &[u32], at: u32) -> f32 {
    f32::from_bits(state[at as usize])
}

/// `shaders/common/ems.wgsl`'s `ems_score`.
fn score(acc: f32, seen: f32, obs: f32) -> f32 {
    acc / seen.max(1.0) + obs
}

/// `shaders/common/ems.wgsl`'s `ems_key`.
fn key(score: f32, j: usize) -> u32 {
    ((score.max(0.0).to_bits() >> 12) << 13) | (8191 - j as u32)
}

/// CPU twin of `kv_ems_score`.
pub fn cpu_score(u: &KvEmsScore, probs: &[f32], state: &mut [u32]) {
    let p = u.checked().expect("a checked unit");
    let l = &u.layout;
    let group = l.n_heads / l.n_kv_heads;
    let n = p.n as usize;
    for h in 0..l.n_kv_heads {
        for j in 0..n {
            let at = (h * l.capacity + j) as u32;
            let (mut acc, mut seen, mut obs) = (0.0f32, 0.0f32, 0.0f32);
            if j < u.cache_pos {
                acc = f(state, p.acc + at);
                seen = f(state, p.seen + at);
                obs = f(state, p.obs + at);
            }
            for t in 0..u.tokens {
                if j > u.cache_pos + t {
                    continue;
                }
                let mut pr = 0.0f32;
                for g in 0..group {
                    pr += probs[(t * l.n_heads + h * group + g) * n + j];
                }
                acc += pr;
                seen += group as f32;
                obs = p.decay * obs + (1.0 - p.decay) * (pr / group as f32);
            }
            state[(p.acc + at) as usize] = acc.to_bits();
            state[(p.seen + at) as usize] = seen.to_bits();
            state[(p.obs + at) as usize] = obs.to_bits();
        }
    }
}

/// CPU twin of `kv_ems_compact`, phase by phase in the shader's order.
pub fn cpu_compact(u: &KvEmsCompact, k: &mut [f32], v: &mut [f32], state: &mut [u32]) {
    let p = u.checked().expect("a checked unit");
    let l = &u.layout;
    let (n, hd, cap) = (u.n, l.head_dim, l.capacity);
    let n_old = n - l.window;
    let kept = l.budget - l.window;
    let merged = (n - l.budget).div_ceil(2);
    for h in 0..l.n_kv_heads {
        let base = h * cap;
        let sc = |state: &[u32], j: usize| {
            let at = (base + j) as u32;
            score(
                f(state, p.acc + at),
                f(state, p.seen + at),
                f(state, p.obs + at),
            )
        };
        let row = |j: usize| (j * l.n_kv_heads + h) * hd;
        let norm = |k: &[f32], j: usize| {
            let mut s = 0.0f32;
            for d in 0..hd {
                s += k[row(j) + d] * k[row(j) + d];
            }
            s.sqrt()
        };
        let mut keys: Vec<u32> = (0..n_old).map(|j| key(sc(state, j), j)).collect();
        let all = keys.clone();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let (hi, lo) = (keys[kept - 1], keys[kept + merged - 1]);
        let (mut dest, mut centers, mut merges) = (vec![ZERO_CLASS; n], Vec::new(), Vec::new());
        let mut next = 0u32;
        for j in 0..n {
            if j >= n_old || all[j] >= hi {
                dest[j] = next;
                next += 1;
                if j < n_old {
                    centers.push(j);
                }
            } else if all[j] >= lo {
                merges.push(j);
            }
        }
        let route: Vec<usize> = merges
            .iter()
            .map(|&j| {
                let nj = norm(k, j).max(1e-30);
                let (mut best, mut best_cos) = (0, -2.0f32);
                for (m, &c) in centers.iter().enumerate() {
                    let mut dot = 0.0f32;
                    for d in 0..hd {
                        dot += k[row(j) + d] * k[row(c) + d];
                    }
                    let cs = dot / (nj * norm(k, c).max(1e-30));
                    if cs > best_cos {
                        (best_cos, best) = (cs, m);
                    }
                }
                best
            })
            .collect();
        let weight = |state: &[u32], j: usize| sc(state, j) + 1e-6;
        for (m, &c) in centers.iter().enumerate() {
            let nc = norm(k, c);
            let wc = weight(state, c);
            let mut dir: Vec<f32> = (0..hd)
                .map(|d| wc * k[row(c) + d] / nc.max(1e-30))
                .collect();
            let mut val: Vec<f32> = (0..hd).map(|d| wc * v[row(c) + d]).collect();
            let (mut wsum, mut acc) = (wc, f(state, p.acc + (base + c) as u32));
            let mut took = false;
            for (i, &j) in merges.iter().enumerate() {
                if route[i] != m {
                    continue;
                }
                let wj = weight(state, j);
                let nj = norm(k, j).max(1e-30);
                for d in 0..hd {
                    dir[d] += wj * k[row(j) + d] / nj;
                    val[d] += wj * v[row(j) + d];
                }
                wsum += wj;
                acc += f(state, p.acc + (base + j) as u32);
                took = true;
            }
            if !took {
                continue;
            }
            let mut s = 0.0f32;
            for x in &dir {
                s += x * x;
            }
            let scale = nc / s.sqrt().max(1e-30);
            for d in 0..hd {
                k[row(c) + d] = dir[d] * scale;
                v[row(c) + d] = val[d] / wsum;
            }
            state[p.acc as usize + base + c] = acc.to_bits();
        }
        for j in 0..n {
            let to = dest[j];
            if to != ZERO_CLASS && to as usize != j {
                let to = to as usize;
                for d in 0..hd {
                    k[row(to) + d] = k[row(j) + d];
                    v[row(to) + d] = v[row(j) + d];
                }
                for a in 0..3 {
                    let off = p.acc as usize + a * l.n_kv_heads * cap + base;
                    state[off + to] = state[off + j];
                }
            }
        }
        // The scratch the shader leaves: each slot's class, the centers, the merged slots, their routes.
        for j in 0..n {
            state[p.dest as usize + base + j] = dest[j];
        }
        for (m, &c) in centers.iter().enumerate() {
            state[p.centers as usize + base + m] = c as u32;
        }
        for (i, &j) in merges.iter().enumerate() {
            state[p.merges as usize + base + i] = j as u32;
            state[p.route as usize + base + i] = route[i] as u32;
        }
    }
}
