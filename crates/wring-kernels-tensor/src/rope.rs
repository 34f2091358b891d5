//! `shaders/rope.wgsl`: rotary position embedding as llama.cpp applies it.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan, Strided};
use wring_kernels_core::{DType, Kernel, Operand};

/// How dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// llama.cpp's default (`LLAMA_ROPE_TYPE_NORM`): adjacent pairs (2p, 2p + 1); llama-family GGUFs.
    Normal,
    /// GPT-NeoX's half split (`LLAMA_ROPE_TYPE_NEOX`): pairs (p, p + n_dims / 2).
    Neox,
}

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Dimensions per head (even).
    pub head_dim: u32,
    /// Heads per token.
    pub n_heads: u32,
    /// Rotated dimensions (even, at most head_dim); the rest pass through.
    pub n_dims: u32,
    /// tokens * n_heads * head_dim / 2: one invocation per pair.
    pub total_pairs: u32,
    /// base^(-2 / n_dims), so pair p turns by pos * freq_scale * theta_scale^p.
    pub theta_scale: f32,
    /// Linear position scaling (1 for none).
    pub freq_scale: f32,
    /// Uniform padding to 32 bytes.
    pub pad: [u32; 2],
}

/// The shape and frequencies of a RoPE launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Pairing of dimensions.
    pub mode: RopeMode,
    /// Tokens (rows of the position array).
    pub tokens: usize,
    /// Heads per token.
    pub n_heads: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Rotated dimensions.
    pub n_dims: usize,
    /// Frequency base (10000 for llama, 100000 for SmolLM2).
    pub freq_base: f32,
    /// Linear position scaling.
    pub freq_scale: f32,
}

impl Rope {
    fn params(&self) -> Params {
        Params {
            head_dim: self.head_dim as u32,
            n_heads: self.n_heads as u32,
            n_dims: self.n_dims as u32,
            total_pairs: (self.tokens * self.n_heads * self.head_dim / 2) as u32,
            theta_scale: self.freq_base.powf(-2.0 / self.n_dims as f32),
            freq_scale: self.freq_scale,
            pad: [0; 2],
        }
    }
}

fn check_shape(rope: &Rope, kernel: &'static str) -> Result<(), KernelError> {
    plan::ensure(
        rope.head_dim.is_multiple_of(2) && rope.head_dim > 0,
        kernel,
        || format!("head_dim {} must be even", rope.head_dim),
    )?;
    plan::ensure(
        rope.n_dims.is_multiple_of(2) && rope.n_dims > 0 && rope.n_dims <= rope.head_dim,
        kernel,
        || {
            format!(
                "n_dims {} must be even and within head_dim {}",
                rope.n_dims, rope.head_dim
            )
        },
    )?;
    plan::index_u32(
        kernel,
        "tokens * heads * head_dim",
        rope.tokens
            .saturating_mul(rope.n_heads)
            .saturating_mul(rope.head_dim),
    )?;
    Ok(())
}

