//! `shaders/attn_scores.wgsl` and `shaders/attn_pv.wgsl`: causal grouped-query attention in three launches
//! (scores, softmax.wgsl with scale 1, weighted values) over a KV cache laid out \[position\]\[kv head\]\[dim\],
//! for callers that need the probabilities (EMS scores its slots by them); `shaders/attn_fused.wgsl`: the
//! same attention in one launch with an online softmax and no scores tensor.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::{self, NEG_MAX_F32};
use wring_kernels_core::{DType, Kernel, Operand, q8};

/// The shape of one attention launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention {
    /// Query tokens (1 when decoding).
    pub tokens: usize,
    /// Cache positions filled, including this step's tokens: pos0 + tokens.
    pub kv_len: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Dimensions per head (a multiple of 4).
    pub head_dim: usize,
    /// Position of the first query token.
    pub pos0: usize,
    /// Score scale, 1 / sqrt(head_dim) for llama.
    pub scale: f32,
    /// Attention soft-capping (Gemma 2: a score s becomes softcap * tanh(s / softcap)); 0 for none.
    pub softcap: f32,
    /// A sliding-window layer's window (a query at p sees keys p - window + 1 ..= p); 0 for none.
    pub window: usize,
}

/// The shaders' `Params` (shared layout; `scale` is padding for attn_pv).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub tokens: u32,
    pub kv_len: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub pos0: u32,
    pub scale: f32,
    pub softcap: f32,
    pub window: u32,
    pub pad: [u32; 3],
}

impl Attention {
    fn check(&self) -> Result<Params, KernelError> {
        plan::ensure(
            self.head_dim.is_multiple_of(4) && self.head_dim > 0,
            "attention",
            || format!("head_dim {} must be a multiple of 4", self.head_dim),
        )?;
        plan::ensure(
            self.n_kv_heads > 0 && self.n_heads.is_multiple_of(self.n_kv_heads),
            "attention",
            || {
                format!(
                    "{} key/value heads must divide {} query heads",
                    self.n_kv_heads, self.n_heads
                )
            },
        )?;
        plan::ensure(self.pos0 + self.tokens == self.kv_len, "attention", || {
            format!(
                "kv_len {} must be pos0 {} + tokens {}",
                self.kv_len, self.pos0, self.tokens
            )
        })?;
        plan::index_u32(
            "attention",
            "tokens * heads * kv_len",
            self.tokens
                .saturating_mul(self.n_heads)
                .saturating_mul(self.kv_len),
        )?;
        Ok(Params {
            tokens: self.tokens as u32,
            kv_len: self.kv_len as u32,
            n_heads: self.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            head_dim: self.head_dim as u32,
            pos0: self.pos0 as u32,
            scale: self.scale,
            softcap: self.softcap,
            window: plan::index_u32("attention", "window", self.window)?,
            pad: [0; 3],
        })
    }

    /// How a dot product becomes a score ([`reduce::Score`]).
    pub fn score(&self) -> reduce::Score {
        reduce::Score {
            scale: self.scale,
            softcap: self.softcap,
        }
    }

    /// The three-launch composite makes plain scores only: soft-capping and windows are the fused
    /// kernels'.
    fn plain_scores(&self, kernel: &'static str) -> Result<(), KernelError> {
        plan::ensure(self.softcap == 0.0 && self.window == 0, kernel, || {
            "soft-capped or windowed attention runs in attn_fused, not the three-launch composite"
                .into()
        })
    }

    /// The scores launch of this attention: s \[tokens\]\[heads\]\[kv_len\].
    pub fn scores(self) -> AttnScores {
        AttnScores(self)
    }

    /// The weighted-values launch of this attention: o \[tokens\]\[heads\]\[head_dim\].
    pub fn pv(self) -> AttnPv {
        AttnPv(self)
    }

    /// The whole attention in one launch with an online softmax and no scores tensor: o
    /// \[tokens\]\[heads\]\[head_dim\].
    pub fn fused(self) -> AttnFused {
        AttnFused(self)
    }

    /// [`Attention::fused`] writing o as 8-bit activation units (`oq`, [`wring_kernels_core::q8`]) for the
    /// output projection's `qmatvec_q8`: the quantize_q8 launch folded in. head_dim must be a multiple of
    /// 32.
    pub fn fused_q8(self) -> AttnFusedQ8 {
        AttnFusedQ8(self)
    }

