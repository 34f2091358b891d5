//! The llama-family forward pass on the GPU: weights uploaded as they are stored (packed blocks stay
//! packed), a device KV cache, and one step (one command buffer) per forward call.

use half::f16;
use wring_gguf::{Gguf, TensorInfo};
use wring_quant::BlockFormat;
use wring_runtime::dispatch::{
    Weights, matmul_weights, matmul_weights_fused, matmul_weights_q8, residual_q8, scaled_q8,
    swiglu_q8, takes_q8,
};
use wring_runtime::kernels::kv::{
    AttnPaged, EmsLayout, KvEmsCompact, KvEmsScore, KvGear, KvGearLoad, KvLayout, KvLoad,
    KvPagedSeal, KvPagedStore, KvRotate, KvStore, Pool, paged as kv_paged,
};
use wring_runtime::kernels::tensor::{
    Attention, CopyWords, Fill, GetRows, Rope, RopeQkv, SiluMul, SiluMulQ8, rope::QkvExtras,
    silu_mul::Gate,
};
use wring_runtime::kernels::{DType, Strided, q8};
use wring_runtime::{Context, Tensor};

use crate::layers::{NormOut, attention, rmsnorm, rmsnorm_add};

use crate::{KvMode, LlamaConfig, LlmError};

struct Layer {
    attn_norm: Tensor,
    /// q, k and v projections.
    qkv: Projection,
    wo: Weights,
    ffn_norm: Tensor,
    /// Gate and up projections.
    gate_up: Projection,
    w_down: Weights,
    cache: LayerCache,
    /// The q/k/v glue's extras where the family has them (biases, q/k norms, RoPE factors): rope_qkv's
    /// `extra` vector.
    extra: Option<Tensor>,
    /// Gemma's norms after the attention and after the feed-forward block.
    post_norms: Option<[Tensor; 2]>,
}

/// One layer's KV cache: f32 keys and values [position][kv head][head_dim] that attention reads directly,
/// or the packed buffer of a compressed mode (`wring_kernels_kv::cache`'s layout).
enum LayerCache {
    F32 {
        k: Tensor,
        v: Tensor,
    },
    Packed(Tensor),
    /// EMS: f32 keys and values in slots (at most the budget per head after each step) and the slots'
    /// scores and compaction scratch (`wring_kernels_kv::ems`).
    Ems {
        k: Tensor,
        v: Tensor,
        state: Tensor,
    },
    /// CSKV: the f16 ring of recent keys and values (a 16-bit `KvLayout`), the f16 features of every
    /// position (keys', values'), and the factors: `a` hidden -> features, `b` features -> keys before RoPE
    /// and values.
    LowRank {
        ring: Tensor,
        features: Tensor,
        a: [Weights; 2],
        b: [Weights; 2],
    },
    /// A paged cache's pools of key and value blocks (`wring_kernels_kv::paged`), shared by every
    /// sequence of a batch through their block tables.
    Paged {
        k: Tensor,
        v: Tensor,
        /// A code pool's f16 tails for keys and values (a ring of two blocks of positions per running
        /// sequence), allocated as sequences need them ([`Llama::forward_paged`]).
        tails: Option<[Tensor; 2]>,
    },
}

/// The shape of a paged KV cache (see [`Llama::set_paged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedShape {
    /// Blocks in each layer's pools.
    pub blocks: usize,
    /// Positions per block.
    pub block: usize,
    /// What the pools hold.
    pub pool: Pool,
}

impl PagedShape {
    /// Positions the pool holds, all sequences together.
    pub fn positions(&self) -> usize {
        self.blocks * self.block
    }
}

/// One sequence's rows in a step over a paged cache: its tokens, the position of the first, and its block
/// table (position p in block `table[p / block]`), covering every position up to the last token's.
#[derive(Debug, Clone, Copy)]
pub struct SeqRows<'a> {
    /// The tokens of the step.
    pub tokens: &'a [u32],
    /// The position of the first.
    pub pos0: usize,
    /// Its block table.
    pub table: &'a [u32],
    /// The sequence's tail in a code pool (its newest positions in f16, a ring of two blocks): the same
    /// for the sequence from step to step, and different from every other sequence running. Ignored by
    /// other pools.
    pub tail: u32,
    /// Leading positions the sequence took from the prefix cache rather than computing them (whole
    /// blocks, held in the pool only, never in its tail); 0 when it computed them all.
    pub reused: usize,
}

/// Which rows' logits a step returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logits {
    Last,
    All,
    /// The first n rows (a batch's decode rows).
    Leading(usize),
}

/// What a step over a paged cache binds besides the pools: each token's slot, the block tables, each
/// token's (table offset, position), and attention's tiles.
struct PagedStep {
    /// Each token's slot in the pools (in the tails for a KIVI pool, or `kv_paged::NO_SLOT` for a
    /// position of a block the step seals).
    slots: Tensor,
    /// A KIVI pool's blocks sealed by the step and the seal's jobs.
    seal: Option<(KvPagedSeal, Tensor)>,
    /// A code pool's per-token (first ring slot, first position read from the ring).
    kivi: Option<Tensor>,
    table: Tensor,
    seqs: Tensor,
    tiles: Tensor,
    attn: AttnPaged,
    /// The step's keys and values after RoPE, before they are stored in the pools.
    k: Tensor,
    v: Tensor,
}

/// What a low-rank cache's layers share: the features of positions as f32 (read back to be rebuilt,
/// and the step's written there before they are stored), the keys rebuilt before RoPE, every position's
/// index for that RoPE, and the features' store layout.
struct LowRankScratch {
    features: [Tensor; 2],
    rank: usize,
    rebuilt: Tensor,
    positions: Tensor,
    layout: KvLayout,
}

impl LayerCache {
    fn new(
        ctx: &Context,
        layout: Option<&KvLayout>,
        ems: Option<&EmsLayout>,
        positions: usize,
        kv: usize,
    ) -> Result<LayerCache, LlmError> {
        if let Some(e) = ems {
            return Ok(LayerCache::Ems {
                k: ctx.empty(&[positions * kv], DType::F32)?,
                v: ctx.empty(&[positions * kv], DType::F32)?,
                state: ctx.empty(&[e.state_words()], DType::U32)?,
            });
        }
        Ok(match layout {
            None => LayerCache::F32 {
                k: ctx.empty(&[positions * kv], DType::F32)?,
                v: ctx.empty(&[positions * kv], DType::F32)?,
            },
            Some(l) => LayerCache::Packed(ctx.empty(&[l.words()], DType::U32)?),
        })
    }

    fn bytes(&self) -> u64 {
        match self {
            LayerCache::F32 { k, v } => k.bytes() + v.bytes(),
            LayerCache::Packed(t) => t.bytes(),
            LayerCache::Ems { k, v, state } => k.bytes() + v.bytes() + state.bytes(),
            LayerCache::LowRank { ring, features, .. } => ring.bytes() + features.bytes(),
            LayerCache::Paged { k, v, tails } => {
                k.bytes() + v.bytes() + tails.iter().flatten().map(Tensor::bytes).sum::<u64>()
            }
        }
    }
}

/// A product's input: `rows` rows of f32 activations, or the same already in 8-bit activation units,
/// written by the kernel that produced them (see [`takes_q8`]).
#[derive(Debug, Clone, Copy)]
enum Input<'a> {
    F32(&'a Tensor),
    Q8(&'a Tensor, usize),
    /// One row of units of a residual sum times a norm's weight, with their sums of squares and the
    /// norm's epsilon: the second half of a split norm (see [`residual_q8`]), whose scale the product
    /// applies.
    Scaled(&'a Tensor, &'a Tensor, f32),
}

impl Input<'_> {
    fn rows(&self) -> usize {
        match self {
            Input::F32(x) => x.shape()[0],
            Input::Q8(_, rows) => *rows,
            Input::Scaled(..) => 1,
        }
    }
}

/// `y = x w^T` from either form of input.
fn project(
    step: &mut wring_runtime::Step<'_>,
    w: &Weights,
    x: Input<'_>,
    y: &Tensor,
) -> Result<(), wring_runtime::Error> {
    match x {
        Input::F32(x) => matmul_weights(step, w, x, y),
        Input::Q8(q, rows) => matmul_weights_q8(step, w, q, rows, y),
        Input::Scaled(nq, ss, eps) => {
            let unit = scaled_q8(step, w, eps).ok_or_else(|| {
                wring_runtime::Error::Shape(
                    "these weights have no scaled 8-bit product here".into(),
                )
            })?;
            matmul_weights_fused(step, w, &unit, &[("x", nq), ("ss_in", ss), ("y", y)])
        }
    }
}

/// Projections that read the same input: stacked row-wise into one weight tensor when the source stores
/// them in one type (one launch computes them all), else kept apart.
enum Projection {
    Stacked(Weights),
    Split(Vec<Weights>),
}

impl Projection {
    fn load(
        ctx: &Context,
        src: &dyn WeightSource,
        names: &[String],
    ) -> Result<Projection, LlmError> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(match src.stacked(ctx, &names)? {
            Some(t) => Projection::Stacked(t),
            None => Projection::Split(
                names
                    .iter()
                    .map(|n| src.matrix(ctx, n))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Whether every part takes `rows` rows of 8-bit activation units.
    fn takes_q8(&self, step: &wring_runtime::Step<'_>, rows: usize) -> bool {
        match self {
            Projection::Stacked(w) => takes_q8(step, w, rows),
            Projection::Split(ws) => ws.iter().all(|w| takes_q8(step, w, rows)),
        }
    }

    /// Whether every part takes the second half of a split norm (see [`scaled_q8`]).
    fn scales(&self, step: &wring_runtime::Step<'_>, eps: f32) -> bool {
        match self {
            Projection::Stacked(w) => scaled_q8(step, w, eps).is_some(),
            Projection::Split(ws) => ws.iter().all(|w| scaled_q8(step, w, eps).is_some()),
        }
    }

    /// Multiplies `x` [t, k] by every projection into `out`'s scratch for this kind of projection
    /// (allocated on first use, then shared by every layer). Stacked, the result is one tensor [t, sum of
    /// rows] whose parts are read in place through a stride; split, one dense tensor per part.
    fn apply<'o>(
        &self,
        ctx: &Context,
        step: &mut wring_runtime::Step<'_>,
        x: Input<'_>,
        out: &'o mut ProjectionOutput,
    ) -> Result<&'o [(Tensor, Strided)], LlmError> {
        let t = x.rows();
        let widths = &out.widths;
        match self {
            Projection::Stacked(w) => {
                if out.stacked.is_none() {
                    let row: usize = widths.iter().sum();
                    let y = ctx.empty(&[t, row], DType::F32)?;
                    let mut offset = 0;
                    let mut parts = Vec::new();
                    for width in widths {
                        parts.push((
                            y.clone(),
                            Strided {
                                stride: row,
                                offset,
                            },
                        ));
                        offset += width;
                    }
                    out.stacked = Some(parts);
                }
                let parts = out.stacked.as_deref().expect("allocated above");
                project(step, w, x, &parts[0].0)?;
                Ok(parts)
            }
            Projection::Split(ws) => {
                if out.split.is_none() {
                    let parts = widths.iter().map(|&width| {
                        Ok((
                            ctx.empty(&[t, width], DType::F32)?,
                            Strided {
                                stride: width,
                                offset: 0,
                            },
                        ))
                    });
                    out.split = Some(parts.collect::<Result<_, LlmError>>()?);
                }
                let parts = out.split.as_deref().expect("allocated above");
                for (w, (y, _)) in ws.iter().zip(parts) {
                    project(step, w, x, y)?;
                }
                Ok(parts)
            }
        }
    }
}

/// The outputs of one kind of projection in a forward step, shared by every layer.
struct ProjectionOutput {
    widths: Vec<usize>,
    stacked: Option<Vec<(Tensor, Strided)>>,
    split: Option<Vec<(Tensor, Strided)>>,
}

impl ProjectionOutput {
    fn new(widths: &[usize]) -> ProjectionOutput {
        ProjectionOutput {
            widths: widths.to_vec(),
            stacked: None,
            split: None,
        }
    }
}

/// A loaded model with its KV cache.
pub struct Llama {
    /// Hyperparameters.
    pub cfg: LlamaConfig,
    layers: Vec<Layer>,
    tok_embd: Tensor,
    output_norm: Tensor,
    /// The logits projection: `output.weight`, or the token embedding where the model ties them.
    output: Weights,
    /// Positions the cache holds.
    pub max_context: usize,
    /// Positions filled so far.
    pub pos: usize,
    /// How the cache stores keys and values.
    kv_mode: KvMode,
    /// The packed layout of each layer's cache (None in f32).
    kv_layout: Option<KvLayout>,
    /// Positions of a packed cache held as codes (the rest are in its f16 ring).
    compressed: usize,
    /// An EMS cache's layout, and the slots each of its heads holds (positions once compacted are
    /// merged or gone, so slots and positions part ways).
    ems: Option<EmsLayout>,
    slots: usize,
    /// The f32 keys and values a packed cache is decompressed into before each layer's attention, shared
    /// by every layer (the step's launches run in order).
    work: Option<[Tensor; 2]>,
    /// A low-rank cache's shared scratch.
    lowrank: Option<LowRankScratch>,
    /// A paged cache's shape (its pools are the layers' caches).
    paged: Option<PagedShape>,
    /// Tails allocated in each layer of a KIVI paged cache.
    paged_tails: usize,
    /// GPU time per launch of every step since the last [`Llama::take_launch_times`], when the context
    /// profiles (timestamps); the `--profile` summary of the CLI reads it.
    launch_times: Vec<wring_runtime::LaunchTime>,
    /// Kernel launches of the last forward step.
    last_launches: usize,
    /// Whether kernels producing a product's input write its 8-bit units themselves (see
    /// [`Llama::set_unit_fusion`]).
    unit_fusion: bool,
    /// Whether decode splits each RMSNorm between the products around it (see
    /// [`Llama::set_norm_split`]).
    norm_split: bool,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("cfg", &self.cfg)
            .field("pos", &self.pos)
            .finish()
    }
}

