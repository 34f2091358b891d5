//! `shaders/rope.wgsl`: rotary position embedding as llama.cpp applies it.

use crate::plan::{self, Caps, Choice, KernelError, Plan};

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

/// Plans RoPE over x[tokens][n_heads][head_dim].
pub fn plan(rope: &Rope, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
    let auto = match rope.mode {
        RopeMode::Normal => "normal",
        RopeMode::Neox => "neox",
    };
    let v = plan::select("rope", auto, "it is the requested pairing", caps, choice)?;
    plan::ensure(rope.head_dim.is_multiple_of(2) && rope.head_dim > 0, "rope", || format!("head_dim {} must be even", rope.head_dim))?;
    plan::ensure(rope.n_dims.is_multiple_of(2) && rope.n_dims > 0 && rope.n_dims <= rope.head_dim, "rope", || {
        format!("n_dims {} must be even and within head_dim {}", rope.n_dims, rope.head_dim)
    })?;
    plan::index_u32("rope", "tokens * heads * head_dim", rope.tokens.saturating_mul(rope.n_heads).saturating_mul(rope.head_dim))?;
    let params = rope.params();
    let workgroups = plan::grid_1d("rope", u64::from(params.total_pairs).div_ceil(u64::from(v.define_u32("WG"))), caps)?;
    Ok(Plan { variant: v, params: bytemuck::bytes_of(&params).to_vec(), workgroups })
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
        if 2 * pair < rope.n_dims {
            let (i0, i1) = match rope.mode {
                RopeMode::Normal => (base + 2 * pair, base + 2 * pair + 1),
                RopeMode::Neox => (base + pair, base + pair + rope.n_dims / 2),
            };
            let theta = pos[token] as f32 * p.freq_scale * p.theta_scale.powf(pair as f32);
            let (s, c) = theta.sin_cos();
            let (x0, x1) = (x[i0], x[i1]);
            y[i0] = x0 * c - x1 * s;
            y[i1] = x0 * s + x1 * c;
        } else {
            y[base + 2 * pair] = x[base + 2 * pair];
            y[base + 2 * pair + 1] = x[base + 2 * pair + 1];
        }
    }
}
