//! The hyperparameters of a llama-family model, read from GGUF metadata and checked for consistency.

use wring_gguf::{Gguf, Value};

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
    /// Hugging Face checkpoints keep the half-split pairing ("NeoX").
    pub rope_mode: wring_runtime::kernels::tensor::rope::RopeMode,
}

/// Architectures whose tensors and attention match llama's.
const LLAMA_LIKE: &[&str] = &["llama", "mistral"];

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

impl LlamaConfig {
    /// Reads and checks the hyperparameters.
    pub fn from_gguf(g: &Gguf) -> Result<LlamaConfig, LlmError> {
        let arch = g
            .require("general.architecture")?
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !LLAMA_LIKE.contains(&arch.as_str()) {
            return Err(LlmError::Unsupported(format!(
                "architecture `{arch}`; wring runs {}",
                LLAMA_LIKE.join(", ")
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_embd = get_u(g, &k("embedding_length"))?;
        let n_heads = get_u(g, &k("attention.head_count"))?;
        let n_kv_heads = match g.get(&k("attention.head_count_kv")) {
            Some(_) => get_u(g, &k("attention.head_count_kv"))?,
            None => n_heads,
        };
        if n_embd % n_heads != 0 || n_heads % n_kv_heads != 0 {
            return Err(LlmError::Unsupported(format!(
                "{n_embd} embedding dimensions, {n_heads} heads and {n_kv_heads} key/value heads do not divide evenly"
            )));
        }
        let head_dim = n_embd / n_heads;
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
        let cfg = LlamaConfig {
            n_layers: get_u(g, &k("block_count"))?,
            n_embd,
            n_ff: get_u(g, &k("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dims,
            rope_base: get_f(g, &k("rope.freq_base"), 10_000.0)?,
            rms_eps: get_f(g, &k("attention.layer_norm_rms_epsilon"), 1e-5)?,
            vocab,
            context: get_u(g, &k("context_length"))?,
            tied_output: g.tensor("output.weight").is_none(),
            rope_mode: wring_runtime::kernels::tensor::rope::RopeMode::Normal,
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
        let kv = self.n_kv_heads * self.head_dim;
        let mut want: Vec<(String, [usize; 2])> =
            vec![("token_embd.weight".into(), [self.n_embd, self.vocab])];
        want.push(("output_norm.weight".into(), [self.n_embd, 1]));
        if !self.tied_output {
            want.push(("output.weight".into(), [self.n_embd, self.vocab]));
        }
        for l in 0..self.n_layers {
            let b = |s: &str| format!("blk.{l}.{s}.weight");
            want.extend([
                (b("attn_norm"), [self.n_embd, 1]),
                (b("attn_q"), [self.n_embd, self.n_embd]),
                (b("attn_k"), [self.n_embd, kv]),
                (b("attn_v"), [self.n_embd, kv]),
                (b("attn_output"), [self.n_embd, self.n_embd]),
                (b("ffn_norm"), [self.n_embd, 1]),
                (b("ffn_gate"), [self.n_embd, self.n_ff]),
                (b("ffn_up"), [self.n_embd, self.n_ff]),
                (b("ffn_down"), [self.n_ff, self.n_embd]),
            ]);
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