/// Uploads a GGUF tensor as a device tensor of shape [outer..., inner] in its stored type.
fn upload(ctx: &Context, g: &Gguf, t: &TensorInfo) -> Result<Tensor, LlmError> {
    upload_bytes(ctx, t, g.tensor_data(t))
}

/// Uploads the bytes of a tensor described by `t` (its type and dims).
fn upload_bytes(ctx: &Context, t: &TensorInfo, data: &[u8]) -> Result<Tensor, LlmError> {
    let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
    Ok(match t.ggml_type {
        0 => {
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            ctx.upload(&shape, &v)?
        }
        1 => {
            let v: Vec<f16> = data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            ctx.upload(&shape, &v)?
        }
        ty => {
            let f = BlockFormat::from_ggml_type(ty).map_err(|_| {
                LlmError::Unsupported(format!(
                    "tensor `{}` is stored as {}, which wring cannot run yet",
                    t.name,
                    t.type_name()
                ))
            })?;
            ctx.upload_blocks(&shape, f, data)?
        }
    })
}

/// A GGUF tensor's values widened to f32 (f32, f16 or any block format wring reads).
pub fn tensor_f32(g: &Gguf, t: &TensorInfo) -> Result<Vec<f32>, LlmError> {
    let data = g.tensor_data(t);
    Ok(match t.ggml_type {
        0 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        1 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        ty => BlockFormat::from_ggml_type(ty)
            .and_then(|f| f.dequantize_to_vec(data, t.len() as usize))
            .map_err(|e| LlmError::Unsupported(format!("`{}`: {e}", t.name)))?,
    })
}

/// A 1-D weight (norms) as an f32 vector, whatever its stored float type.
fn upload_vector(ctx: &Context, g: &Gguf, name: &str) -> Result<Tensor, LlmError> {
    let t = g
        .tensor(name)
        .ok_or_else(|| LlmError::Unsupported(format!("tensor `{name}` is missing")))?;
    if t.ggml_type != 0 {
        return Err(LlmError::Unsupported(format!(
            "norm `{name}` is {}, expected F32",
            t.type_name()
        )));
    }
    upload(ctx, g, t)
}

/// Where a model's weights come from: a GGUF file, or a Hugging Face safetensors checkpoint. Tensors are
/// asked for by their GGUF names; the model code is the same whatever the source and the weights' format.
pub trait WeightSource {
    /// The hyperparameters.
    fn config(&self) -> Result<LlamaConfig, LlmError>;
    /// A weight matrix (shape [outer, inner]) in the format the source stores.
    fn matrix(&self, ctx: &Context, name: &str) -> Result<Weights, LlmError>;
    /// A norm weight as f32.
    fn vector(&self, ctx: &Context, name: &str) -> Result<Tensor, LlmError>;
    /// Matrices with one inner dimension and stored type stacked row-wise into one tensor, or `None` when
    /// they cannot be (different types or widths, or a source that does not stack).
    fn stacked(&self, _ctx: &Context, _names: &[&str]) -> Result<Option<Weights>, LlmError> {
        Ok(None)
    }
    /// Called once every tensor is on the device: a mapped source lets go of its resident pages.
    fn uploaded(&self) {}
    /// An optional f32 vector's values (a bias, a q/k norm, RoPE factors), or `None` where the source has
    /// no such tensor.
    fn values(&self, _name: &str) -> Result<Option<Vec<f32>>, LlmError> {
        Ok(None)
    }
}

/// The token embedding as one tensor (its rows are gathered by id, which only a tensor supports).
fn embedding(src: &dyn WeightSource, ctx: &Context) -> Result<Tensor, LlmError> {
    match src.matrix(ctx, "token_embd.weight")? {
        Weights::Tensor(t) => Ok(t),
        Weights::Group(_) => Err(LlmError::Unsupported(
            "a group-quantized token embedding (its rows cannot be gathered yet)".into(),
        )),
    }
}

impl WeightSource for Gguf {
    fn config(&self) -> Result<LlamaConfig, LlmError> {
        LlamaConfig::from_gguf(self)
    }

    fn matrix(&self, ctx: &Context, name: &str) -> Result<Weights, LlmError> {
        let t = self
            .tensor(name)
            .ok_or_else(|| LlmError::Unsupported(format!("tensor `{name}` is missing")))?;
        Ok(upload(ctx, self, t)?.into())
    }

    fn vector(&self, ctx: &Context, name: &str) -> Result<Tensor, LlmError> {
        upload_vector(ctx, self, name)
    }

    fn values(&self, name: &str) -> Result<Option<Vec<f32>>, LlmError> {
        self.tensor(name).map(|t| tensor_f32(self, t)).transpose()
    }

    fn uploaded(&self) {
        self.release_pages();
    }

    fn stacked(&self, ctx: &Context, names: &[&str]) -> Result<Option<Weights>, LlmError> {
        let infos: Vec<&TensorInfo> = names
            .iter()
            .map(|n| {
                self.tensor(n)
                    .ok_or_else(|| LlmError::Unsupported(format!("tensor `{n}` is missing")))
            })
            .collect::<Result<_, _>>()?;
        let first = infos[0];
        if infos.iter().any(|t| {
            t.ggml_type != first.ggml_type || t.dims.len() != 2 || t.dims[0] != first.dims[0]
        }) {
            return Ok(None);
        }
        // Rows of every GGUF type are whole blocks, so the tensors' bytes concatenate into the stacked rows.
        let rows: u64 = infos.iter().map(|t| t.dims[1]).sum();
        let bytes: Vec<u8> = infos
            .iter()
            .flat_map(|t| self.tensor_data(t).iter().copied())
            .collect();
        let stacked = TensorInfo {
            dims: vec![first.dims[0], rows],
            ..first.clone()
        };
        Ok(Some(upload_bytes(ctx, &stacked, &bytes)?.into()))
    }
}

impl Llama {
    /// Loads a llama-family GGUF onto the device, with a KV cache of `max_context` positions.
    pub fn load(
        ctx: &Context,
        g: &Gguf,
        max_context: usize,
        progress: impl FnMut(usize, usize),
    ) -> Result<Llama, LlmError> {
        Llama::load_from(ctx, g, max_context, progress)
    }

    /// Loads a model from any weight source, with an f32 KV cache.
    pub fn load_from(
        ctx: &Context,
        src: &dyn WeightSource,
        max_context: usize,
        progress: impl FnMut(usize, usize),
    ) -> Result<Llama, LlmError> {
        Llama::load_with(ctx, src, max_context, KvMode::F32, progress)
    }

    /// Loads a model from any weight source, with a KV cache of `max_context` positions stored as
    /// `kv_mode` says. The mode and the cache's size are checked before anything is allocated.
    pub fn load_with(
        ctx: &Context,
        src: &dyn WeightSource,
        max_context: usize,
        kv_mode: KvMode,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Llama, LlmError> {
        let cfg = src.config()?;
        let max_context = max_context.min(cfg.context).max(1);
        let get = |name: &str| src.matrix(ctx, name);
        let kv = cfg.n_kv_heads * cfg.head_dim;
        // The KV cache is the one allocation sized by a request rather than by the file's own bytes.
        if let KvMode::LowRank { .. } = kv_mode {
            return Err(low_rank_needs_factors(kv_mode));
        }
        let kv_layout = kv_mode.layout(&cfg, max_context)?;
        let ems = kv_mode.ems_layout(&cfg, max_context)?;
        check_kv_budget(&cfg, max_context, kv_mode, kv_budget())?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let factors = match cfg.rope_factors.tensor(max_context) {
            Some(name) => src.values(name)?.unwrap_or_default(),
            None => Vec::new(),
        };
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            // Phi-3 stores q/k/v and gate/up fused: one stacked product as wring would stack them.
            let qkv = match cfg.parts.fused_qkv {
                true => Projection::Stacked(get(&n("attn_qkv"))?),
                false => Projection::load(ctx, src, &[n("attn_q"), n("attn_k"), n("attn_v")])?,
            };
            let gate_up = match cfg.parts.fused_gate_up {
                true => Projection::Stacked(get(&n("ffn_up"))?),
                false => Projection::load(ctx, src, &[n("ffn_gate"), n("ffn_up")])?,
            };
            layers.push(Layer {
                attn_norm: src.vector(ctx, &n("attn_norm"))?,
                qkv,
                wo: get(&n("attn_output"))?,
                ffn_norm: src.vector(ctx, &n("ffn_norm"))?,
                gate_up,
                w_down: get(&n("ffn_down"))?,
                cache: LayerCache::new(ctx, kv_layout.as_ref(), ems.as_ref(), max_context, kv)?,
                extra: layer_extra(ctx, src, &cfg, l, &factors)?,
                post_norms: match cfg.gemma {
                    Some(_) => Some([
                        src.vector(ctx, &n("post_attention_norm"))?,
                        src.vector(ctx, &n("post_ffw_norm"))?,
                    ]),
                    None => None,
                },
            });
            progress(l + 1, cfg.n_layers);
        }
        let tok_embd = embedding(src, ctx)?;
        let output_norm = src.vector(ctx, "output_norm.weight")?;
        let output = if cfg.tied_output {
            Weights::Tensor(tok_embd.clone())
        } else {
            get("output.weight")?
        };
        src.uploaded();
        Ok(Llama {
            output,
            tok_embd,
            output_norm,
            layers,
            max_context,
            pos: 0,
            work: working_cache(ctx, kv_layout.as_ref(), max_context * kv)?,
            lowrank: None,
            paged: None,
            paged_tails: 0,
            kv_mode,
            kv_layout,
            ems,
            slots: 0,
            compressed: 0,
            cfg,
            launch_times: Vec::new(),
            last_launches: 0,
            unit_fusion: true,
            norm_split: true,
        })
    }