    /// CPU twin of attn_fused, operation for operation: per (token, head), the keys in order with the
    /// running maximum, the rescaled running sum and the rescaled accumulator.
    pub fn cpu_fused(&self, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32]) {
        let d = self.head_dim;
        let group = self.n_heads / self.n_kv_heads;
        for th in 0..self.tokens * self.n_heads {
            let (h, t) = (th % self.n_heads, th / self.n_heads);
            let first = reduce::window_start(self.pos0 + t, self.window);
            let keys = (first..self.kv_len.min(self.pos0 + t + 1)).map(|j| {
                let base = (j * self.n_kv_heads + h / group) * d;
                (&k[base..][..d], &v[base..][..d])
            });
            reduce::attend_row(&q[th * d..][..d], keys, self.score(), &mut o[th * d..][..d]);
        }
    }

    /// Values in the caches that a launch reads: kv_len positions of every key/value head.
    fn cache_len(&self) -> usize {
        self.kv_len * self.n_kv_heads * self.head_dim
    }

    /// CPU twin of attn_scores: one iteration per (t, h, j).
    pub fn cpu_scores(&self, q: &[f32], k: &[f32], s: &mut [f32]) {
        let d = self.head_dim;
        let group = self.n_heads / self.n_kv_heads;
        for (idx, out) in s
            .iter_mut()
            .enumerate()
            .take(self.tokens * self.n_heads * self.kv_len)
        {
            let j = idx % self.kv_len;
            let th = idx / self.kv_len;
            let (h, t) = (th % self.n_heads, th / self.n_heads);
            if j > self.pos0 + t {
                *out = NEG_MAX_F32;
                continue;
            }
            let qr = &q[th * d..][..d];
            let kr = &k[(j * self.n_kv_heads + h / group) * d..][..d];
            *out = reduce::dot4(qr, kr) * self.scale;
        }
    }

    /// CPU twin of attn_pv: one iteration per (t, h, group of 4 dims).
    pub fn cpu_pv(&self, p: &[f32], v: &[f32], o: &mut [f32]) {
        let d = self.head_dim;
        let group = self.n_heads / self.n_kv_heads;
        for th in 0..self.tokens * self.n_heads {
            let (h, t) = (th % self.n_heads, th / self.n_heads);
            let seen = self.kv_len.min(self.pos0 + t + 1);
            for c in 0..d {
                let mut acc = 0.0f32;
                for j in 0..seen {
                    acc += p[th * self.kv_len + j] * v[(j * self.n_kv_heads + h / group) * d + c];
                }
                o[th * d + c] = acc;
            }
        }
    }
}

/// `attn_scores`: s\[t\]\[h\]\[j\] = scale * q\[t\]\[h\] . k[j][h / group] for causal positions j.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnScores(pub Attention);

