//! The hyperparameters of a llama-family model, read from GGUF metadata and checked for consistency.

use wring_gguf::{Gguf, Value};
use wring_runtime::kernels::tensor::rope::RopeMode;

use crate::LlmError;

/// What the forward pass needs to know about a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture` (llama, and the families that share its layout).
    pub architecture: String,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Feed-forward inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Dimensions rotated by RoPE.
    pub rope_dims: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Vocabulary size.
    pub vocab: usize,
    /// Training context length.
    pub context: usize,
    /// Whether the output head reuses the token embedding (no `output.weight`).
    pub tied_output: bool,
    /// How RoPE pairs dimensions: llama.cpp permutes a llama GGUF's q/k rows for adjacent pairs ("normal");
    /// Hugging Face checkpoints, and GGUFs of the families llama.cpp ropes as NeoX (Qwen, Phi-3), keep the
    /// half-split pairing.
    pub rope_mode: RopeMode,
    /// Linear RoPE position scaling (`rope.scaling.factor` under type `linear`: 1 / factor), 1 for none.
    pub rope_scale: f32,
    /// What multiplies RoPE's cosines and sines (`rope.scaling.attn_factor`, Phi-3's LongRoPE), 1 for none.
    pub rope_attn_factor: f32,
    /// Per-pair divisors of RoPE's frequencies, where the file has them.
    pub rope_factors: RopeFactors,
    /// What sets the family's layers apart from llama's.
    pub parts: Parts,
    /// Gemma 2's and 3's parts, `None` for the other families.
    pub gemma: Option<Gemma>,
}

/// What Gemma 2 and 3 add (llama.cpp's `llama_model_gemma2`/`gemma3`): embeddings scaled by sqrt(n_embd),
/// RMSNorms after the attention and the feed-forward block (`post_attention_norm`, `post_ffw_norm`), a GeGLU
/// feed-forward, soft-capped attention scores and logits, a query scale of its own, and sliding-window
/// layers with their own RoPE base and scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma {
    /// What the token embedding's rows are multiplied by: sqrt(n_embd).
    pub embd_scale: f32,
    /// Attention scores become `cap * tanh(s / cap)` (Gemma 2's `attn_logit_softcapping`); 0 for none.
    pub attn_softcap: f32,
    /// Logits become `cap * tanh(x / cap)` (`final_logit_softcapping`); 0 for none.
    pub final_softcap: f32,
    /// The query scale: 1 / sqrt(head size), or 1 / sqrt(n_embd / n_heads) for the 27B models, as
    /// llama.cpp decides by the layer count.
    pub attn_scale: f32,
    /// Keys a sliding-window layer's query sees (its own among them).
    pub window: usize,
    /// Whether each layer is a sliding-window one.
    pub local: Vec<bool>,
    /// RoPE base and linear scale of the sliding-window layers.
    pub local_rope: (f32, f32),
}

/// The parts of a layer that set a family apart from llama, each read from the file's tensors and metadata
/// (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parts {
    /// Biases on the q, k and v projections (Qwen2; llama.cpp takes them wherever a file has them).
    pub qkv_bias: bool,
    /// RMSNorm of each query and key head over its dimensions before RoPE (Qwen3).
    pub qk_norm: bool,
    /// q, k and v in one tensor `attn_qkv` (Phi-3).
    pub fused_qkv: bool,
    /// Gate and up in one tensor `ffn_up` of 2 n_ff rows, the gate's first (Phi-3).
    pub fused_gate_up: bool,
}

/// Per-pair divisors of RoPE's frequencies (ggml's `freq_factors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RopeFactors {
    /// No factors: the plain frequencies.
    None,
    /// `rope_freqs.weight`: Llama 3.1's frequency scaling, as its converter writes it.
    Fixed,
    /// Phi-3's LongRoPE: `rope_factors_short.weight` up to `original_context` positions, the long factors
    /// past it (llama.cpp picks by the context asked for).
    ShortLong {
        /// Positions the short factors serve (`rope.scaling.original_context_length`).
        original_context: usize,
    },
}

impl RopeFactors {
    /// The tensor whose factors a cache of `context` positions rotates by.
    pub fn tensor(&self, context: usize) -> Option<&'static str> {
        match self {
            RopeFactors::None => None,
            RopeFactors::Fixed => Some("rope_freqs.weight"),
            RopeFactors::ShortLong { original_context } if context > *original_context => {
                Some("rope_factors_long.weight")
            }
            RopeFactors::ShortLong { .. } => Some("rope_factors_short.weight"),
        }
    }
}