    /// Replaces the KV cache with an empty one stored as `mode` (the context is forgotten).
    pub fn set_kv_mode(&mut self, ctx: &Context, mode: KvMode) -> Result<(), LlmError> {
        if let KvMode::LowRank { .. } = mode {
            return Err(low_rank_needs_factors(mode));
        }
        let layout = mode.layout(&self.cfg, self.max_context)?;
        let ems = mode.ems_layout(&self.cfg, self.max_context)?;
        check_kv_budget(&self.cfg, self.max_context, mode, kv_budget())?;
        let kv = self.cfg.n_kv_heads * self.cfg.head_dim;
        self.work = None;
        for layer in &mut self.layers {
            layer.cache =
                LayerCache::new(ctx, layout.as_ref(), ems.as_ref(), self.max_context, kv)?;
        }
        self.ems = ems;
        self.work = working_cache(ctx, layout.as_ref(), self.max_context * kv)?;
        self.lowrank = None;
        self.paged = None;
        self.paged_tails = 0;
        self.kv_mode = mode;
        self.kv_layout = layout;
        self.reset();
        Ok(())
    }

    /// Replaces the KV cache with an empty low-rank one (CSKV) with `factors` from `wring kv-calibrate`,
    /// checked against the model before anything is allocated.
    pub fn set_kv_lowrank(
        &mut self,
        ctx: &Context,
        factors: &wring_io::kv_factors::KvFactors,
    ) -> Result<(), LlmError> {
        let c = &self.cfg;
        let kv = c.n_kv_heads * c.head_dim;
        lowrank_fits(c)?;
        if (factors.layers.len(), factors.hidden, factors.kv) != (c.n_layers, c.n_embd, kv) {
            return Err(LlmError::Request(format!(
                "the KV factors are for {} layers of {} -> {} channels; this model has {} layers of {} -> {kv}",
                factors.layers.len(),
                factors.hidden,
                factors.kv,
                c.n_layers,
                c.n_embd
            )));
        }
        let mode: KvMode = format!("lowrank:{}", factors.rank).parse()?;
        let layout = mode
            .layout(c, self.max_context)?
            .expect("a low-rank cache has a ring");
        let feature_layout = mode
            .feature_layout(c, self.max_context)
            .expect("a low-rank cache stores features");
        feature_layout
            .check("kv features")
            .map_err(|e| LlmError::Request(format!("KV cache mode {mode}: {e}")))?;
        check_kv_budget(c, self.max_context, mode, kv_budget())?;
        let rank = factors.rank;
        let upload = |data: &[f32], shape: &[usize]| -> Result<Weights, LlmError> {
            Ok(Weights::Tensor(ctx.upload(shape, data)?))
        };
        self.work = None;
        for (layer, pair) in self.layers.iter_mut().zip(&factors.layers) {
            layer.cache = LayerCache::LowRank {
                ring: ctx.empty(&[layout.words()], DType::U32)?,
                features: ctx.empty(&[feature_layout.words()], DType::U32)?,
                a: [
                    upload(&pair[0].a, &[rank, c.n_embd])?,
                    upload(&pair[1].a, &[rank, c.n_embd])?,
                ],
                b: [
                    upload(&pair[0].b, &[kv, rank])?,
                    upload(&pair[1].b, &[kv, rank])?,
                ],
            };
        }
        let positions: Vec<i32> = (0..self.max_context as i32).collect();
        self.lowrank = Some(LowRankScratch {
            features: [
                ctx.empty(&[self.max_context * rank], DType::F32)?,
                ctx.empty(&[self.max_context * rank], DType::F32)?,
            ],
            rank,
            rebuilt: ctx.empty(&[self.max_context * kv], DType::F32)?,
            positions: ctx.upload(&[self.max_context], &positions)?,
            layout: feature_layout,
        });
        self.work = working_cache(ctx, Some(&layout), self.max_context * kv)?;
        self.kv_mode = mode;
        self.ems = None;
        self.paged = None;
        self.paged_tails = 0;
        self.kv_layout = Some(layout);
        self.reset();
        Ok(())
    }

    /// Replaces the KV cache with a paged one for continuous batching: in each layer, pools of `blocks`
    /// blocks of `block` positions (a power of two, at least 8) stored as `mode` says, which the sequences
    /// of a batch share through their block tables ([`Llama::forward_paged`]). f32 and f16 are paged as
    /// they are; q8, q4 and q2 (optionally rotated) as KIVI's codes, which attention dequantizes in
    /// registers: a block's keys per channel over its positions (as the contiguous cache groups them over
    /// 32 tokens), its values per position and head, quantized when the block is full. Each running
    /// sequence also keeps its last full block and its unfinished one in an f16 ring (allocated as
    /// sequences need them, within the KV budget), which attention reads beside the codes, so that 32 to
    /// 63 recent positions keep full precision as the contiguous cache's window does (use blocks of
    /// [`KvMode::paged_block`], KIVI's 32). Any other mode is refused, naming the paged ones. The pools'
    /// bytes are checked against the KV budget and each pool against the adapter's binding limit before
    /// anything is allocated.
    pub fn set_paged(
        &mut self,
        ctx: &Context,
        mode: KvMode,
        blocks: usize,
        block: usize,
    ) -> Result<PagedShape, LlmError> {
        let pool = paged_pool(mode)?;
        if block < 8 || !block.is_power_of_two() {
            return Err(LlmError::Request(format!(
                "paged KV blocks of {block} positions: a block is a power of two, at least 8"
            )));
        }
        if blocks == 0 {
            return Err(LlmError::Request("a paged KV cache of 0 blocks".into()));
        }
        let c = &self.cfg;
        let kv = c.n_kv_heads * c.head_dim;
        pool.check("paged KV cache", kv, c.head_dim)
            .map_err(|e| LlmError::Request(e.to_string()))?;
        let [kw, vw] = pool.pool_words(kv, c.head_dim, block, blocks);
        let pool_bytes = (kw.max(vw) as u128) * 4;
        let total = (kw as u128 + vw as u128) * 4 * c.n_layers as u128;
        let budget = kv_budget();
        if total > u128::from(budget) {
            return Err(LlmError::Request(format!(
                "a paged KV cache of {blocks} blocks of {block} positions needs {} ({mode}), above the {} budget; ask for fewer blocks or raise WRING_KV_BUDGET_MIB",
                wring_runtime::human_bytes(u64::try_from(total).unwrap_or(u64::MAX)),
                wring_runtime::human_bytes(budget)
            )));
        }
        let limit = u128::from(ctx.info().limits.max_storage_buffer_binding_size);
        if pool_bytes > limit {
            return Err(LlmError::Request(format!(
                "a paged KV pool of {blocks} blocks of {block} positions is {} per layer and side, above this adapter's {} binding limit",
                wring_runtime::human_bytes(u64::try_from(pool_bytes).unwrap_or(u64::MAX)),
                wring_runtime::human_bytes(u64::try_from(limit).unwrap_or(u64::MAX))
            )));
        }
        let dtype = pool.dtype();
        self.work = None;
        for layer in &mut self.layers {
            layer.cache = LayerCache::Paged {
                k: ctx.empty(&[kw], dtype)?,
                v: ctx.empty(&[vw], dtype)?,
                tails: None,
            };
        }
        self.paged_tails = 0;
        let shape = PagedShape {
            blocks,
            block,
            pool,
        };
        self.paged = Some(shape);
        self.lowrank = None;
        self.ems = None;
        self.kv_layout = None;
        self.kv_mode = mode;
        self.reset();
        Ok(shape)
    }

    /// The paged cache's shape, if the cache is paged.
    pub fn paged(&self) -> Option<PagedShape> {
        self.paged
    }

    /// Blocks of `block` positions a paged cache in `mode` can have within `bytes` (the pools of every
    /// layer, keys and values): what `--kv-budget` turns into.
    pub fn paged_blocks_within(&self, mode: KvMode, block: usize, bytes: u64) -> usize {
        let c = &self.cfg;
        let kv = c.n_kv_heads * c.head_dim;
        let [kw, vw] =
            paged_pool(mode)
                .unwrap_or(Pool::F32)
                .pool_words(kv, c.head_dim, block.max(1), 1);
        let per_block = (kw + vw) as u128 * 4 * c.n_layers as u128;
        (bytes as u128 / per_block.max(1)).min(u32::MAX as u128) as usize
    }

    /// Runs one step over a paged cache ([`Llama::set_paged`]) for the rows of several sequences, each
    /// appending its tokens' keys and values at its positions through its block table, and returns the
    /// logits of the first `logit_rows` rows (a batch puts its decode rows first), \[rows\]\[vocab\]. The
    /// tables are checked against the pool and the positions before anything runs.
    pub fn forward_paged(
        &mut self,
        ctx: &Context,
        seqs: &[SeqRows<'_>],
        logit_rows: usize,
    ) -> Result<Vec<f32>, LlmError> {
        let Some(shape) = self.paged else {
            return Err(LlmError::Request(
                "forward_paged needs a paged cache (Llama::set_paged)".into(),
            ));
        };
        let mut tokens = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let end = s.pos0 + s.tokens.len();
            if s.tokens.is_empty() {
                return Err(LlmError::Request(format!(
                    "sequence {i} of the step has no tokens"
                )));
            }
            if s.reused > s.pos0 {
                return Err(LlmError::Request(format!(
                    "sequence {i} reused {} positions from the prefix cache and starts its step at {}",
                    s.reused, s.pos0
                )));
            }
            if end > self.max_context {
                return Err(LlmError::Request(format!(
                    "sequence {i} reaches position {end}, past the context of {}",
                    self.max_context
                )));
            }
            if s.table.len() * shape.block < end {
                return Err(LlmError::Request(format!(
                    "sequence {i}'s block table holds {} positions, and its tokens reach {end}",
                    s.table.len() * shape.block
                )));
            }
            if let Some(&b) = s.table.iter().find(|&&b| b as usize >= shape.blocks) {
                return Err(LlmError::Request(format!(
                    "sequence {i}'s block table names block {b} of a pool of {}",
                    shape.blocks
                )));
            }
            tokens.extend_from_slice(s.tokens);
        }
        if logit_rows > tokens.len() {
            return Err(LlmError::Request(format!(
                "logits of {logit_rows} rows asked of a step of {}",
                tokens.len()
            )));
        }
        if shape.pool.kivi() {
            let mut tails: Vec<u32> = seqs.iter().map(|s| s.tail).collect();
            tails.sort_unstable();
            if tails.windows(2).any(|w| w[0] == w[1]) {
                return Err(LlmError::Request(
                    "two sequences of the step share a KIVI tail".into(),
                ));
            }
            let need = tails.last().map_or(0, |&t| t as usize + 1);
            if need > shape.blocks {
                return Err(LlmError::Request(format!(
                    "KIVI tail {} of a pool of {} blocks (a running sequence holds at least one)",
                    need - 1,
                    shape.blocks
                )));
            }
            self.grow_tails(ctx, need, shape)?;
        }
        let logits = if logit_rows == 0 {
            Logits::Last
        } else {
            Logits::Leading(logit_rows)
        };
        let out = self.run(ctx, &tokens, logits, None, Some((seqs, shape)))?;
        Ok(if logit_rows == 0 { Vec::new() } else { out })
    }