impl Kernel for Rope {
    fn kernel(&self) -> &'static str {
        "rope"
    }

    fn operands(&self) -> Vec<Operand> {
        let shape = [self.tokens, self.n_heads, self.head_dim];
        vec![
            Operand::read("x", DType::F32, 0).shape(&shape),
            Operand::read("pos", DType::I32, self.tokens),
            Operand::write("y", DType::F32, 0).shape(&shape),
        ]
    }

    /// Plans RoPE over x\[tokens\]\[n_heads\]\[head_dim\].
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let rope = self;
        let auto = match rope.mode {
            RopeMode::Normal => &crate::catalogue::rope::NORMAL,
            RopeMode::Neox => &crate::catalogue::rope::NEOX,
        };
        let v = crate::choose(auto, "it is the requested pairing", caps, choice)?;
        check_shape(rope, "rope")?;
        let params = rope.params();
        plan::per_item(
            "rope",
            v,
            u64::from(params.total_pairs),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// The two dimensions of a head that pair `pair` reads and writes (`shaders/common/rope.wgsl`'s `rope_dims`).
fn pair_dims(mode: RopeMode, pair: usize, n_dims: usize) -> (usize, usize) {
    match mode {
        _ if 2 * pair >= n_dims => (2 * pair, 2 * pair + 1),
        RopeMode::Normal => (2 * pair, 2 * pair + 1),
        RopeMode::Neox => (pair, pair + n_dims / 2),
    }
}

/// The pair's values after rotation (`rope_values`).
fn pair_values(x: (f32, f32), pos: i32, pair: usize, n_dims: usize, p: &Params) -> (f32, f32) {
    pair_values_ext(x, pos, pair, n_dims, p, 1.0, 1.0)
}

/// [`pair_values`] with the pair's frequency divided by `factor` and the rotation scaled by `mscale`
/// (`rope_values_ext`); with both 1 it rounds as `rope_values` does (dividing and multiplying by 1 are
/// exact).
fn pair_values_ext(
    x: (f32, f32),
    pos: i32,
    pair: usize,
    n_dims: usize,
    p: &Params,
    factor: f32,
    mscale: f32,
) -> (f32, f32) {
    if 2 * pair >= n_dims {
        return x;
    }
    let theta = pos as f32 * p.freq_scale * p.theta_scale.powf(pair as f32) / factor;
    let (s, c) = theta.sin_cos();
    let (c, s) = (c * mscale, s * mscale);
    (x.0 * c - x.1 * s, x.0 * s + x.1 * c)
}

/// CPU twin: one iteration per pair, as one shader invocation.
pub fn cpu(rope: &Rope, x: &[f32], pos: &[i32], y: &mut [f32]) {
    let p = rope.params();
    let half = rope.head_dim / 2;
    for idx in 0..p.total_pairs as usize {
        let pair = idx % half;
        let token_head = idx / half;
        let token = token_head / rope.n_heads;
        let base = token_head * rope.head_dim;
        let (i0, i1) = pair_dims(rope.mode, pair, rope.n_dims);
        (y[base + i0], y[base + i1]) = pair_values(
            (x[base + i0], x[base + i1]),
            pos[token],
            pair,
            rope.n_dims,
            &p,
        );
    }
}

/// One `rope_qkv` launch: RoPE on queries and keys, keys and values written into the caches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeQkv {
    /// The rotation (its `n_heads` is the query heads).
    pub rope: Rope,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// The first position written in the caches (each position holds n_kv_heads * head_dim floats).
    pub cache_pos: usize,
    /// Where queries, keys and values are read.
    pub q: Strided,
    /// Keys.
    pub k: Strided,
    /// Values.
    pub v: Strided,
    /// Biases, q/k norms, frequency factors and a factor on the rotation (the `_ext` variants), bound as
    /// one `extra` vector laid out by [`RopeQkv::extra_vector`]; `None` for llama's plain glue.
    pub extras: Option<QkvExtras>,
}

/// What the families beside llama add to the q/k/v glue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QkvExtras {
    /// Whether each q and k head is RMS-normalised over its dimensions before the rotation (Qwen3).
    pub qk_norm: bool,
    /// That norm's epsilon.
    pub norm_eps: f32,
    /// What multiplies the rotation's cosines and sines (1 for none).
    pub mscale: f32,
}

impl QkvExtras {
    /// No norm and an unscaled rotation: biases and factors only.
    pub fn plain() -> QkvExtras {
        QkvExtras {
            qk_norm: false,
            norm_eps: 1e-6,
            mscale: 1.0,
        }
    }
}

/// `shaders/rope_qkv.wgsl`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QkvParams {
    /// Dimensions per head.
    pub head_dim: u32,
    /// Query heads.
    pub n_heads: u32,
    /// Key/value heads.
    pub n_kv_heads: u32,
    /// Rotated dimensions.
    pub n_dims: u32,
    /// tokens * (n_heads + 2 n_kv_heads) * head_dim / 2: one invocation per pair.
    pub total_pairs: u32,
    /// Floats before the first written cache entry.
    pub cache_off: u32,
    /// As in [`Params`].
    pub theta_scale: f32,
    /// As in [`Params`].
    pub freq_scale: f32,
    /// Row stride of q.
    pub q_stride: u32,
    /// Offset of q's first entry.
    pub q_off: u32,
    /// Row stride of k.
    pub k_stride: u32,
    /// Offset of k's first entry.
    pub k_off: u32,
    /// Row stride of v.
    pub v_stride: u32,
    /// Offset of v's first entry.
    pub v_off: u32,
    /// The q/k norm's epsilon (`_ext`).
    pub norm_eps: f32,
    /// The factor on cosines and sines (`_ext`).
    pub mscale: f32,
    /// Bit 0: q and k heads are normalised (`_ext`).
    pub flags: u32,
    /// Where `extra`'s biases begin.
    pub bias_off: u32,
    /// Where its q norm weights begin.
    pub q_norm_off: u32,
    /// Where its k norm weights begin.
    pub k_norm_off: u32,
    /// Where its frequency factors begin.
    pub factors_off: u32,
    /// Uniform padding to 96 bytes.
    pub pad: [u32; 3],
}

