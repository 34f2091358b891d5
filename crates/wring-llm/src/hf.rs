//! The Hugging Face layout: `config.json`, `model.safetensors` (f32, f16 or bf16) and `tokenizer.json`.
//! [`export`] writes it from a GGUF (weights dequantized, q/k rows un-permuted back to Hugging Face's
//! half-split RoPE layout, the tokenizer built from the GGUF); [`HfModel`] loads it through the same model
//! code as a GGUF, with NeoX-style RoPE.

use std::collections::HashMap;
use std::path::Path;

use wring_gguf::Gguf;
use wring_runtime::dispatch::Weights;
use wring_runtime::kernels::tensor::rope::RopeMode;
use wring_runtime::{Context, Tensor};

use crate::model::WeightSource;
use crate::{GgufTokenizer, LlamaConfig, LlmError};

/// The Hugging Face name of a GGUF tensor name.
fn hf_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (layer, what) = rest.split_once('.')?;
            let hf = match what {
                "attn_norm.weight" => "input_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}")
        }
    })
}

/// llama.cpp's converter permutes q/k rows within each head so that adjacent pairs rotate together; this
/// undoes it: Hugging Face row h*D + c*D/2 + j is GGUF row h*D + 2j + c.
fn unpermute(rows: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
    let d = rows.len() / row_len / n_heads;
    let half = d / 2;
    let mut out = vec![0f32; rows.len()];
    for h in 0..n_heads {
        for j in 0..half {
            for c in 0..2 {
                let src = (h * d + 2 * j + c) * row_len;
                let dst = (h * d + c * half + j) * row_len;
                out[dst..dst + row_len].copy_from_slice(&rows[src..src + row_len]);
            }
        }
    }
    out
}

fn io(e: impl std::fmt::Display) -> LlmError {
    LlmError::Request(e.to_string())
}

/// Writes `dir/config.json`, `dir/model.safetensors` (f32) and `dir/tokenizer.json` from a GGUF.
pub fn export(g: &Gguf, dir: &Path) -> Result<(), LlmError> {
    let cfg = LlamaConfig::from_gguf(g)?;
    // The export writes a LlamaForCausalLM checkpoint: another family's parts (biases, norms, fused
    // tensors, RoPE factors, Gemma's layout) would be dropped or misnamed, so it is refused, not written.
    let llama = cfg.architecture == "llama"
        && !cfg.rope_extended()
        && cfg.gemma.is_none()
        && cfg.q_dim() == cfg.n_embd
        && cfg.rope_scale == 1.0;
    if !llama {
        return Err(LlmError::Unsupported(format!(
            "exporting a {} model to the Hugging Face layout (the export writes plain llama checkpoints)",
            cfg.architecture
        )));
    }
    let tok = GgufTokenizer::from_gguf(g)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in &g.tensors {
        let Some(name) = hf_name(&t.name) else {
            continue;
        };
        let mut values = crate::model::tensor_f32(g, t)?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        if t.name.ends_with("attn_q.weight") {
            values = unpermute(&values, cfg.n_heads, cfg.n_embd);
        } else if t.name.ends_with("attn_k.weight") {
            values = unpermute(&values, cfg.n_kv_heads, cfg.n_embd);
        }
        tensors.push((
            name,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<_, _>>()
        .map_err(io)?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).map_err(io)?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_ff,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "num_hidden_layers": cfg.n_layers,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_base,
        "vocab_size": cfg.vocab,
        "max_position_embeddings": cfg.context,
        "tie_word_embeddings": cfg.tied_output,
        "bos_token_id": tok.bos,
        "eos_token_id": tok.eos,
        "torch_dtype": "float32",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).map_err(io)?,
    )
    .map_err(io)?;
    std::fs::write(dir.join("tokenizer.json"), tok.to_json()?).map_err(io)?;
    Ok(())
}

/// A Hugging Face checkpoint directory, memory-mapped.
pub struct HfModel {
    cfg: LlamaConfig,
    map: memmap2::Mmap,
    offsets: HashMap<String, (safetensors::Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

impl std::fmt::Debug for HfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfModel")
            .field("cfg", &self.cfg)
            .field("tensors", &self.offsets.len())
            .finish()
    }
}