    /// One sequence alone through the paged cache, its positions in the pool's blocks in order (block i
    /// holds positions i x block onwards; ring 0): what scoring or timing a paged mode on one text needs.
    /// `tokens` start at `pos0`; returns the logits of the first `logit_rows` rows.
    pub fn forward_paged_alone(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        pos0: usize,
        logit_rows: usize,
    ) -> Result<Vec<f32>, LlmError> {
        let block = self.paged.map_or(1, |p| p.block);
        let table: Vec<u32> = (0..(pos0 + tokens.len()).div_ceil(block) as u32).collect();
        let rows = [SeqRows {
            tokens,
            pos0,
            table: &table,
            tail: 0,
            reused: 0,
        }];
        self.forward_paged(ctx, &rows, logit_rows)
    }

    /// Makes every layer of a KIVI paged cache hold at least `need` tails (in steps of powers of two),
    /// keeping the tails already there: a running sequence's unsealed positions live in them.
    fn grow_tails(
        &mut self,
        ctx: &Context,
        need: usize,
        shape: PagedShape,
    ) -> Result<(), LlmError> {
        if need <= self.paged_tails {
            return Ok(());
        }
        let c = &self.cfg;
        let words_per_tail =
            kv_paged::ring_positions(1, shape.block) * c.n_kv_heads * c.head_dim / 2;
        let count = need.next_power_of_two().min(shape.blocks).max(need);
        let added = ((count - self.paged_tails) * words_per_tail * 4 * 2 * c.n_layers) as u64;
        let budget = kv_budget();
        if self.kv_bytes().saturating_add(added) > budget {
            return Err(LlmError::Request(format!(
                "the KIVI tails of {count} sequences would take the paged KV cache past the {} budget; run fewer sequences at once or raise WRING_KV_BUDGET_MIB",
                wring_runtime::human_bytes(budget)
            )));
        }
        for layer in &mut self.layers {
            if let LayerCache::Paged { tails, .. } = &mut layer.cache {
                let mut grown = Vec::with_capacity(2);
                for side in 0..2 {
                    let mut words = vec![0u32; count * words_per_tail];
                    if let Some(old) = tails.as_ref() {
                        let kept: Vec<u32> = ctx.read(&old[side])?;
                        words[..kept.len()].copy_from_slice(&kept);
                    }
                    grown.push(ctx.upload(&[words.len()], &words)?);
                }
                let v = grown.pop().expect("two sides");
                let k = grown.pop().expect("two sides");
                *tails = Some([k, v]);
            }
        }
        self.paged_tails = count;
        Ok(())
    }

    /// The bindings of a step over a paged cache (see [`PagedStep`]).
    fn paged_step(
        &self,
        ctx: &Context,
        seqs: &[SeqRows<'_>],
        shape: PagedShape,
    ) -> Result<PagedStep, LlmError> {
        let c = &self.cfg;
        let kv = c.n_kv_heads * c.head_dim;
        let (mut slots, mut table, mut rows, mut segments) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let b = shape.block;
        let kivi = shape.pool.kivi();
        // A code pool: each token's (first ring slot, first position read from the ring), and the blocks
        // the step fills. The ring holds a sequence's last full block and its unfinished one (positions
        // from `recent` on); earlier positions of the step are only sealed into the pool.
        let (mut info, mut jobs) = (Vec::new(), Vec::new());
        let ring = kv_paged::ring_positions(1, b);
        for s in seqs {
            let off = table.len() as u32;
            let first = slots.len();
            let end = s.pos0 + s.tokens.len();
            let recent = (end / b).saturating_sub(1) * b;
            let ring0 = s.tail as usize * ring;
            segments.push((first, s.tokens.len()));
            for p in s.pos0..end {
                slots.push(if !kivi {
                    s.table[p / b] * b as u32 + (p % b) as u32
                } else if p >= recent {
                    (ring0 + p % ring) as u32
                } else {
                    kv_paged::NO_SLOT
                });
                rows.extend([off, p as u32]);
                if kivi {
                    info.extend([ring0 as u32, recent.max(s.reused) as u32]);
                }
            }
            if kivi {
                // Blocks whose last position the step computes: the first may have positions staged
                // in the ring by earlier steps.
                for blk in s.pos0 / b..end / b {
                    let start = blk * b;
                    let staged = s.pos0.saturating_sub(start);
                    let token = first + start + staged - s.pos0;
                    let at = ring0 + start % ring;
                    jobs.extend([s.table[blk], at as u32, staged as u32, token as u32]);
                }
            }
            table.extend_from_slice(s.table);
        }
        let t = slots.len();
        let group = c.n_heads / c.n_kv_heads;
        let decode_only = seqs.iter().all(|s| s.tokens.len() == 1);
        let tile_rows = kv_paged::tile_rows(ctx.caps(), c.head_dim, group, decode_only);
        let tiles: Vec<u32> = kv_paged::tiles(&segments, group, tile_rows)
            .into_iter()
            .flatten()
            .collect();
        let attn = AttnPaged {
            tokens: t,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            block: shape.block,
            slots: shape.positions(),
            table_len: table.len(),
            tiles: tiles.len() / 2,
            tile_rows,
            pool: shape.pool,
            tails: if kivi { self.paged_tails } else { 0 },
            scale: c.attn_scale(),
            softcap: c.gemma.as_ref().map_or(0.0, |g| g.attn_softcap),
            window: 0,
        };
        let seal = if jobs.is_empty() {
            None
        } else {
            let unit = KvPagedSeal {
                pool: shape.pool,
                kv,
                head_dim: c.head_dim,
                block: b,
                blocks: shape.blocks,
                tails: self.paged_tails,
                tokens: t,
                jobs: jobs.len() / 4,
            };
            Some((unit, ctx.upload(&[jobs.len()], &jobs)?))
        };
        let kivi = if kivi {
            Some(ctx.upload(&[info.len()], &info)?)
        } else {
            None
        };
        Ok(PagedStep {
            seal,
            kivi,
            slots: ctx.upload(&[t], &slots)?,
            table: ctx.upload(&[table.len()], &table)?,
            seqs: ctx.upload(&[rows.len()], &rows)?,
            tiles: ctx.upload(&[tiles.len()], &tiles)?,
            attn,
            k: ctx.empty(&[t * kv], DType::F32)?,
            v: ctx.empty(&[t * kv], DType::F32)?,
        })
    }

    /// How the KV cache stores keys and values.
    pub fn kv_mode(&self) -> KvMode {
        self.kv_mode
    }

    /// Marks the first `pos` positions as filled without computing them, their keys and values being
    /// whatever the cache's buffers hold: for timing a decode step at a given context length (the work of a
    /// step does not depend on the values) without running the prompt that would fill it. Never use it
    /// for output anyone reads.
    pub fn assume_filled(&mut self, ctx: &Context, pos: usize) -> Result<(), LlmError> {
        if pos >= self.max_context {
            return Err(LlmError::Request(format!(
                "{pos} positions leave no room in a context of {}",
                self.max_context
            )));
        }
        // Pooled buffers may hold another mode's bytes, which decode to anything; zeros decode to zeros.
        let mut step = ctx.step("zero the cache");
        let mut zero = |t: &Tensor| {
            let words = (t.bytes() / 4) as usize;
            step.run(&Fill { words, value: 0 }, &[("dst", t)])
        };
        for layer in &self.layers {
            match &layer.cache {
                LayerCache::F32 { k, v } => {
                    zero(k)?;
                    zero(v)?;
                }
                LayerCache::Packed(t) => zero(t)?,
                LayerCache::Ems { k, v, state } => {
                    zero(k)?;
                    zero(v)?;
                    zero(state)?;
                }
                LayerCache::LowRank { ring, features, .. } => {
                    zero(ring)?;
                    zero(features)?;
                }
                LayerCache::Paged { k, v, tails } => {
                    zero(k)?;
                    zero(v)?;
                    for t in tails.iter().flatten() {
                        zero(t)?;
                    }
                }
            }
        }
        step.submit()?;
        self.pos = pos;
        self.compressed = self.kv_layout.map_or(0, |l| l.compressible(0, pos));
        self.slots = self.ems.map_or(pos, |e| pos.min(e.budget));
        Ok(())
    }

    /// Positions the cache holds as codes (0 unless a KIVI mode has compressed some).
    pub fn kv_compressed(&self) -> usize {
        self.compressed
    }

    /// Device bytes the KV cache takes: every layer's buffers, plus the shared f32 working cache of a
    /// compressed mode.
    pub fn kv_bytes(&self) -> u64 {
        let work: u64 = self.work.iter().flatten().map(Tensor::bytes).sum();
        self.layers.iter().map(|l| l.cache.bytes()).sum::<u64>() + work
    }

    /// Kernel launches the last forward step submitted (the per-token launch budget, for a decode step).
    pub fn last_launches(&self) -> usize {
        self.last_launches
    }

    /// With 8-bit activations (`ContextOptions::q8_activations`), whether the norms, the attention and the
    /// SwiGLU gate write the 8-bit units of the products after them (on, the default: 4 launches fewer
    /// per layer, 5 in a decode step on a CPU adapter, whose gate/up product writes the gate's units
    /// itself) or floats that quantize_q8 then rounds (off). Both give the same units, bit for bit;
    /// the switch is there to show that, and to measure the launches it saves.
    pub fn set_unit_fusion(&mut self, on: bool) {
        self.unit_fusion = on;
    }

    /// With unit fusion, whether a decode step splits each RMSNorm between the products around it where
    /// the adapter offers that (on, the default: CPU adapters; two launches fewer per layer and two at the
    /// head). Its units quantize the row times the norm's weight and the products after it apply the
    /// norm's scale, so its logits differ from the unsplit norm's by rounding (a code at a half step);
    /// prompts are not affected.
    pub fn set_norm_split(&mut self, on: bool) {
        self.norm_split = on;
    }

    /// The per-launch GPU times collected since the last call (empty unless the context profiles).
    pub fn take_launch_times(&mut self) -> Vec<wring_runtime::LaunchTime> {
        std::mem::take(&mut self.launch_times)
    }

    /// Forgets the cached context.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.compressed = 0;
        self.slots = 0;
    }

    /// Forgets the positions from `pos` on, keeping those before it: the next step runs at position `pos`.
    /// Exact for the f32 and f16 caches, which keep every position as it was written; the compressed,
    /// low-rank and EMS caches have rewritten or merged positions and refuse it.
    pub fn rewind(&mut self, pos: usize) -> Result<(), LlmError> {
        if !matches!(self.kv_mode, KvMode::F32 | KvMode::F16) {
            return Err(LlmError::Request(format!(
                "a {} KV cache cannot be rewound (only f32 and f16 caches keep positions as written)",
                self.kv_mode
            )));
        }
        if pos > self.pos {
            return Err(LlmError::Request(format!(
                "cannot rewind to position {pos}: the cache holds {}",
                self.pos
            )));
        }
        self.pos = pos;
        self.slots = pos;
        Ok(())
    }