impl RopeQkv {
    fn params(&self) -> Result<QkvParams, KernelError> {
        let r = &self.rope;
        let base = r.params();
        let [_, q_norm_off, k_norm_off, factors_off, _] = self.extra_offsets();
        let heads = r.n_heads + 2 * self.n_kv_heads;
        let kv = self.n_kv_heads * r.head_dim;
        let end = self.cache_pos.saturating_add(r.tokens).saturating_mul(kv);
        let stride = |s: Strided| plan::index_u32("rope_qkv", "stride", s.stride);
        let offset = |s: Strided| plan::index_u32("rope_qkv", "offset", s.offset);
        Ok(QkvParams {
            head_dim: r.head_dim as u32,
            n_heads: r.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            n_dims: r.n_dims as u32,
            total_pairs: plan::index_u32(
                "rope_qkv",
                "pairs",
                r.tokens
                    .saturating_mul(heads)
                    .saturating_mul(r.head_dim / 2),
            )?,
            cache_off: plan::index_u32("rope_qkv", "cache end", end)? - (r.tokens * kv) as u32,
            theta_scale: base.theta_scale,
            freq_scale: base.freq_scale,
            q_stride: stride(self.q)?,
            q_off: offset(self.q)?,
            k_stride: stride(self.k)?,
            k_off: offset(self.k)?,
            v_stride: stride(self.v)?,
            v_off: offset(self.v)?,
            norm_eps: self.extras.map_or(0.0, |x| x.norm_eps),
            mscale: self.extras.map_or(1.0, |x| x.mscale),
            flags: u32::from(self.extras.is_some_and(|x| x.qk_norm)),
            bias_off: 0,
            q_norm_off: q_norm_off as u32,
            k_norm_off: k_norm_off as u32,
            factors_off: factors_off as u32,
            pad: [0; 3],
        })
    }

    /// Where `extra`'s parts begin: biases [q | k | v], q norm [head_dim], k norm [head_dim], frequency
    /// factors [n_dims / 2]; and its length.
    fn extra_offsets(&self) -> [usize; 5] {
        let r = &self.rope;
        let qkv = (r.n_heads + 2 * self.n_kv_heads) * r.head_dim;
        let q_norm = qkv;
        let k_norm = q_norm + r.head_dim;
        let factors = k_norm + r.head_dim;
        [0, q_norm, k_norm, factors, factors + r.n_dims / 2]
    }