/// Architectures wring runs, with the pairing llama.cpp ropes them by (`llama_model_rope_type`).
const ARCHITECTURES: &[(&str, RopeMode)] = &[
    ("llama", RopeMode::Normal),
    ("qwen2", RopeMode::Neox),
    ("qwen3", RopeMode::Neox),
    ("phi3", RopeMode::Neox),
    ("gemma2", RopeMode::Neox),
    ("gemma3", RopeMode::Neox),
];

/// Architectures people bring whose parts wring lacks, with what those are: refused by name.
const NOT_YET: &[(&str, &str)] = &[
    (
        "gemma",
        "Gemma 1's layout (no norms after each block) has not been proven against llama.cpp here",
    ),
    (
        "mistral",
        "nothing: llama.cpp itself writes Mistral models as `llama`, which wring runs; this file's architecture is no llama.cpp one",
    ),
];

fn get_u(g: &Gguf, key: &str) -> Result<usize, LlmError> {
    let v = g.require(key)?;
    v.as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0 && v < 1 << 24)
        .ok_or_else(|| LlmError::Unsupported(format!("{key} = {v:?} is not a plausible size")))
}

/// A positive, finite float (a RoPE base, an RMS epsilon): zero, negative, NaN or infinite values load
/// without complaint elsewhere and then generate nothing or garbage.
fn get_f(g: &Gguf, key: &str, default: f64) -> Result<f32, LlmError> {
    let v = match g.get(key) {
        None => default as f32,
        Some(v) => v
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| LlmError::Unsupported(format!("{key} = {v:?} is not a number")))?,
    };
    if !(v.is_finite() && v > 0.0) {
        return Err(LlmError::Unsupported(format!(
            "{key} = {v} must be a positive finite number"
        )));
    }
    Ok(v)
}

/// RoPE's scaling as llama.cpp reads it (`llm_load_hparams`): the linear position scale, the factor on
/// cosines and sines, and the frequency factors. YaRN is refused by name: its ramp between interpolated and
/// extrapolated frequencies is not in the kernels.
fn rope_scaling(g: &Gguf, arch: &str, context: usize) -> Result<(f32, f32, RopeFactors), LlmError> {
    let k = |s: &str| format!("{arch}.{s}");
    let kind = match g.get(&k("rope.scaling.type")) {
        None => "linear".to_string(),
        Some(v) => v
            .as_str()
            .ok_or_else(|| LlmError::Unsupported(format!("rope.scaling.type = {v:?}")))?
            .to_string(),
    };
    let factor = [k("rope.scaling.factor"), k("rope.scale_linear")]
        .iter()
        .find(|key| g.get(key).is_some())
        .map(|key| get_f(g, key, 1.0))
        .transpose()?
        .unwrap_or(1.0);
    let attn_factor = get_f(g, &k("rope.scaling.attn_factor"), 1.0)?;
    let has = |name: &str| g.tensor(name).is_some();
    let factors = if has("rope_freqs.weight") {
        RopeFactors::Fixed
    } else if has("rope_factors_short.weight") || has("rope_factors_long.weight") {
        let original_context = match g.get(&k("rope.scaling.original_context_length")) {
            Some(_) => get_u(g, &k("rope.scaling.original_context_length"))?,
            None => context,
        };
        RopeFactors::ShortLong { original_context }
    } else {
        RopeFactors::None
    };
    let scale = match kind.as_str() {
        "none" => 1.0,
        "linear" | "longrope" => 1.0 / factor,
        other => {
            return Err(LlmError::Unsupported(format!(
                "RoPE scaling type `{other}` (wring applies none, linear and longrope)"
            )));
        }
    };
    Ok((scale, attn_factor, factors))
}