    /// Slots an EMS cache holds per head (the positions filled in other modes).
    pub fn kv_slots(&self) -> usize {
        if self.ems.is_some() {
            self.slots
        } else {
            self.pos
        }
    }

    /// Runs `tokens` at the next positions, appends them to the cache, and returns the logits of every
    /// position (`all_logits`) or of the last one, as \[rows\]\[vocab\]. One step, one command buffer.
    pub fn forward(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>, LlmError> {
        let logits = if all_logits {
            Logits::All
        } else {
            Logits::Last
        };
        self.run(ctx, tokens, logits, None, None)
    }

    /// Runs `tokens` like [`Llama::forward`] and also returns what every linear layer read: per layer, the
    /// inputs of the q/k/v projections, of the output projection, of the gate/up projections and of the
    /// down projection, each \[tokens\]\[width\] (what calibration needs for the layer's Hessians).
    pub fn forward_inputs(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
    ) -> Result<Vec<[Vec<f32>; 4]>, LlmError> {
        let mut captured = Vec::new();
        self.run(ctx, tokens, Logits::Last, Some(&mut captured), None)?;
        captured
            .iter()
            .map(|sites: &[Tensor; 4]| {
                let read = |t: &Tensor| ctx.read::<f32>(t);
                Ok([
                    read(&sites[0])?,
                    read(&sites[1])?,
                    read(&sites[2])?,
                    read(&sites[3])?,
                ])
            })
            .collect()
    }

    /// The last residual add with the output norm (`x = x_mid + d`), then the logits of the rows `logits`
    /// names.
    fn head(
        &self,
        ctx: &Context,
        step: &mut wring_runtime::Step<'_>,
        [x_mid, d, x]: [&Tensor; 3],
        logits: Logits,
    ) -> Result<Vec<Tensor>, LlmError> {
        let c = &self.cfg;
        let (t, e) = (x.shape()[0], c.n_embd);
        let f32t = |shape: &[usize]| ctx.empty(shape, DType::F32);
        let xn_all = f32t(&[t, e])?;
        rmsnorm_add(
            step,
            [x_mid, d, &self.output_norm],
            NormOut::F32(&xn_all),
            x,
            c.rms_eps,
        )?;
        // The logits of rows [first, first + n): the head applied to those rows of xn_all, read in place
        // where the offset is aligned for a view, else copied out first.
        let head = |step: &mut wring_runtime::Step<'_>, first: usize, n: usize| {
            let xn = ctx
                .view(&xn_all, (first * e * 4) as u64, &[n, e], DType::F32)
                .or_else(|_| {
                    let tmp = f32t(&[n, e])?;
                    let rows = CopyWords {
                        words: n * e,
                        src_offset: first * e,
                        dst_offset: 0,
                    };
                    step.run(&rows, &[("src", &xn_all), ("dst", &tmp)])?;
                    Ok::<Tensor, wring_runtime::Error>(tmp)
                })?;
            let logits = f32t(&[n, c.vocab])?;
            matmul_weights(step, &self.output, &xn, &logits)?;
            Ok::<Tensor, LlmError>(logits)
        };
        // Every row's logits (perplexity) may not fit one storage binding (2,048 rows of a 49,152-token
        // vocabulary are 384 MiB): the head then runs over blocks of rows that do.
        let rows = match logits {
            Logits::All => t,
            Logits::Leading(n) => n.min(t),
            Logits::Last => 0,
        };
        let blocks: Vec<(usize, usize)> = if rows > 0 {
            let limit = ctx.info().limits.max_storage_buffer_binding_size as usize;
            let per = (limit / (c.vocab * 4)).clamp(1, rows);
            (0..rows)
                .step_by(per)
                .map(|r| (r, per.min(rows - r)))
                .collect()
        } else {
            vec![(t - 1, 1)]
        };
        blocks
            .iter()
            .map(|&(first, n)| head(step, first, n))
            .collect()
    }

