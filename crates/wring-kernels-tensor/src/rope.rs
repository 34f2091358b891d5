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

    /// Plans RoPE over x[tokens][n_heads][head_dim].
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
    if 2 * pair >= n_dims {
        return x;
    }
    let theta = pos as f32 * p.freq_scale * p.theta_scale.powf(pair as f32);
    let (s, c) = theta.sin_cos();
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
    /// Uniform padding to 64 bytes.
    pub pad: [u32; 2],
}

impl RopeQkv {
    fn params(&self) -> Result<QkvParams, KernelError> {
        let r = &self.rope;
        let base = r.params();
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
            pad: [0; 2],
        })
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
    }

    /// Plans one `rope_qkv` launch.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let r = self;
        let auto = match r.rope.mode {
            RopeMode::Normal => &crate::catalogue::rope_qkv::NORMAL,
            RopeMode::Neox => &crate::catalogue::rope_qkv::NEOX,
        };
        let v = crate::choose(auto, "it is the requested pairing", caps, choice)?;
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
/// stored at the cache positions.
#[allow(
    clippy::too_many_arguments,
    reason = "three inputs, positions and three outputs, as the shader"
)]
pub fn cpu_qkv(
    r: &RopeQkv,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[i32],
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
    cpu(rope, &gather(q, r.q, rope.n_heads * hd), pos, q_out);
    let mut k_rot = vec![0.0; rope.tokens * kv];
    cpu(
        &Rope {
            n_heads: r.n_kv_heads,
            ..*rope
        },
        &gather(k, r.k, kv),
        pos,
        &mut k_rot,
    );
    let cache = r.cache_pos * kv..(r.cache_pos + rope.tokens) * kv;
    k_cache[cache.clone()].copy_from_slice(&k_rot);
    v_cache[cache].copy_from_slice(&gather(v, r.v, kv));
}