impl HfModel {
    /// Opens `dir/config.json` and `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<HfModel, LlmError> {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).map_err(io)?)
                .map_err(io)?;
        let u = |k: &str| -> Result<usize, LlmError> {
            config[k]
                .as_u64()
                .map(|v| v as usize)
                .filter(|&v| v > 0 && v < 1 << 24)
                .ok_or_else(|| {
                    LlmError::Unsupported(format!("config.json: `{k}` missing or implausible"))
                })
        };
        let n_embd = u("hidden_size")?;
        let n_heads = u("num_attention_heads")?;
        let n_kv_heads = config["num_key_value_heads"]
            .as_u64()
            .map_or(Ok(n_heads), |_| u("num_key_value_heads"))?;
        if n_embd % n_heads != 0 || n_heads % n_kv_heads != 0 {
            return Err(LlmError::Unsupported(
                "config.json: head counts do not divide the hidden size".into(),
            ));
        }
        let cfg = LlamaConfig {
            architecture: config["model_type"].as_str().unwrap_or("llama").into(),
            n_layers: u("num_hidden_layers")?,
            n_embd,
            n_ff: u("intermediate_size")?,
            n_heads,
            n_kv_heads,
            head_dim: n_embd / n_heads,
            rope_dims: n_embd / n_heads,
            rope_base: config["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
            rms_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            vocab: u("vocab_size")?,
            context: u("max_position_embeddings")?,
            tied_output: config["tie_word_embeddings"].as_bool().unwrap_or(false),
            rope_mode: RopeMode::Neox,
            rope_scale: 1.0,
            rope_attn_factor: 1.0,
            rope_factors: crate::config::RopeFactors::None,
            parts: crate::config::Parts::default(),
            gemma: None,
        };
        let file = std::fs::File::open(dir.join("model.safetensors")).map_err(io)?;
        // SAFETY: read-only private map of a checkpoint file, as in wring-gguf.
        #[allow(unsafe_code, reason = "memory-mapping avoids copying the checkpoint")]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let st = safetensors::SafeTensors::deserialize(&map).map_err(io)?;
        let base = map.as_ptr() as usize;
        let mut offsets = HashMap::new();
        for (name, view) in st.tensors() {
            let start = view.data().as_ptr() as usize - base;
            offsets.insert(
                name,
                (
                    view.dtype(),
                    view.shape().to_vec(),
                    start..start + view.data().len(),
                ),
            );
        }
        Ok(HfModel { cfg, map, offsets })
    }

    fn values(&self, gguf_name: &str) -> Result<(Vec<usize>, Vec<f32>), LlmError> {
        let name = hf_name(gguf_name).ok_or_else(|| {
            LlmError::Unsupported(format!("no Hugging Face name for `{gguf_name}`"))
        })?;
        let (dtype, shape, range) = self
            .offsets
            .get(&name)
            .ok_or_else(|| LlmError::Unsupported(format!("tensor `{name}` is missing")))?;
        let b = &self.map[range.clone()];
        let values = match dtype {
            safetensors::Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            safetensors::Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(LlmError::Unsupported(format!(
                    "tensor `{name}` is {other:?}; wring reads F32, F16 and BF16"
                )));
            }
        };
        Ok((shape.clone(), values))
    }
}

impl WeightSource for HfModel {
    fn config(&self) -> Result<LlamaConfig, LlmError> {
        Ok(self.cfg.clone())
    }

    fn matrix(&self, ctx: &Context, name: &str) -> Result<Weights, LlmError> {
        let (shape, values) = self.values(name)?;
        Ok(ctx.upload(&shape, &values)?.into())
    }

    fn vector(&self, ctx: &Context, name: &str) -> Result<Tensor, LlmError> {
        let (_, values) = self.values(name)?;
        Ok(ctx.upload(&[values.len()], &values)?)
    }

    fn stacked(&self, ctx: &Context, names: &[&str]) -> Result<Option<Weights>, LlmError> {
        // Every matrix is widened to f32 here, so any with one inner dimension stack.
        let mut rows = 0;
        let mut inner = None;
        let mut all = Vec::new();
        for name in names {
            let (shape, values) = self.values(name)?;
            let [r, k] = shape[..] else { return Ok(None) };
            if *inner.get_or_insert(k) != k {
                return Ok(None);
            }
            rows += r;
            all.extend_from_slice(&values);
        }
        Ok(Some(ctx.upload(&[rows, inner.unwrap_or(0)], &all)?.into()))
    }

    fn uploaded(&self) {
        wring_gguf::release(&self.map);
    }
}