    fn run(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        logits_of: Logits,
        mut capture: Option<&mut Vec<[Tensor; 4]>>,
        paged: Option<(&[SeqRows<'_>], PagedShape)>,
    ) -> Result<Vec<f32>, LlmError> {
        let c = &self.cfg;
        let t = tokens.len();
        if t == 0 {
            return Err(LlmError::Request("no tokens to run".into()));
        }
        if paged.is_none() && self.paged.is_some() {
            return Err(LlmError::Request(
                "this model's KV cache is paged: run it through a batch (Llama::forward_paged)"
                    .into(),
            ));
        }
        if paged.is_none() && self.pos + t > self.max_context {
            return Err(LlmError::Request(format!(
                "{} positions exceed the context of {}",
                self.pos + t,
                self.max_context
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(LlmError::Request(format!(
                "token {bad} is outside the vocabulary of {}",
                c.vocab
            )));
        }
        let (e, kv, hd, qd) = (c.n_embd, c.kv_dim(), c.head_dim, c.q_dim());
        // A paged step writes its keys and values to a scratch of its own rows first (positions 0..t of
        // it), then to the pools.
        let pos0 = if paged.is_some() { 0 } else { self.pos };
        let kv_len = pos0 + t;
        // Where the step's keys go and what attention reads: the positions themselves, except in an EMS
        // cache, whose heads hold `slots` (RoPE still rotates by position).
        let cache_pos = if self.ems.is_some() { self.slots } else { pos0 };
        let cache_len = cache_pos + t;
        let ids = ctx.upload(&[t], tokens)?;
        let positions: Vec<i32> = match paged {
            Some((seqs, _)) => seqs
                .iter()
                .flat_map(|s| (s.pos0..s.pos0 + s.tokens.len()).map(|p| p as i32))
                .collect(),
            None => (pos0..kv_len).map(|p| p as i32).collect(),
        };
        let pos = ctx.upload(&[t], &positions)?;
        let paged_step = match paged {
            Some((seqs, shape)) => Some(self.paged_step(ctx, seqs, shape)?),
            None => None,
        };
        let f32t = |shape: &[usize]| ctx.empty(shape, DType::F32);
        let mut step = ctx.step("forward");
        let x = f32t(&[t, e])?;
        let vocab = self.tok_embd.shape().first().copied().unwrap_or(0);
        let lookup = GetRows {
            table: self.tok_embd.dtype(),
            rows: vocab,
            k: e,
            tokens: t,
            scale: c.gemma.as_ref().map_or(1.0, |g| g.embd_scale),
        };
        step.run(
            &lookup,
            &[("w", &self.tok_embd), ("ids", &ids), ("out", &x)],
        )?;
        let glue = qkv_glue(c, t, cache_pos);
        let rope = glue.rope;
        let attn = Attention {
            tokens: t,
            kv_len: cache_len,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            pos0: cache_pos,
            scale: c.attn_scale(),
            softcap: c.gemma.as_ref().map_or(0.0, |g| g.attn_softcap),
            window: 0,
        };
        // One set of scratch tensors serves every layer: the step's launches run in order, and wgpu puts a
        // barrier between launches that write and then read (or overwrite) the same buffer. Allocating per
        // layer would keep all of them alive until the step is submitted (hundreds of MiB for a long prompt).
        let (h, h2, qr) = (f32t(&[t, e])?, f32t(&[t, e])?, f32t(&[t, c.n_heads, hd])?);
        // Attention runs in one launch with no scores tensor (attn_fused), except in an EMS cache, whose
        // slot scores need the probabilities: there the three-launch composite fills these two.
        let ems_scratch = match self.ems {
            Some(_) => Some((
                f32t(&[t * c.n_heads * cache_len])?,
                f32t(&[t * c.n_heads * cache_len])?,
            )),
            None => None,
        };
        let (a, o, x_mid, d, gated) = (
            f32t(&[t, qd])?,
            f32t(&[t, e])?,
            f32t(&[t, e])?,
            f32t(&[t, e])?,
            f32t(&[t, c.n_ff])?,
        );
        // Gemma's post-norms write the attention's and the feed-forward block's normalized outputs here.
        let post = match c.gemma {
            Some(_) => Some((f32t(&[t, e])?, f32t(&[t, e])?)),
            None => None,
        };
        let (mut qkv_out, mut gate_up_out) = (
            ProjectionOutput::new(&[qd, kv, kv]),
            ProjectionOutput::new(&[c.n_ff, c.n_ff]),
        );
        // Where a product takes 8-bit activation units (takes_q8), the kernel producing its input writes
        // them itself (the norms, the attention, the SwiGLU gate): one quantize_q8 launch fewer per
        // product. Not while calibration captures the f32 inputs, nor for the low-rank cache, whose
        // features are computed from the f32 norm output, nor for the EMS cache's three-launch attention.
        // The scratch: units of an [t, e] row set (the norms' and the attention's, each read by the
        // product right after it) and of the gate's [t, n_ff].
        let units = if capture.is_none() && self.unit_fusion && ctx.q8_activations() {
            Some((
                ctx.empty(&[q8::words(t * e.max(qd))], DType::U32)?,
                ctx.empty(&[q8::words(t * c.n_ff)], DType::U32)?,
            ))
        } else {
            None
        };
        // For one row (decode), where the adapter offers it, each RMSNorm is split between the products
        // around it (residual_q8, scaled_q8): the o and down products add the residual and write the next
        // norm's input units with their sums of squares (`norm_units`), and the q/k/v, gate/up and output
        // products read those and apply the norm's scale. That takes the norm's launch out, two a layer.
        let eps = c.rms_eps;
        let norm_units = if t == 1 && units.is_some() && self.norm_split && c.gemma.is_none() {
            Some((
                ctx.empty(&[q8::words(e)], DType::U32)?,
                f32t(&[e.div_ceil(32)])?,
            ))
        } else {
            None
        };
        // Whether a layer's q/k/v product reads a split norm's units (the low-rank cache needs the
        // normalized row in f32).
        let qkv_scales = |step: &wring_runtime::Step<'_>, layer: &Layer| {
            norm_units.is_some()
                && !matches!(layer.cache, LayerCache::LowRank { .. })
                && layer.qkv.scales(step, eps)
        };
        // Whether the previous down product wrote this layer's norm units (and the residual sum x).
        let mut norm_ready = false;
        // The residual stream alternates between x (before attention) and x_mid (before the FFN); each
        // residual add is fused with the norm that follows it.
        // The residual the next norm adds: the down product's output, or Gemma's normalization of it.
        let d_res = post.as_ref().map_or(&d, |p| &p.1);
        for (i, layer) in self.layers.iter().enumerate() {
            let _span = tracing::debug_span!("layer", i).entered();
            // Gemma's sliding-window layers rotate by their own base and see only their window.
            let (rope_base, rope_scale, window) = c.layer_rope(i);
            let glue = RopeQkv {
                rope: Rope {
                    freq_base: rope_base,
                    freq_scale: rope_scale,
                    ..glue.rope
                },
                ..glue
            };
            let attn = Attention { window, ..attn };
            let qkv_units = units.as_ref().filter(|_| {
                !matches!(layer.cache, LayerCache::LowRank { .. }) && layer.qkv.takes_q8(&step, t)
            });
            let (h_out, mut qkv_in) = match qkv_units {
                Some((hq, _)) => (NormOut::Q8(hq), Input::Q8(hq, t)),
                None => (NormOut::F32(&h), Input::F32(&h)),
            };
            if let (true, Some((nq, ss))) = (norm_ready, &norm_units) {
                qkv_in = Input::Scaled(nq, ss, eps);
            } else if i == 0 {
                rmsnorm(&mut step, &x, &layer.attn_norm, h_out, c.rms_eps)?;
            } else {
                rmsnorm_add(
                    &mut step,
                    [&x_mid, d_res, &layer.attn_norm],
                    h_out,
                    &x,
                    c.rms_eps,
                )?;
            }
            // Calibration keeps a copy of each linear layer's input (the scratch tensors are reused by the
            // next layer within the same step).
            let mut keep = |step: &mut wring_runtime::Step<'_>, site: usize, src: &Tensor| {
                if let Some(cap) = capture.as_deref_mut() {
                    if cap.len() == i {
                        let e = |w| ctx.empty(&[t, w], DType::F32);
                        cap.push([e(c.n_embd)?, e(qd)?, e(c.n_embd)?, e(c.n_ff)?]);
                    }
                    let dst = &cap[i][site];
                    step.run(&CopyWords::new(dst.len()), &[("src", src), ("dst", dst)])?;
                }
                Ok::<(), LlmError>(())
            };
            keep(&mut step, 0, &h)?;
            // A packed cache is decompressed into the working cache first; this step's keys and values
            // are then written there, attended to, and stored into the packed cache.
            let (k_cache, v_cache) = match (&layer.cache, &self.work, &self.kv_layout) {
                (LayerCache::F32 { k, v }, _, _) | (LayerCache::Ems { k, v, .. }, _, _) => (k, v),
                (LayerCache::Paged { .. }, _, _) => {
                    let ps = paged_step.as_ref().expect("a paged cache runs paged steps");
                    (&ps.k, &ps.v)
                }
                (LayerCache::Packed(store), Some([k, v]), Some(layout)) => {
                    if pos0 > 0 {
                        let load = KvLoad {
                            layout: *layout,
                            compressed: self.compressed,
                            upto: pos0,
                        };
                        step.run(&load, &[("store", store), ("k", k), ("v", v)])?;
                        // GEAR blocks: the low-rank correction added, the outliers put back.
                        if layout.gear() && self.compressed > 0 {
                            let complete = KvGearLoad {
                                layout: *layout,
                                compressed: self.compressed,
                            };
                            step.run(&complete, &[("store", store), ("k", k), ("v", v)])?;
                        }
                    }
                    (k, v)
                }
                (
                    LayerCache::LowRank {
                        ring,
                        features,
                        a: factor_a,
                        b: factor_b,
                    },
                    Some([k, v]),
                    Some(layout),
                ) => {
                    let lr = self
                        .lowrank
                        .as_ref()
                        .expect("a low-rank cache has its scratch");
                    let rank = lr.rank;
                    // The step's features, stored (f16) with every earlier position's.
                    let step_features = f32t(&[t, rank])?;
                    for (a_w, all) in factor_a.iter().zip(&lr.features) {
                        matmul_weights(&mut step, a_w, &h, &step_features)?;
                        let copy = CopyWords {
                            words: t * rank,
                            src_offset: 0,
                            dst_offset: pos0 * rank,
                        };
                        step.run(&copy, &[("src", &step_features), ("dst", all)])?;
                    }
                    let store = KvStore::after_step(lr.layout, 0, pos0, kv_len);
                    let [fk, fv] = &lr.features;
                    step.run(&store, &[("k", fk), ("v", fv), ("store", features)])?;
                    // Positions past the window: features read back and rebuilt, keys rotated by RoPE
                    // at their positions.
                    let n = self.compressed;
                    if n > 0 {
                        let load = KvLoad {
                            layout: lr.layout,
                            compressed: 0,
                            upto: n,
                        };
                        step.run(&load, &[("store", features), ("k", fk), ("v", fv)])?;
                        let view = |t: &Tensor, shape: &[usize]| ctx.view(t, 0, shape, DType::F32);
                        matmul_weights(
                            &mut step,
                            &factor_b[0],
                            &view(fk, &[n, rank])?,
                            &view(&lr.rebuilt, &[n, kv])?,
                        )?;
                        let rope_keys = Rope {
                            tokens: n,
                            n_heads: c.n_kv_heads,
                            ..rope
                        };
                        let heads = [n, c.n_kv_heads, hd];
                        step.run(
                            &rope_keys,
                            &[
                                ("x", &view(&lr.rebuilt, &heads)?),
                                ("pos", &ctx.view(&lr.positions, 0, &[n], DType::I32)?),
                                ("y", &view(k, &heads)?),
                            ],
                        )?;
                        matmul_weights(
                            &mut step,
                            &factor_b[1],
                            &view(fv, &[n, rank])?,
                            &view(v, &[n, kv])?,
                        )?;
                    }
                    if pos0 > n {
                        let load = KvLoad {
                            layout: *layout,
                            compressed: n,
                            upto: pos0,
                        };
                        step.run(&load, &[("store", ring), ("k", k), ("v", v)])?;
                    }
                    (k, v)
                }
                _ => unreachable!("a packed cache always has its layout and working cache"),
            };
            // The launches below see only the positions filled so far. wgpu zeroes a buffer's range the
            // first time it is bound, so binding the whole cache would make all of it resident at the first
            // step (180 MiB for SmolLM2's 4,096 f32 positions) however short the run.
            let (k_cache, v_cache) = (
                &ctx.view(k_cache, 0, &[cache_len * kv], DType::F32)?,
                &ctx.view(v_cache, 0, &[cache_len * kv], DType::F32)?,
            );
            let qkv = layer.qkv.apply(ctx, &mut step, qkv_in, &mut qkv_out)?;
            let r = RopeQkv {
                q: qkv[0].1,
                k: qkv[1].1,
                v: qkv[2].1,
                ..glue
            };
            let mut glue_ops = vec![
                ("q", &qkv[0].0),
                ("k", &qkv[1].0),
                ("v", &qkv[2].0),
                ("pos", &pos),
                ("q_out", &qr),
                ("k_cache", k_cache),
                ("v_cache", v_cache),
            ];
            glue_ops.extend(layer.extra.as_ref().map(|x| ("extra", x)));
            step.run(&r, &glue_ops)?;
            if self.kv_mode.rotates() {
                let rotate = KvRotate {
                    head_dim: hd,
                    rows_q: t * c.n_heads,
                    k_first: pos0 * c.n_kv_heads,
                    rows_k: t * c.n_kv_heads,
                };
                step.run(&rotate, &[("q", &qr), ("k", k_cache)])?;
            }
            // The output projection's 8-bit units straight from the attention where it takes them (the
            // norm's units were read by the q/k/v product above, so the scratch is free).
            let attn_units = units.as_ref().filter(|_| {
                paged_step.is_none() && hd.is_multiple_of(32) && takes_q8(&step, &layer.wo, t)
            });
            let mut wo_in = Input::F32(&a);
            if let (
                LayerCache::Paged {
                    k: kp,
                    v: vp,
                    tails,
                },
                Some(ps),
            ) = (&layer.cache, &paged_step)
            {
                // The step's keys and values into the pools at their slots, then attention over each
                // sequence's blocks (a rotating mode's keys were rotated in the scratch above). A KIVI
                // pool first seals the blocks the step fills (reading what earlier steps left in the
                // tails), then stores the step's other positions into the tails in f16.
                let kivi = match (tails, &ps.kivi) {
                    (Some([tk, tv]), Some(info)) => Some((tk, tv, info)),
                    _ => None,
                };
                if let (Some((seal, jobs)), Some((tk, tv, _))) = (&ps.seal, kivi) {
                    step.run(
                        seal,
                        &[
                            ("k", k_cache),
                            ("v", v_cache),
                            ("tk", tk),
                            ("tv", tv),
                            ("jobs", jobs),
                            ("kp", kp),
                            ("vp", vp),
                        ],
                    )?;
                }
                let (store_pool, slots_held, dst) = match kivi {
                    Some((tk, tv, _)) => (
                        Pool::F16,
                        kv_paged::ring_positions(self.paged_tails, ps.attn.block),
                        [tk, tv],
                    ),
                    None => (ps.attn.pool, ps.attn.slots, [kp, vp]),
                };
                let store = KvPagedStore {
                    kv,
                    head_dim: hd,
                    tokens: t,
                    slots: slots_held,
                    pool: store_pool,
                };
                step.run(
                    &store,
                    &[
                        ("k", k_cache),
                        ("v", v_cache),
                        ("slots", &ps.slots),
                        ("kp", dst[0]),
                        ("vp", dst[1]),
                    ],
                )?;
                let mut ops = vec![
                    ("q", &qr),
                    ("k", kp),
                    ("v", vp),
                    ("table", &ps.table),
                    ("seqs", &ps.seqs),
                    ("tiles", &ps.tiles),
                    ("o", &a),
                ];
                if let Some((tk, tv, info)) = kivi {
                    ops.extend([("tk", tk), ("tv", tv), ("kivi", info)]);
                }
                step.run(&AttnPaged { window, ..ps.attn }, &ops)?;
            } else {
                match (&ems_scratch, attn_units) {
                    (Some((scores, probs)), _) => {
                        attention(&mut step, &attn, &qr, k_cache, v_cache, scores, probs, &a)?;
                    }
                    (None, Some((hq, _))) => {
                        step.run(
                            &attn.fused_q8(),
                            &[("q", &qr), ("k", k_cache), ("v", v_cache), ("oq", hq)],
                        )?;
                        wo_in = Input::Q8(hq, t);
                    }
                    (None, None) => step.run(
                        &attn.fused(),
                        &[("q", &qr), ("k", k_cache), ("v", v_cache), ("o", &a)],
                    )?,
                }
            }
            // EMS: the step's attention added to the slots' scores, then the cache brought back to its
            // budget when the step left more.
            if let (LayerCache::Ems { k, v, state }, Some(e), Some((_, probs))) =
                (&layer.cache, &self.ems, &ems_scratch)
            {
                let score = KvEmsScore {
                    layout: *e,
                    cache_pos,
                    tokens: t,
                };
                step.run(&score, &[("probs", probs), ("state", state)])?;
                if cache_len > e.budget {
                    let compact = KvEmsCompact {
                        layout: *e,
                        n: cache_len,
                    };
                    step.run(&compact, &[("k", k), ("v", v), ("state", state)])?;
                }
            }
            let packed = match &layer.cache {
                LayerCache::Packed(store) => Some(store),
                LayerCache::LowRank { ring, .. } => Some(ring),
                LayerCache::F32 { .. } | LayerCache::Ems { .. } | LayerCache::Paged { .. } => None,
            };
            if let (Some(store), Some(layout)) = (packed, &self.kv_layout) {
                let store_step = KvStore::after_step(*layout, self.compressed, pos0, kv_len);
                step.run(
                    &store_step,
                    &[("k", k_cache), ("v", v_cache), ("store", store)],
                )?;
                if layout.gear() && store_step.upto > self.compressed {
                    let blocks = KvGear {
                        layout: *layout,
                        compressed: self.compressed,
                        upto: store_step.upto,
                    };
                    step.run(&blocks, &[("k", k_cache), ("v", v_cache), ("store", store)])?;
                }
            }
            keep(&mut step, 1, &a)?;
            let (h2_out, mut gate_up_in) =
                match units.as_ref().filter(|_| layer.gate_up.takes_q8(&step, t)) {
                    Some((hq, _)) => (NormOut::Q8(hq), Input::Q8(hq, t)),
                    None => (NormOut::F32(&h2), Input::F32(&h2)),
                };
            let split_ffn = match (wo_in, &norm_units) {
                (Input::Q8(aq, _), Some((nq, ss))) if layer.gate_up.scales(&step, eps) => {
                    residual_q8(&step, &layer.wo).map(|unit| (unit, aq, nq, ss))
                }
                _ => None,
            };
            if let Some((unit, aq, nq, ss)) = split_ffn {
                let ops = [
                    ("x", aq),
                    ("res", &x),
                    ("nw", &layer.ffn_norm),
                    ("s", &x_mid),
                    ("nq", nq),
                    ("ss", ss),
                ];
                matmul_weights_fused(&mut step, &layer.wo, &unit, &ops)?;
                gate_up_in = Input::Scaled(nq, ss, eps);
            } else {
                project(&mut step, &layer.wo, wo_in, &o)?;
                let o_res = match (&layer.post_norms, &post) {
                    (Some([attn_post, _]), Some((o2, _))) => {
                        rmsnorm(&mut step, &o, attn_post, NormOut::F32(o2), c.rms_eps)?;
                        o2
                    }
                    _ => &o,
                };
                rmsnorm_add(
                    &mut step,
                    [&x, o_res, &layer.ffn_norm],
                    h2_out,
                    &x_mid,
                    c.rms_eps,
                )?;
            }
            keep(&mut step, 2, &h2)?;
            // The down product's 8-bit input units, where it takes them.
            let down_units = units
                .as_ref()
                .filter(|_| takes_q8(&step, &layer.w_down, t))
                .map(|(_, gq)| gq);
            // For one row on CPU adapters the SwiGLU gate runs in the stacked gate/up product's epilogue
            // (swiglu_q8), which writes the down product's units: silu_mul's launch folded in, the same
            // units bit for bit.
            let gate = match c.gemma {
                Some(_) => Gate::Gelu,
                None => Gate::Silu,
            };
            // The SwiGLU epilogue of the stacked product computes SiLU: GeGLU takes the separate gate.
            let glu = match (&layer.gate_up, down_units, gate_up_in) {
                _ if gate != Gate::Silu => None,
                (Projection::Stacked(w), Some(gq), Input::Q8(xq, 1)) => {
                    swiglu_q8(&step, w, None).map(|unit| (unit, w, gq, xq, None))
                }
                (Projection::Stacked(w), Some(gq), Input::Scaled(nq, ss, eps)) => {
                    swiglu_q8(&step, w, Some(eps)).map(|unit| (unit, w, gq, nq, Some(ss)))
                }
                _ => None,
            };
            if let Some((unit, w, gq, xq, ss)) = glu {
                let mut ops = vec![("x", xq), ("nq", gq)];
                ops.extend(ss.map(|ss| ("ss_in", ss)));
                matmul_weights_fused(&mut step, w, &unit, &ops)?;
            } else {
                let gu = layer
                    .gate_up
                    .apply(ctx, &mut step, gate_up_in, &mut gate_up_out)?;
                // The halves of one fused gate/up output bind the same tensor as a and b.
                let halves = gu[0].0.shares_buffer(&gu[1].0);
                let (unit, ga, gb) = if halves {
                    (SiluMul::halves(c.n_ff, t), &gu[0].0, &gu[0].0)
                } else {
                    (SiluMul::dense(c.n_ff, t), &gu[0].0, &gu[1].0)
                };
                let unit = unit.with_gate(gate);
                if let Some(gq) = down_units {
                    step.run(&SiluMulQ8(unit), &[("a", ga), ("b", gb), ("q", gq)])?;
                } else {
                    step.run(&unit, &[("a", ga), ("b", gb), ("y", &gated)])?;
                    keep(&mut step, 3, &gated)?;
                }
            }
            // The next norm: the next layer's, or the output norm before the head.
            let (next_norm, next_scales) = match self.layers.get(i + 1) {
                Some(next) => (&next.attn_norm, qkv_scales(&step, next)),
                None => (
                    &self.output_norm,
                    norm_units.is_some() && scaled_q8(&step, &self.output, eps).is_some(),
                ),
            };
            norm_ready = false;
            match down_units {
                Some(gq) => {
                    let split = norm_units
                        .as_ref()
                        .filter(|_| next_scales)
                        .and_then(|nu| Some((residual_q8(&step, &layer.w_down)?, nu)));
                    if let Some((unit, (nq, ss))) = split {
                        let ops = [
                            ("x", gq),
                            ("res", &x_mid),
                            ("nw", next_norm),
                            ("s", &x),
                            ("nq", nq),
                            ("ss", ss),
                        ];
                        matmul_weights_fused(&mut step, &layer.w_down, &unit, &ops)?;
                        norm_ready = true;
                    } else {
                        matmul_weights_q8(&mut step, &layer.w_down, gq, t, &d)?;
                    }
                }
                None => matmul_weights(&mut step, &layer.w_down, &gated, &d)?,
            }
            if let (Some([_, ffn_post]), Some((_, d2))) = (&layer.post_norms, &post) {
                rmsnorm(&mut step, &d, ffn_post, NormOut::F32(d2), c.rms_eps)?;
            }
        }
        // The last residual add goes with the output norm, over every row (cheap); the head then reads only
        // the rows whose logits are wanted. After a split norm's first half the head reads its units.
        let logits = match (norm_ready, &norm_units) {
            (true, Some((nq, ss))) => {
                let logits = f32t(&[1, c.vocab])?;
                project(&mut step, &self.output, Input::Scaled(nq, ss, eps), &logits)?;
                vec![logits]
            }
            _ => self.head(ctx, &mut step, [&x_mid, d_res, &x], logits_of)?,
        };
        let report = step.submit()?;
        self.last_launches = report.launches;
        self.launch_times.extend(report.times.unwrap_or_default());
        if paged.is_none() {
            self.pos = kv_len;
            self.slots = self.ems.map_or(kv_len, |e| cache_len.min(e.budget));
            if let Some(layout) = &self.kv_layout {
                self.compressed = layout.compressible(self.compressed, kv_len);
            }
        }
        let mut out: Vec<f32> = Vec::new();
        for block in &logits {
            out.extend(ctx.read::<f32>(block)?);
        }
        // Gemma's final soft-capping, on the host where the logits arrive: a tanh per logit beside a
        // vocabulary-wide product is no cost worth a launch.
        if let Some(cap) = c
            .gemma
            .as_ref()
            .map(|g| g.final_softcap)
            .filter(|&c| c > 0.0)
        {
            for v in &mut out {
                *v = cap * (*v / cap).tanh();
            }
        }
        // A cheap guard on the row generation samples from: broken weights or a device fault show up as
        // NaN or infinite logits, which are reported rather than sampled.
        let last = &out[out.len() - c.vocab..];
        let bad = last.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(LlmError::NonFinite(format!(
                "{bad} of the {} logits at position {} are NaN or infinite",
                c.vocab,
                kv_len - 1
            )));
        }
        Ok(out)
    }
}

/// A perplexity measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood) over every scored token.
    pub ppl: f64,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored.
    pub scored: usize,
    /// The running estimate after each chunk, as llama-perplexity prints it.
    pub running: Vec<f64>,
}

impl Llama {
    /// Perplexity with llama.cpp's `llama-perplexity` convention: the text's tokens in non-overlapping
    /// chunks of `n_ctx`, each run from an empty cache (with `bos` replacing the first token when the model
    /// adds one), and only the second half of each chunk scored: logits at position j predict token j + 1
    /// for j from n_ctx / 2 to n_ctx - 2.
    pub fn perplexity(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        n_ctx: usize,
        max_chunks: Option<usize>,
        bos: Option<u32>,
    ) -> Result<Perplexity, LlmError> {
        self.perplexity_streaming(ctx, tokens, n_ctx, max_chunks, bos, n_ctx, |_, _, _| Ok(()))
    }