/// Gemma 2's or 3's parts as llama.cpp reads them (`load_arch_hparams`, `load_swa_pattern`).
fn gemma_parts(
    g: &Gguf,
    arch: &str,
    n_layers: usize,
    n_embd: usize,
    n_heads: usize,
    head_dim: usize,
) -> Result<Option<Gemma>, LlmError> {
    let k = |s: &str| format!("{arch}.{s}");
    let gemma2 = match arch {
        "gemma2" => true,
        "gemma3" => false,
        _ => return Ok(None),
    };
    // A soft-cap of 0 turns it off (Gemma 3's default for the logits); a negative or non-finite one is
    // refused.
    let softcap = |key: &str, default: f64| -> Result<f32, LlmError> {
        match g.get(key) {
            None => Ok(default as f32),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => Ok(x as f32),
                _ => Err(LlmError::Unsupported(format!(
                    "{key} = {v:?} must be a finite number, 0 or more"
                ))),
            },
        }
    };
    let attn_softcap = if gemma2 {
        softcap(&k("attn_logit_softcapping"), 50.0)?
    } else {
        0.0
    };
    let final_softcap = softcap(
        &k("final_logit_softcapping"),
        if gemma2 { 30.0 } else { 0.0 },
    )?;
    // Gemma 2 always has sliding-window layers (a window of 4,096 unless the file says), every other
    // one; Gemma 3 where the file gives a window, five in six.
    let window = match g.get(&k("attention.sliding_window")) {
        Some(_) => get_u(g, &k("attention.sliding_window"))?,
        None if gemma2 => 4096,
        None => 0,
    };
    let local: Vec<bool> = if window == 0 {
        vec![false; n_layers]
    } else {
        match g.get(&k("attention.sliding_window_pattern")) {
            Some(Value::Array(a)) => {
                if a.len() != n_layers {
                    return Err(LlmError::Unsupported(format!(
                        "attention.sliding_window_pattern holds {} layers of {n_layers}",
                        a.len()
                    )));
                }
                a.iter()
                    .map(|v| match v {
                        Value::Bool(b) => Ok(*b),
                        other => Err(LlmError::Unsupported(format!(
                            "attention.sliding_window_pattern holds {other:?}, not a flag"
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            found => {
                let pattern = match found {
                    Some(_) => get_u(g, &k("attention.sliding_window_pattern"))?,
                    None if gemma2 => 2,
                    None => 6,
                };
                (0..n_layers).map(|l| l % pattern < pattern - 1).collect()
            }
        }
    };
    // llama.cpp's default base for the local layers is 10,000 unless the file names one.
    let local_base = get_f(g, &k("rope.freq_base_swa"), 10_000.0)?;
    let wide = (gemma2 && n_layers == 46) || (!gemma2 && n_layers == 62);
    let attn_scale = if wide {
        1.0 / ((n_embd / n_heads) as f32).sqrt()
    } else {
        1.0 / (head_dim as f32).sqrt()
    };
    Ok(Some(Gemma {
        embd_scale: (n_embd as f32).sqrt(),
        attn_softcap,
        final_softcap,
        attn_scale,
        window,
        local,
        local_rope: (local_base, 1.0),
    }))
}

impl LlamaConfig {
    /// The query scale: 1 / sqrt(head size), or Gemma's own.
    pub fn attn_scale(&self) -> f32 {
        self.gemma
            .as_ref()
            .map_or(1.0 / (self.head_dim as f32).sqrt(), |g| g.attn_scale)
    }

    /// Layer `l`'s RoPE base and linear scale, and its attention window (0 for none).
    pub fn layer_rope(&self, l: usize) -> (f32, f32, usize) {
        match &self.gemma {
            Some(g) if g.local.get(l).copied().unwrap_or(false) => {
                (g.local_rope.0, g.local_rope.1, g.window)
            }
            _ => (self.rope_base, self.rope_scale, 0),
        }
    }

    /// Query dimensions per position (all heads): the embedding's width, except where a file's heads are
    /// wider (Qwen3's `key_length`).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Key (and value) dimensions per position.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Whether the q/k/v glue needs more than llama's rotation: biases, q/k norms, frequency factors or a
    /// factor on the rotation.
    pub fn rope_extended(&self) -> bool {
        self.parts.qkv_bias
            || self.parts.qk_norm
            || self.rope_factors != RopeFactors::None
            || self.rope_attn_factor != 1.0
    }

    /// Reads and checks the hyperparameters.
    pub fn from_gguf(g: &Gguf) -> Result<LlamaConfig, LlmError> {
        let arch = g
            .require("general.architecture")?
            .as_str()
            .unwrap_or_default()
            .to_string();
        let names = || {
            ARCHITECTURES
                .iter()
                .map(|a| a.0)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some((_, lacks)) = NOT_YET.iter().find(|a| a.0 == arch) {
            return Err(LlmError::Unsupported(format!(
                "architecture `{arch}` needs what wring lacks ({lacks}); wring runs {} (see the guide's \
                 Model families page, docs/src/model-families.md)",
                names()
            )));
        }
        let Some(&(_, rope_mode)) = ARCHITECTURES.iter().find(|a| a.0 == arch) else {
            return Err(LlmError::Unsupported(format!(
                "architecture `{arch}`; wring runs {} (see the guide's Model families page, \
                 docs/src/model-families.md)",
                names()
            )));
        };
        let k = |s: &str| format!("{arch}.{s}");
        let n_embd = get_u(g, &k("embedding_length"))?;
        let n_heads = get_u(g, &k("attention.head_count"))?;
        let n_kv_heads = match g.get(&k("attention.head_count_kv")) {
            Some(_) => get_u(g, &k("attention.head_count_kv"))?,
            None => n_heads,
        };
        if n_heads % n_kv_heads != 0 {
            return Err(LlmError::Unsupported(format!(
                "{n_kv_heads} key/value heads do not divide the {n_heads} heads"
            )));
        }
        // A head's size is the file's `key_length` where it gives one (Qwen3's heads are wider than the
        // embedding's share of them), else the embedding split over the heads.
        let head_dim = match g.get(&k("attention.key_length")) {
            Some(_) => get_u(g, &k("attention.key_length"))?,
            None if n_embd % n_heads == 0 => n_embd / n_heads,
            None => {
                return Err(LlmError::Unsupported(format!(
                    "{n_heads} heads do not divide the {n_embd} embedding dimensions, and the file gives no key_length"
                )));
            }
        };
        if g.get(&k("attention.value_length")).is_some() {
            let v = get_u(g, &k("attention.value_length"))?;
            if v != head_dim {
                return Err(LlmError::Unsupported(format!(
                    "value heads of {v} dimensions beside key heads of {head_dim}"
                )));
            }
        }
        if n_heads.saturating_mul(head_dim) >= 1 << 24 {
            return Err(LlmError::Unsupported(format!(
                "{n_heads} heads of {head_dim} dimensions"
            )));
        }
        let rope_dims = match g.get(&k("rope.dimension_count")) {
            Some(_) => get_u(g, &k("rope.dimension_count"))?,
            None => head_dim,
        };
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(LlmError::Unsupported(format!(
                "rope dimension count {rope_dims} with head size {head_dim}"
            )));
        }
        let vocab = match g.get(&k("vocab_size")) {
            Some(_) => get_u(g, &k("vocab_size"))?,
            None => g
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(<[Value]>::len)
                .unwrap_or(0),
        };
        let context = get_u(g, &k("context_length"))?;
        let (rope_scale, rope_attn_factor, rope_factors) = rope_scaling(g, &arch, context)?;
        let has = |name: &str| g.tensor(name).is_some();
        let parts = Parts {
            qkv_bias: ["attn_q", "attn_k", "attn_v", "attn_qkv"]
                .iter()
                .any(|t| has(&format!("blk.0.{t}.bias"))),
            qk_norm: has("blk.0.attn_q_norm.weight") || has("blk.0.attn_k_norm.weight"),
            fused_qkv: has("blk.0.attn_qkv.weight"),
            fused_gate_up: arch == "phi3" && !has("blk.0.ffn_gate.weight"),
        };
        let n_layers = get_u(g, &k("block_count"))?;
        let gemma = gemma_parts(g, &arch, n_layers, n_embd, n_heads, head_dim)?;
        let cfg = LlamaConfig {
            n_layers,
            n_embd,
            n_ff: get_u(g, &k("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dims,
            rope_base: get_f(g, &k("rope.freq_base"), 10_000.0)?,
            rms_eps: get_f(g, &k("attention.layer_norm_rms_epsilon"), 1e-5)?,
            vocab,
            context,
            tied_output: g.tensor("output.weight").is_none(),
            rope_mode,
            rope_scale,
            rope_attn_factor,
            rope_factors,
            parts,
            gemma,
            architecture: arch,
        };
        cfg.check_tensors(g)?;
        Ok(cfg)
    }

    /// Every tensor the forward pass reads must exist with the shape the hyperparameters imply, and the
    /// file's blocks must be exactly `block_count` of them: the count is checked against the tensors
    /// present before anything is sized by it (a count of 16777215 used to size a multi-GB list, and a
    /// count one short silently dropped the last block).
    fn check_tensors(&self, g: &Gguf) -> Result<(), LlmError> {
        let blocks = g
            .tensors
            .iter()
            .filter_map(|t| t.name.strip_prefix("blk."))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |last| last + 1);
        if blocks != self.n_layers {
            return Err(LlmError::Unsupported(format!(
                "block_count = {} but the file holds tensors of {blocks} blocks",
                self.n_layers
            )));
        }
        let (e, qd, kv, ff) = (self.n_embd, self.q_dim(), self.kv_dim(), self.n_ff);
        let mut want: Vec<(String, [usize; 2])> =
            vec![("token_embd.weight".into(), [e, self.vocab])];
        want.push(("output_norm.weight".into(), [e, 1]));
        if !self.tied_output {
            want.push(("output.weight".into(), [e, self.vocab]));
        }
        let half = self.rope_dims / 2;
        match self.rope_factors {
            RopeFactors::None => {}
            RopeFactors::Fixed => want.push(("rope_freqs.weight".into(), [half, 1])),
            RopeFactors::ShortLong { .. } => want.extend([
                ("rope_factors_short.weight".into(), [half, 1]),
                ("rope_factors_long.weight".into(), [half, 1]),
            ]),
        }
        let p = &self.parts;
        for l in 0..self.n_layers {
            let b = |s: &str| format!("blk.{l}.{s}.weight");
            let bias = |s: &str| format!("blk.{l}.{s}.bias");
            want.extend([
                (b("attn_norm"), [e, 1]),
                (b("attn_output"), [qd, e]),
                (b("ffn_norm"), [e, 1]),
                (b("ffn_down"), [ff, e]),
            ]);
            if p.fused_qkv {
                want.push((b("attn_qkv"), [e, qd + 2 * kv]));
            } else {
                want.extend([
                    (b("attn_q"), [e, qd]),
                    (b("attn_k"), [e, kv]),
                    (b("attn_v"), [e, kv]),
                ]);
            }
            if p.fused_gate_up {
                want.push((b("ffn_up"), [e, 2 * ff]));
            } else {
                want.extend([(b("ffn_gate"), [e, ff]), (b("ffn_up"), [e, ff])]);
            }
            if self.gemma.is_some() {
                want.extend([
                    (b("post_attention_norm"), [e, 1]),
                    (b("post_ffw_norm"), [e, 1]),
                ]);
            }
            if p.qk_norm {
                want.extend([
                    (b("attn_q_norm"), [self.head_dim, 1]),
                    (b("attn_k_norm"), [self.head_dim, 1]),
                ]);
            }
            // Biases are optional one by one, as in llama.cpp: each present one must have its width.
            let biases: &[(&str, usize)] = if p.fused_qkv {
                &[("attn_qkv", qd + 2 * kv)]
            } else {
                &[("attn_q", qd), ("attn_k", kv), ("attn_v", kv)]
            };
            for &(t, width) in biases {
                if g.tensor(&bias(t)).is_some() {
                    want.push((bias(t), [width, 1]));
                }
            }
        }
        // Vectors the forward reads as they are (norms, biases, factors) must be stored as f32.
        for (name, [_, outer]) in &want {
            if *outer == 1 && !name.contains("token_embd") {
                if let Some(t) = g.tensor(name) {
                    if t.ggml_type != 0 {
                        return Err(LlmError::Unsupported(format!(
                            "vector `{name}` is stored as {}, not F32",
                            t.type_name()
                        )));
                    }
                }
            }
        }
        for (name, [inner, outer]) in want {
            let t = g
                .tensor(&name)
                .ok_or_else(|| LlmError::Unsupported(format!("tensor `{name}` is missing")))?;
            let dims: Vec<u64> = t
                .dims
                .iter()
                .copied()
                .chain(std::iter::repeat(1))
                .take(2)
                .collect();
            if dims != [inner as u64, outer as u64] || t.dims.len() > 2 {
                return Err(LlmError::Unsupported(format!(
                    "tensor `{name}` has shape {:?}, expected [{inner}, {outer}]",
                    t.dims
                )));
            }
        }
        Ok(())
    }
}