impl Kernel for AttnScores {
    fn kernel(&self) -> &'static str {
        "attn_scores"
    }

    fn operands(&self) -> Vec<Operand> {
        let a = &self.0;
        let rows = a.tokens * a.n_heads;
        vec![
            Operand::read("q", DType::F32, rows * a.head_dim),
            Operand::read("k", DType::F32, a.cache_len()),
            Operand::write("s", DType::F32, rows * a.kv_len),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let a = &self.0;
        let p = a.check()?;
        a.plain_scores("attn_scores")?;
        let v = crate::choose(
            &crate::catalogue::attn_scores::F32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let n = (a.tokens * a.n_heads * a.kv_len) as u64;
        plan::per_item("attn_scores", v, n, bytemuck::bytes_of(&p), caps)
    }
}

/// `attn_pv`: o\[t\]\[h\] = sum_j p\[t\]\[h\]\[j\] v[j][h / group].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnPv(pub Attention);

impl Kernel for AttnPv {
    fn kernel(&self) -> &'static str {
        "attn_pv"
    }

    fn operands(&self) -> Vec<Operand> {
        let a = &self.0;
        let rows = a.tokens * a.n_heads;
        vec![
            Operand::read("p", DType::F32, rows * a.kv_len),
            Operand::read("v", DType::F32, a.cache_len()),
            Operand::write("o", DType::F32, rows * a.head_dim),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let a = &self.0;
        let p = a.check()?;
        a.plain_scores("attn_pv")?;
        let v = crate::choose(
            &crate::catalogue::attn_pv::F32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let n = (a.tokens * a.n_heads * a.head_dim / 4) as u64;
        plan::per_item("attn_pv", v, n, bytemuck::bytes_of(&p), caps)
    }
}

/// The head dimension attn_fused's private arrays hold at most.
pub const FUSED_MAX_HEAD_DIM: usize = 128;

/// Query rows per workgroup the tiled variants come in.
const TILE_ROWS: [usize; 5] = [1, 2, 3, 4, 8];

/// The attn_fused variant for an adapter and a shape (`rows` query rows per key/value head), and why.
///
/// On a CPU adapter with 8-lane subgroups the tiled form (one key per lane, the rows of a tile sharing
/// each key and value load, the block's softmax through subgroup operations) measured 2.6x faster than
/// the per-row form for one decode token against 2,048 positions and 3.3x for a 512-token prefill
/// (SmolLM2's heads, `cargo xtask bench attn_fused`). Its tile is the smallest that holds a decode step's
/// rows (the query heads of one key/value head), and 8 rows for a prompt, which measured best. GPUs keep
/// the per-row form: an 8-lane workgroup would leave most of a wide subgroup idle.
fn tiled_choice(head_dim: usize, rows: usize, caps: &Caps) -> (String, &'static str) {
    let tiled_head = head_dim == 64 || head_dim == 128;
    if !(caps.software && caps.subgroup && caps.subgroup_min_size >= 8 && tiled_head) {
        return (
            "f32".into(),
            "the tiled form wants a CPU adapter with 8-lane subgroups and a head of 64 or 128",
        );
    }
    let r = TILE_ROWS.iter().copied().find(|&r| r >= rows).unwrap_or(8);
    (
        format!("tiled_d{head_dim}_r{r}"),
        "a CPU adapter with 8-lane subgroups: one key per lane over a tile of query rows",
    )
}

/// `attn_fused`: the whole causal grouped-query attention in one launch (see [`Attention::fused`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnFused(pub Attention);

impl Kernel for AttnFused {
    fn kernel(&self) -> &'static str {
        "attn_fused"
    }

    fn operands(&self) -> Vec<Operand> {
        let a = &self.0;
        let rows = a.tokens * a.n_heads;
        vec![
            Operand::read("q", DType::F32, rows * a.head_dim),
            Operand::read("k", DType::F32, a.cache_len()),
            Operand::read("v", DType::F32, a.cache_len()),
            Operand::write("o", DType::F32, rows * a.head_dim),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        plan_fused(&self.0, caps, choice, false)
    }
}

/// `attn_fused` writing 8-bit activation units (see [`Attention::fused_q8`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnFusedQ8(pub Attention);

impl Kernel for AttnFusedQ8 {
    fn kernel(&self) -> &'static str {
        "attn_fused"
    }

    fn operands(&self) -> Vec<Operand> {
        let a = &self.0;
        let values = a.tokens * a.n_heads * a.head_dim;
        q8::units_output(AttnFused(*a).operands(), "o", "oq", values)
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        plan::ensure(self.0.head_dim.is_multiple_of(32), "attn_fused", || {
            format!(
                "8-bit units need heads of whole 32-value units, not {}",
                self.0.head_dim
            )
        })?;
        plan_fused(&self.0, caps, choice, true)
    }
}

/// The plan of either output form of attn_fused: floats, or 8-bit units (`q8`).
fn plan_fused(
    a: &Attention,
    caps: &Caps,
    choice: Choice<'_>,
    q8: bool,
) -> Result<Plan, KernelError> {
    let p = a.check()?;
    plan::ensure(a.head_dim <= FUSED_MAX_HEAD_DIM, "attn_fused", || {
        format!(
            "head_dim {} exceeds the {FUSED_MAX_HEAD_DIM} its private arrays hold",
            a.head_dim
        )
    })?;
    let group = a.n_heads / a.n_kv_heads;
    let rows = a.tokens * group;
    let (mut auto, why) = tiled_choice(a.head_dim, rows, caps);
    if q8 {
        auto += "_q8";
    }
    let v = crate::select("attn_fused", &auto, why, caps, choice)?;
    plan::ensure(v.define("Q8OUT").is_some() == q8, "attn_fused", || {
        format!(
            "variant {} does not write {}",
            v.name,
            if q8 { "8-bit units" } else { "floats" }
        )
    })?;
    if let Some(hd) = v.define("HD") {
        plan::ensure(a.head_dim.to_string() == hd, "attn_fused", || {
            format!(
                "variant {} is built for head_dim {hd}, not {}",
                v.name, a.head_dim
            )
        })?;
        let wg = v.define_u32("WG");
        plan::ensure(caps.subgroup_min_size >= wg, "attn_fused", || {
            format!(
                "variant {} treats its {wg} lanes as one subgroup, and this adapter's subgroups may be {} wide",
                v.name, caps.subgroup_min_size
            )
        })?;
        let tiles = (rows as u64).div_ceil(u64::from(v.define_u32("QR")));
        return plan::linear(
            "attn_fused",
            v,
            tiles * a.n_kv_heads as u64,
            bytemuck::bytes_of(&p),
            caps,
        );
    }
    let n = (a.tokens * a.n_heads) as u64;
    plan::per_item("attn_fused", v, n, bytemuck::bytes_of(&p), caps)
}