    /// [`Llama::perplexity`] with each chunk run through the cache `step` tokens at a time, and
    /// `between(model, ctx, cached)` called after every step but a chunk's last, with the positions the
    /// cache then holds: the streaming protocol a compressed KV cache is measured with (a single pass over
    /// a chunk would never read a compressed past). The cache modes need no hook: each compresses inside
    /// the step that makes positions old enough; the hook is for callers that act between steps. With
    /// `step = n_ctx` it is [`Llama::perplexity`].
    #[allow(
        clippy::too_many_arguments,
        reason = "perplexity's arguments plus the streaming step and its hook"
    )]
    pub fn perplexity_streaming(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        n_ctx: usize,
        max_chunks: Option<usize>,
        bos: Option<u32>,
        step: usize,
        between: impl FnMut(&mut Llama, &Context, usize) -> Result<(), LlmError>,
    ) -> Result<Perplexity, LlmError> {
        if n_ctx < 4 || n_ctx > self.max_context {
            return Err(LlmError::Request(format!(
                "context {n_ctx} must be between 4 and the cache's {}",
                self.max_context
            )));
        }
        let mut chunks = tokens.len() / n_ctx;
        if let Some(m) = max_chunks {
            chunks = chunks.min(m);
        }
        if chunks == 0 {
            return Err(LlmError::Request(format!(
                "{} tokens do not fill one chunk of {n_ctx}",
                tokens.len()
            )));
        }
        let (mut nll, mut count) = (0.0f64, 0usize);
        let mut running = Vec::with_capacity(chunks);
        let visit = |chunk: usize, row: &[f32], target: usize| {
            if chunk == running.len() + 1 {
                running.push((nll / count as f64).exp());
            }
            let max = row.iter().fold(f32::MIN, |m, &v| m.max(v));
            let z: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
            nll -= f64::from(row[target] - max) - z.ln();
            count += 1;
        };
        self.for_each_scored_streaming(ctx, tokens, n_ctx, chunks, bos, step, between, visit)?;
        running.push((nll / count as f64).exp());
        Ok(Perplexity {
            ppl: (nll / count as f64).exp(),
            chunks,
            scored: count,
            running,
        })
    }

    /// Runs the first `chunks` chunks of `n_ctx` tokens as [`Llama::perplexity`] does and calls
    /// `visit(chunk, logits, target)` for every scored position: the logits at position j and the token
    /// j + 1 they predict, for j from n_ctx / 2 to n_ctx - 2.
    pub fn for_each_scored(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        n_ctx: usize,
        chunks: usize,
        bos: Option<u32>,
        visit: impl FnMut(usize, &[f32], usize),
    ) -> Result<(), LlmError> {
        self.for_each_scored_in_steps(ctx, tokens, n_ctx, chunks, bos, n_ctx, visit)
    }

    /// [`Llama::for_each_scored`] with each chunk run `step` tokens at a time (the streaming protocol,
    /// with no hook between steps).
    #[allow(
        clippy::too_many_arguments,
        reason = "for_each_scored's arguments plus the streaming step"
    )]
    pub fn for_each_scored_in_steps(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        n_ctx: usize,
        chunks: usize,
        bos: Option<u32>,
        step: usize,
        visit: impl FnMut(usize, &[f32], usize),
    ) -> Result<(), LlmError> {
        let no_hook = |_: &mut Llama, _: &Context, _: usize| Ok(());
        self.for_each_scored_streaming(ctx, tokens, n_ctx, chunks, bos, step, no_hook, visit)
    }

    /// [`Llama::for_each_scored`] with each chunk run `step` tokens at a time and `between` called after
    /// every step but a chunk's last (see [`Llama::perplexity_streaming`]). A paged cache runs each chunk
    /// as one sequence through [`Llama::forward_paged`] (blocks in order, tail 0), so that the paged
    /// modes are scored by the same protocol as the contiguous ones.
    #[allow(
        clippy::too_many_arguments,
        reason = "for_each_scored's arguments plus the streaming step and its hook"
    )]
    pub fn for_each_scored_streaming(
        &mut self,
        ctx: &Context,
        tokens: &[u32],
        n_ctx: usize,
        chunks: usize,
        bos: Option<u32>,
        step: usize,
        mut between: impl FnMut(&mut Llama, &Context, usize) -> Result<(), LlmError>,
        mut visit: impl FnMut(usize, &[f32], usize),
    ) -> Result<(), LlmError> {
        let vocab = self.cfg.vocab;
        if tokens.len() < chunks * n_ctx || n_ctx < 4 || n_ctx > self.max_context {
            return Err(LlmError::Request(format!(
                "{chunks} chunks of {n_ctx} tokens need {} tokens and a cache of {n_ctx}",
                chunks * n_ctx
            )));
        }
        if step == 0 {
            return Err(LlmError::Request("a streaming step of 0 tokens".into()));
        }
        for i in 0..chunks {
            let mut batch = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                batch[0] = b;
            }
            self.reset();
            let mut at = 0;
            while at < n_ctx {
                let end = (at + step).min(n_ctx);
                // Only steps that reach the scored second half need their logits read back.
                let scored = end > n_ctx / 2;
                let logits = match self.paged {
                    Some(_) => {
                        let rows = if scored { end - at } else { 0 };
                        self.forward_paged_alone(ctx, &batch[at..end], at, rows)?
                    }
                    None => self.forward(ctx, &batch[at..end], scored)?,
                };
                if scored {
                    for j in (n_ctx / 2).max(at)..end.min(n_ctx - 1) {
                        visit(
                            i,
                            &logits[(j - at) * vocab..][..vocab],
                            tokens[i * n_ctx + j + 1] as usize,
                        );
                    }
                }
                at = end;
                if at < n_ctx {
                    between(self, ctx, at)?;
                }
            }
        }
        self.reset();
        Ok(())
    }
}