    /// The `extra` vector of the `_ext` variants from its parts, each empty where a model has none: biases
    /// of q, k and v (zeros), the q and k norms' weights (unused unless `qk_norm`), frequency factors (ones).
    pub fn extra_vector(
        &self,
        [bq, bk, bv]: [&[f32]; 3],
        [q_norm, k_norm]: [&[f32]; 2],
        factors: &[f32],
    ) -> Result<Vec<f32>, KernelError> {
        let r = &self.rope;
        let (qd, kv, hd) = (
            r.n_heads * r.head_dim,
            self.n_kv_heads * r.head_dim,
            r.head_dim,
        );
        let [_, _, _, _, len] = self.extra_offsets();
        let mut out = Vec::with_capacity(len);
        for (part, width, fill) in [
            (bq, qd, 0.0),
            (bk, kv, 0.0),
            (bv, kv, 0.0),
            (q_norm, hd, 1.0),
            (k_norm, hd, 1.0),
            (factors, r.n_dims / 2, 1.0),
        ] {
            match part.len() {
                0 => out.extend(std::iter::repeat_n(fill, width)),
                n if n == width => out.extend_from_slice(part),
                n => {
                    return Err(KernelError::Shape {
                        kernel: "rope_qkv",
                        what: format!("an extra part of {n} values where {width} are expected"),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl Kernel for RopeQkv {
    fn kernel(&self) -> &'static str {
        "rope_qkv"
    }

    fn operands(&self) -> Vec<Operand> {
        let (t, hd) = (self.rope.tokens, self.rope.head_dim);
        let kv = self.n_kv_heads * hd;
        let end = self.cache_pos.saturating_add(t).saturating_mul(kv);
        vec![
            Operand::read("q", DType::F32, self.q.extent(t, self.rope.n_heads * hd)),
            Operand::read("k", DType::F32, self.k.extent(t, kv)),
            Operand::read("v", DType::F32, self.v.extent(t, kv)),
            Operand::read("pos", DType::I32, t),
            Operand::write(
                "q_out",
                DType::F32,
                t.saturating_mul(self.rope.n_heads * hd),
            ),
            Operand::write("k_cache", DType::F32, end),
            Operand::write("v_cache", DType::F32, end),
        ]
        .into_iter()
        .chain(
            self.extras
                .map(|_| Operand::read("extra", DType::F32, self.extra_offsets()[4])),
        )
        .collect()
    }

    /// Plans one `rope_qkv` launch.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let r = self;
        use crate::catalogue::rope_qkv as c;
        let auto = match (r.rope.mode, r.extras.is_some()) {
            (RopeMode::Normal, false) => &c::NORMAL,
            (RopeMode::Neox, false) => &c::NEOX,
            (RopeMode::Normal, true) => &c::NORMAL_EXT,
            (RopeMode::Neox, true) => &c::NEOX_EXT,
        };
        let v = crate::choose(auto, "it is the requested pairing and extras", caps, choice)?;
        plan::ensure(
            v.name.ends_with("_ext") == r.extras.is_some(),
            "rope_qkv",
            || format!("variant {} with extras {:?}", v.name, r.extras),
        )?;
        check_shape(&r.rope, "rope_qkv")?;
        plan::ensure(r.n_kv_heads > 0, "rope_qkv", || {
            "there must be at least one key/value head".into()
        })?;
        let params = r.params()?;
        plan::per_item(
            "rope_qkv",
            v,
            u64::from(params.total_pairs),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// CPU twin of `rope_qkv`: [`cpu`] on the queries and keys read through their strides, the keys and values
/// stored at the cache positions; with extras, each head's bias added, its RMSNorm applied and the rotation
/// taken by its factors (`extra` as [`RopeQkv::extra_vector`] lays it out, empty without extras).
#[allow(
    clippy::too_many_arguments,
    reason = "three inputs, positions, three outputs and the extras, as the shader"
)]
pub fn cpu_qkv(
    r: &RopeQkv,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[i32],
    extra: &[f32],
    q_out: &mut [f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
) {
    let rope = &r.rope;
    let hd = rope.head_dim;
    let kv = r.n_kv_heads * hd;
    let gather = |src: &[f32], s: Strided, width: usize| -> Vec<f32> {
        (0..rope.tokens)
            .flat_map(|t| src[t * s.stride + s.offset..][..width].to_vec())
            .collect()
    };
    let (mut qs, mut ks, mut vs) = (
        gather(q, r.q, rope.n_heads * hd),
        gather(k, r.k, kv),
        gather(v, r.v, kv),
    );
    let cache = r.cache_pos * kv..(r.cache_pos + rope.tokens) * kv;
    let Some(x) = r.extras else {
        cpu(rope, &qs, pos, q_out);
        let kr = Rope {
            n_heads: r.n_kv_heads,
            ..*rope
        };
        cpu(&kr, &ks, pos, &mut k_cache[cache.clone()]);
        v_cache[cache].copy_from_slice(&vs);
        return;
    };
    let [_, q_norm, k_norm, factors, _] = r.extra_offsets();
    let qd = rope.n_heads * hd;
    let p = rope.params();
    // Biases per head, then each head's norm and rotation.
    let add_bias = |rows: &mut [f32], width: usize, off: usize| {
        for row in rows.chunks_mut(width) {
            for (y, b) in row.iter_mut().zip(&extra[off..off + width]) {
                *y += b;
            }
        }
    };
    add_bias(&mut qs, qd, 0);
    add_bias(&mut ks, kv, qd);
    add_bias(&mut vs, kv, qd + kv);
    let turn = |heads: &[f32], norm: usize, out: &mut [f32]| {
        let per_token = heads.len() / hd / rope.tokens;
        for (h, head) in heads.chunks(hd).enumerate() {
            let token = h / per_token;
            let scale = if x.qk_norm {
                let ss: f32 = head.iter().map(|y| y * y).sum();
                1.0 / (ss / hd as f32 + x.norm_eps).sqrt()
            } else {
                1.0
            };
            let o = &mut out[h * hd..][..hd];
            for (i, y) in head.iter().enumerate() {
                o[i] = if x.qk_norm {
                    y * scale * extra[norm + i]
                } else {
                    *y
                };
            }
            for pair in 0..hd / 2 {
                let (i0, i1) = pair_dims(rope.mode, pair, rope.n_dims);
                let factor = extra[factors + pair.min(rope.n_dims / 2 - 1)];
                (o[i0], o[i1]) = pair_values_ext(
                    (o[i0], o[i1]),
                    pos[token],
                    pair,
                    rope.n_dims,
                    &p,
                    factor,
                    x.mscale,
                );
            }
        }
    };
    turn(&qs, q_norm, q_out);
    turn(&ks, k_norm, &mut k_cache[cache.clone()]);
    v_cache[cache].copy_from_slice(&vs);
}