/// A cancellation flag shared between a generation and whoever may stop it (another thread, a UI).
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks the generation to stop before its next token.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Tokens generated one at a time: an iterator, so a caller can stream, stop early or cancel. Created by
/// [`Llama::generate`]; it ends at a stop token, after `max_tokens`, or when cancelled.
pub struct Generation<'a> {
    model: &'a mut Llama,
    ctx: &'a Context,
    sampler: crate::Sampler,
    stop: Vec<u32>,
    seen: Vec<u32>,
    logits: Option<Vec<f32>>,
    left: usize,
    cancel: Cancel,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("seen", &self.seen.len())
            .field("left", &self.left)
            .finish()
    }
}

impl Llama {
    /// Starts generating after `prompt` (run now, as one prefill step) from an empty cache.
    pub fn generate<'a>(
        &'a mut self,
        ctx: &'a Context,
        prompt: &[u32],
        sampler: crate::Sampler,
        stop: &[u32],
        max_tokens: usize,
        cancel: Cancel,
    ) -> Result<Generation<'a>, LlmError> {
        self.reset();
        let logits = self.forward(ctx, prompt, false)?;
        Ok(Generation {
            model: self,
            ctx,
            sampler,
            stop: stop.to_vec(),
            seen: prompt.to_vec(),
            logits: Some(logits),
            left: max_tokens,
            cancel,
        })
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<u32, LlmError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.cancel.is_cancelled() {
            return None;
        }
        let logits = self.logits.take()?;
        let next = match self.sampler.sample(&logits, &self.seen) {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        if self.stop.contains(&next) {
            return None;
        }
        self.left -= 1;
        self.seen.push(next);
        if self.left > 0 {
            match self.model.forward(self.ctx, &[next], false) {
                Ok(l) => self.logits = Some(l),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(next))
    }
}

/// Checks a generation request before any work: a prompt with tokens, and prompt plus `max_tokens`
/// within the cache's `max_context` positions (the embedding APIs' shared rule; the message names the
/// numbers).
pub fn check_generation(
    prompt_len: usize,
    max_tokens: usize,
    max_context: usize,
) -> Result<(), LlmError> {
    if prompt_len == 0 {
        return Err(LlmError::Request("the prompt has no tokens".into()));
    }
    if prompt_len + max_tokens > max_context {
        return Err(LlmError::Request(format!(
            "the prompt's {prompt_len} tokens and max_tokens {max_tokens} exceed the context of {max_context} positions"
        )));
    }
    Ok(())
}

/// Refuses a context whose KV cache would exceed `budget` bytes, naming the numbers, before anything is
/// allocated (a 170,000-position context of a 30-layer model is 7.5 GiB, in buffers each under the binding
/// limit, and used to abort on the device allocation).
pub fn check_kv_budget(
    cfg: &LlamaConfig,
    max_context: usize,
    mode: KvMode,
    budget: u64,
) -> Result<(), LlmError> {
    let kv = cfg.n_kv_heads * cfg.head_dim;
    let f32_cache = (max_context as u128) * (kv as u128) * 4 * 2;
    // A packed mode keeps one buffer per layer and one f32 working cache for all of them.
    let (mut per_layer, mut shared) = match mode.layout(cfg, max_context)? {
        None => (f32_cache, 0),
        Some(l) => (4 * l.words() as u128, f32_cache),
    };
    if let Some(f) = mode.feature_layout(cfg, max_context) {
        // The features' store, and the shared f32 features and rebuilt keys.
        per_layer += 4 * f.words() as u128;
        shared += (max_context as u128) * (2 * f.kv as u128 + kv as u128) * 4;
    }
    if let Some(e) = mode.ems_layout(cfg, max_context)? {
        // EMS allocates the f32 cache for the whole context (one step may fill it) and the slots' state.
        per_layer += 4 * e.state_words() as u128;
    }
    let cache_bytes = per_layer * (cfg.n_layers as u128) + shared;
    if cache_bytes > u128::from(budget) {
        return Err(LlmError::Request(format!(
            "a context of {max_context} positions needs {} of {mode} KV cache ({} layers of {max_context} x {kv} keys and values), above the {} budget; ask for a shorter context or raise WRING_KV_BUDGET_MIB",
            wring_runtime::human_bytes(u64::try_from(cache_bytes).unwrap_or(u64::MAX)),
            cfg.n_layers,
            wring_runtime::human_bytes(budget)
        )));
    }
    Ok(())
}

/// What a paged cache in `mode` keeps per position, or why `mode` has no paged form.
fn paged_pool(mode: KvMode) -> Result<Pool, LlmError> {
    match mode {
        KvMode::F32 => Ok(Pool::F32),
        KvMode::F16 => Ok(Pool::F16),
        KvMode::Kivi { bits: 8, .. } => Ok(Pool::Q8),
        KvMode::Kivi { bits: 4, .. } => Ok(Pool::Q4),
        KvMode::Kivi { bits: 2, .. } => Ok(Pool::Q2),
        other => Err(LlmError::Request(format!(
            "KV cache mode {other} has no paged form: batching (--parallel) pages f32, f16, q8, q4 and q2 caches (and their rotated forms)"
        ))),
    }
}

/// The glue shape of `cfg`'s q/k/v (for one token; the extras do not depend on the step).
pub(crate) fn qkv_glue(cfg: &LlamaConfig, tokens: usize, cache_pos: usize) -> RopeQkv {
    let dense = |w| Strided {
        stride: w,
        offset: 0,
    };
    RopeQkv {
        rope: Rope {
            mode: cfg.rope_mode,
            tokens,
            n_heads: cfg.n_heads,
            head_dim: cfg.head_dim,
            n_dims: cfg.rope_dims,
            freq_base: cfg.rope_base,
            freq_scale: cfg.rope_scale,
        },
        n_kv_heads: cfg.n_kv_heads,
        cache_pos,
        q: dense(cfg.q_dim()),
        k: dense(cfg.kv_dim()),
        v: dense(cfg.kv_dim()),
        extras: cfg.rope_extended().then_some(QkvExtras {
            qk_norm: cfg.parts.qk_norm,
            norm_eps: cfg.rms_eps,
            mscale: cfg.rope_attn_factor,
        }),
    }
}

/// Layer `l`'s rope_qkv `extra` vector (biases, q/k norms, RoPE factors), where the family has extras.
fn layer_extra(
    ctx: &Context,
    src: &dyn WeightSource,
    cfg: &LlamaConfig,
    l: usize,
    factors: &[f32],
) -> Result<Option<Tensor>, LlmError> {
    if !cfg.rope_extended() {
        return Ok(None);
    }
    let get = |s: &str| -> Result<Vec<f32>, LlmError> {
        Ok(src.values(&format!("blk.{l}.{s}"))?.unwrap_or_default())
    };
    // A fused bias splits into the three parts; a missing part is zeros.
    let (bq, bk, bv) = match get("attn_qkv.bias")? {
        fused if !fused.is_empty() => {
            let (qd, kv) = (cfg.q_dim(), cfg.kv_dim());
            (
                fused[..qd].to_vec(),
                fused[qd..qd + kv].to_vec(),
                fused[qd + kv..].to_vec(),
            )
        }
        _ => (
            get("attn_q.bias")?,
            get("attn_k.bias")?,
            get("attn_v.bias")?,
        ),
    };
    let (nq, nk) = match cfg.parts.qk_norm {
        true => (get("attn_q_norm.weight")?, get("attn_k_norm.weight")?),
        false => (Vec::new(), Vec::new()),
    };
    let extra = qkv_glue(cfg, 1, 0)
        .extra_vector([&bq, &bk, &bv], [&nq, &nk], factors)
        .map_err(|e| LlmError::Unsupported(e.to_string()))?;
    Ok(Some(ctx.upload(&[extra.len()], &extra)?))
}

/// The low-rank cache rebuilds keys from features and rotates them with llama's plain RoPE: a family whose
/// keys take biases, norms or frequency factors is refused rather than rebuilt wrong.
pub(crate) fn lowrank_fits(cfg: &LlamaConfig) -> Result<(), LlmError> {
    if cfg.rope_extended() || cfg.gemma.is_some() {
        return Err(LlmError::Unsupported(format!(
            "the low-rank KV cache rebuilds keys with llama's plain RoPE and attends without soft-caps or windows; this {} model's keys take biases, q/k norms or RoPE factors, or its attention is Gemma's",
            cfg.architecture
        )));
    }
    Ok(())
}

fn low_rank_needs_factors(mode: KvMode) -> LlmError {
    LlmError::Request(format!(
        "KV cache mode {mode} needs its factors: load with another mode, then Llama::set_kv_lowrank with a file from wring kv-calibrate (--kv-factors)"
    ))
}

/// The f32 working cache of a packed mode: keys and values of every position, shared by all layers.
fn working_cache(
    ctx: &Context,
    layout: Option<&KvLayout>,
    values: usize,
) -> Result<Option<[Tensor; 2]>, LlmError> {
    Ok(match layout {
        None => None,
        Some(_) => Some([
            ctx.empty(&[values], DType::F32)?,
            ctx.empty(&[values], DType::F32)?,
        ]),
    })
}

/// The most bytes a model's KV cache may take: `WRING_KV_BUDGET_MIB`, or 4 GiB.
pub fn kv_budget() -> u64 {
    std::env::var("WRING_KV_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(4 << 30, |mib| mib.saturating_mul(1 << 20))
}
