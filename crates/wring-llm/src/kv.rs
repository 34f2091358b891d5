//! The KV cache's representation, chosen at run time (`--kv-cache MODE`): f32 (the exact cache the
//! attention kernels read directly), f16, or KIVI-style codes at 8, 4 or 2 bits with an optional Hadamard
//! rotation of queries and keys. Every mode but f32 keeps one packed buffer per layer (the
//! `wring-kernels-kv` layout) and decompresses it into one f32 working cache shared by all layers before
//! each layer's attention; how that compares with reading the codes inside attention is measured by
//! `cargo xtask bench kv`.

use wring_runtime::kernels::kv::{EmsLayout, KvLayout};

use crate::{LlamaConfig, LlmError};

/// Tokens per key statistics group, and the granularity positions are compressed in (KIVI's G = 32).
pub const KEY_GROUP: usize = 32;

/// Recent positions kept in f16 before they are compressed (KIVI's residual, CSKV's window).
pub const WINDOW: usize = 32;

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvMode {
    /// f32, read by attention directly: the exact cache.
    #[default]
    F32,
    /// f16.
    F16,
    /// KIVI: keys per channel over groups of [`KEY_GROUP`] tokens, values per token over a head, at
    /// `bits` (8, 4 or 2), the last [`WINDOW`] positions in f16; `rotate` applies the orthonormal
    /// Hadamard rotation to queries and keys first.
    Kivi {
        /// Code width: 8, 4 or 2.
        bits: u32,
        /// Rotate queries and keys by the Hadamard transform first.
        rotate: bool,
    },
    /// CSKV: R features per position for keys and for values (f16), from factors made by
    /// `wring kv-calibrate` ([`crate::Llama::set_kv_lowrank`]); keys rebuilt and then rotated by RoPE at
    /// attention time, values rebuilt; the last [`WINDOW`] positions kept as f16 keys and values.
    LowRank {
        /// Features per position (R).
        rank: usize,
    },
    /// GEAR: blocks of [`GEAR_GROUP`] positions x one head kept as Q + L + S: KIVI codes at `bits` (2 or
    /// 4), with `sparse` the [`GEAR_SPARSITY`] most extreme entries kept exactly (f16 value and index), and
    /// a rank-`rank` correction of the quantization error from a power iteration (0: none); the newest
    /// positions stay in an f16 buffer of [`GEAR_GROUP`] until it is full (GEAR's streaming buffer).
    Gear {
        /// Code width: 2 or 4.
        bits: u32,
        /// Keep the most extreme entries exactly.
        sparse: bool,
        /// Rank of the error correction (0: none).
        rank: usize,
    },
    /// EMS: an f32 cache of at most `budget` slots per key/value head; when a step leaves more, the last
    /// [`EMS_WINDOW`] are kept, the best scored older ones kept as centers, the next tier merged into
    /// them and the rest evicted (`wring_kernels_kv::ems`).
    Ems {
        /// Slots per key/value head after a compaction.
        budget: usize,
    },
}

/// The recent slots an EMS compaction keeps as they are (the local observation window's size).
pub const EMS_WINDOW: usize = 32;

/// GEAR's block of positions and its streaming buffer (the recipe's group size and `streaming_gap`, 64).
pub const GEAR_GROUP: usize = 64;

/// GEAR's outlier share (the recipe's `left = 0.02`): half the largest, half the smallest entries.
pub const GEAR_SPARSITY: f64 = 0.02;

/// GEAR's rank per block (the recipe's per-chunk rank 2).
pub const GEAR_RANK: usize = 2;

/// The modes `KvMode::from_str` accepts, for error messages and help texts.
pub const MODES: &str = "f32, f16, q8, q4, q2 (KIVI codes), q8h, q4h, q2h (the same after a Hadamard rotation of queries and keys), lowrank:R (R features per position, with factors from wring kv-calibrate), gear (GEAR at 2 bits: codes + 2% outliers + rank-2 error), gear:B[:PARTS] (B = 2 or 4 bits; PARTS = q, qs, ql or qls: codes with outliers S and/or low rank L), ems:B (evict-then-merge to B slots per head, B above 32)";

impl std::str::FromStr for KvMode {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<KvMode, LlmError> {
        let kivi = |bits, rotate| KvMode::Kivi { bits, rotate };
        Ok(match s {
            "f32" => KvMode::F32,
            "f16" => KvMode::F16,
            "q8" => kivi(8, false),
            "q4" => kivi(4, false),
            "q2" => kivi(2, false),
            "q8h" => kivi(8, true),
            "q4h" => kivi(4, true),
            "q2h" => kivi(2, true),
            _ if s.starts_with("lowrank:") => {
                let rank = s["lowrank:".len()..].parse::<usize>().map_err(|_| {
                    LlmError::Request(format!("KV cache mode {s:?}: the rank must be a number"))
                })?;
                if rank == 0 || !rank.is_multiple_of(4) {
                    return Err(LlmError::Request(format!(
                        "KV cache mode {s:?}: the rank must be a positive multiple of 4"
                    )));
                }
                KvMode::LowRank { rank }
            }
            "gear" => KvMode::Gear {
                bits: 2,
                sparse: true,
                rank: GEAR_RANK,
            },
            _ if s.starts_with("ems:") => {
                let budget = s["ems:".len()..].parse::<usize>().map_err(|_| {
                    LlmError::Request(format!("KV cache mode {s:?}: the budget must be a number"))
                })?;
                if budget <= EMS_WINDOW || budget > wring_runtime::kernels::kv::ems::MAX_SLOTS {
                    return Err(LlmError::Request(format!(
                        "KV cache mode {s:?}: a budget of {budget} slots per head must be above the window of {EMS_WINDOW} and at most {}",
                        wring_runtime::kernels::kv::ems::MAX_SLOTS
                    )));
                }
                KvMode::Ems { budget }
            }
            _ if s.starts_with("gear:") => {
                let mut parts = s["gear:".len()..].split(':');
                let bits = match parts.next() {
                    Some("2") => 2,
                    Some("4") => 4,
                    _ => {
                        return Err(LlmError::Request(format!(
                            "KV cache mode {s:?}: GEAR keeps 2 or 4 bits (gear:2, gear:4)"
                        )));
                    }
                };
                let (sparse, rank) = match parts.next() {
                    None | Some("qls") => (true, GEAR_RANK),
                    Some("q") => (false, 0),
                    Some("qs") => (true, 0),
                    Some("ql") => (false, GEAR_RANK),
                    Some(p) => {
                        return Err(LlmError::Request(format!(
                            "KV cache mode {s:?}: GEAR parts {p:?} are not q, qs, ql or qls"
                        )));
                    }
                };
                if parts.next().is_some() {
                    return Err(LlmError::Request(format!(
                        "KV cache mode {s:?}: expected gear:BITS[:PARTS]"
                    )));
                }
                KvMode::Gear { bits, sparse, rank }
            }
            _ => {
                return Err(LlmError::Request(format!(
                    "unknown KV cache mode {s:?}: choose {MODES}"
                )));
            }
        })
    }
}

impl std::fmt::Display for KvMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvMode::F32 => f.write_str("f32"),
            KvMode::F16 => f.write_str("f16"),
            KvMode::Kivi { bits, rotate } => {
                write!(f, "q{bits}{}", if *rotate { "h" } else { "" })
            }
            KvMode::LowRank { rank } => write!(f, "lowrank:{rank}"),
            KvMode::Gear { bits, sparse, rank } => {
                let parts = match (sparse, *rank > 0) {
                    (true, true) => "",
                    (false, false) => ":q",
                    (true, false) => ":qs",
                    (false, true) => ":ql",
                };
                write!(f, "gear:{bits}{parts}")
            }
            KvMode::Ems { budget } => write!(f, "ems:{budget}"),
        }
    }
}

impl KvMode {
    /// The packed layout of one layer's cache of `capacity` positions (None for f32), checked against the
    /// model before anything is allocated.
    pub fn layout(&self, cfg: &LlamaConfig, capacity: usize) -> Result<Option<KvLayout>, LlmError> {
        let kv = cfg.n_kv_heads * cfg.head_dim;
        let layout = match *self {
            KvMode::F32 => return Ok(None),
            KvMode::Ems { .. } => {
                self.ems_layout(cfg, capacity)?;
                return Ok(None);
            }
            KvMode::F16 => KvLayout {
                bits: 16,
                kv,
                value_group: cfg.head_dim,
                capacity,
                group: 1,
                window: capacity,
                outliers: 0,
                rank: 0,
            },
            KvMode::Kivi { bits, rotate } => {
                if rotate && !(cfg.head_dim.is_power_of_two() && cfg.head_dim <= 256) {
                    return Err(LlmError::Request(format!(
                        "KV cache mode {self}: the Hadamard rotation needs a power-of-two head dimension up to 256, and this model's is {}",
                        cfg.head_dim
                    )));
                }
                KvLayout {
                    bits,
                    kv,
                    value_group: cfg.head_dim,
                    capacity,
                    group: KEY_GROUP,
                    window: WINDOW,
                    outliers: 0,
                    rank: 0,
                }
            }
            // The ring of recent f16 keys and values; older positions are rebuilt from features.
            KvMode::LowRank { rank } => {
                if rank > kv {
                    return Err(LlmError::Request(format!(
                        "KV cache mode {self}: rank {rank} is above the key/value dimension, {} heads x {} = {kv}",
                        cfg.n_kv_heads, cfg.head_dim
                    )));
                }
                KvLayout {
                    bits: 16,
                    kv,
                    value_group: cfg.head_dim,
                    capacity,
                    group: KEY_GROUP,
                    window: WINDOW,
                    outliers: 0,
                    rank: 0,
                }
            }
            // Blocks of GEAR_GROUP tokens x one head; no window beyond the buffer of one block.
            KvMode::Gear { bits, sparse, rank } => {
                let block = (GEAR_GROUP * cfg.head_dim) as f64;
                KvLayout {
                    bits,
                    kv,
                    value_group: cfg.head_dim,
                    capacity,
                    group: GEAR_GROUP,
                    window: 0,
                    outliers: if sparse {
                        (GEAR_SPARSITY / 2.0 * block).round() as usize
                    } else {
                        0
                    },
                    rank,
                }
            }
        };
        layout
            .check("kv cache")
            .map_err(|e| LlmError::Request(format!("KV cache mode {self}: {e}")))?;
        Ok(Some(layout))
    }

    /// An EMS cache's layout for `capacity` slots (None for other modes), checked.
    pub fn ems_layout(
        &self,
        cfg: &LlamaConfig,
        capacity: usize,
    ) -> Result<Option<EmsLayout>, LlmError> {
        let KvMode::Ems { budget } = *self else {
            return Ok(None);
        };
        // EMS scores its slots from the three-launch attention, which makes plain scores only.
        if cfg.gemma.is_some() {
            return Err(LlmError::Unsupported(format!(
                "KV cache mode {self} scores slots with the plain three-launch attention; {}'s soft-capped and sliding-window attention runs only in the fused kernels",
                cfg.architecture
            )));
        }
        let l = EmsLayout {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            capacity,
            budget,
            window: EMS_WINDOW,
        };
        l.check("kv cache")
            .map_err(|e| LlmError::Request(format!("KV cache mode {self}: {e}")))?;
        Ok(Some(l))
    }

    /// Whether the mode has a paged form (`Llama::set_paged`): f32, f16, q8, q4 and q2 (rotated or not).
    pub fn paged(&self) -> bool {
        matches!(
            self,
            KvMode::F32
                | KvMode::F16
                | KvMode::Kivi {
                    bits: 8 | 4 | 2,
                    ..
                }
        )
    }

    /// Positions per block of the mode's paged cache: KIVI's group of [`KEY_GROUP`] for the code modes,
    /// whose keys are quantized per channel over a block (smaller blocks spend more on statistics),
    /// vLLM's 16 otherwise.
    pub fn paged_block(&self) -> usize {
        match self {
            KvMode::Kivi { .. } => KEY_GROUP,
            _ => 16,
        }
    }

    /// Whether the mode rotates queries and keys (KIVI's `r` forms).
    pub fn rotates(&self) -> bool {
        matches!(self, KvMode::Kivi { rotate: true, .. })
    }

    /// Bytes per cached token over every layer, keys and values, every code and statistic counted (f16:
    /// 23,040 for SmolLM2-135M). The f16 window of a KIVI cache is not in it: it is a fixed
    /// `(WINDOW + KEY_GROUP)` positions at f16 cost, whatever the context ([`Llama::kv_bytes`] counts it).
    ///
    /// [`Llama::kv_bytes`]: crate::Llama::kv_bytes
    /// For EMS it is the bytes of one kept slot (f32 keys and values and three f32 of state per head):
    /// the cache never holds more than `budget` (plus one step) of them, whatever the context.
    pub fn bytes_per_token(&self, cfg: &LlamaConfig) -> f64 {
        let per_layer = match (self, self.layout(cfg, 1)) {
            (KvMode::LowRank { rank }, _) => 4.0 * *rank as f64,
            (KvMode::Ems { .. }, _) => {
                8.0 * (cfg.n_kv_heads * cfg.head_dim) as f64 + 12.0 * cfg.n_kv_heads as f64
            }
            (_, Ok(Some(l))) => l.bytes_per_position(),
            _ => 8.0 * (cfg.n_kv_heads * cfg.head_dim) as f64,
        };
        per_layer * cfg.n_layers as f64
    }

    /// The f16 store of one layer's low-rank features: `rank` channels for keys and for values, every
    /// position kept (the f16 layout).
    pub fn feature_layout(&self, cfg: &LlamaConfig, capacity: usize) -> Option<KvLayout> {
        match *self {
            KvMode::LowRank { rank } => Some(KvLayout {
                bits: 16,
                kv: rank,
                value_group: cfg.head_dim,
                capacity,
                group: 1,
                window: capacity,
                outliers: 0,
                rank: 0,
            }),
            _ => None,
        }
    }
}

/// `wring kv-calibrate`: low-rank KV factors of rank `rank` for every layer of the GGUF at `base_path`,
/// from the q/k/v projections' inputs on `calib_text` (its first `calib_tokens` tokens, in windows of
/// 256) and `wring_quant::lowrank::factors` chosen by `init` (`Lsq`: the exact layer-wise least-squares
/// optimum). Returns the file's contents and, per layer, the share of the calibration keys' and values'
/// energy the kept subspace holds (under `init`'s weighting).
#[allow(
    clippy::too_many_arguments,
    reason = "the model, its path, the rank and method, the text and its length, and progress"
)]
pub fn calibrate_factors(
    ctx: &wring_runtime::Context,
    g: &wring_gguf::Gguf,
    base_path: &std::path::Path,
    rank: usize,
    init: wring_quant::lowrank::Init,
    calib_text: &str,
    calib_tokens: usize,
    progress: impl FnMut(usize, usize),
) -> Result<(wring_io::kv_factors::KvFactors, Vec<[f64; 2]>), LlmError> {
    use wring_io::kv_factors::{Factor, KvFactors};
    let cfg = LlamaConfig::from_gguf(g)?;
    crate::model::lowrank_fits(&cfg)?;
    let kv = cfg.n_kv_heads * cfg.head_dim;
    // The mode's own checks (a positive multiple of 4, at most the key/value dimension) before any work.
    KvMode::LowRank { rank }.layout(&cfg, 1)?;
    if !rank.is_multiple_of(4) || rank == 0 {
        return Err(LlmError::Request(format!(
            "rank {rank}: a positive multiple of 4"
        )));
    }
    let base =
        wring_io::group_file::Base::of(base_path).map_err(|e| LlmError::Request(e.to_string()))?;
    let tok = crate::GgufTokenizer::from_gguf(g)?;
    let ids = tok.encode(calib_text)?;
    const WINDOW: usize = 256;
    let n = ids.len().min(calib_tokens) / WINDOW * WINDOW;
    if n == 0 {
        return Err(LlmError::Request(format!(
            "the calibration text has {} tokens; at least {WINDOW} are needed",
            ids.len()
        )));
    }
    let mut llama = crate::Llama::load(ctx, g, WINDOW, |_, _| {})?;
    let cal = crate::compress::calibrate(&mut llama, ctx, &ids[..n], WINDOW, progress)?;
    drop(llama);
    let mut layers = Vec::with_capacity(cfg.n_layers);
    let mut kept = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let gram = &cal.layers[l][0].h;
        let mut pair = Vec::with_capacity(2);
        let mut shares = [0.0; 2];
        for (i, part) in ["attn_k", "attn_v"].iter().enumerate() {
            let name = format!("blk.{l}.{part}.weight");
            let info = g
                .tensor(&name)
                .ok_or_else(|| LlmError::Unsupported(format!("no tensor {name}")))?;
            let w = crate::model::tensor_f32(g, info)?;
            let (a, b, share) = wring_quant::lowrank::factors(&w, kv, cfg.n_embd, gram, init, rank);
            shares[i] = share;
            pair.push(Factor { a, b });
        }
        let v = pair.pop().expect("two factors");
        let k = pair.pop().expect("two factors");
        layers.push([k, v]);
        kept.push(shares);
    }
    Ok((
        KvFactors {
            base,
            method: format!("{}; calibration tokens={}", init.name(), cal.tokens),
            rank,
            hidden: cfg.n_embd,
            kv,
            layers,
        },
        kept,
    ))
}

/// Reads a file of low-rank KV factors and checks that it was made from the GGUF at `base_path`.
pub fn open_factors(
    path: &std::path::Path,
    base_path: &std::path::Path,
) -> Result<wring_io::kv_factors::KvFactors, LlmError> {
    let f = wring_io::kv_factors::read(path).map_err(|e| LlmError::Request(e.to_string()))?;
    crate::compress::check_base(path, &f.base, base_path)?;
    Ok(f)
}

/// Loads a model with its KV cache in `mode`: [`crate::Llama::load_with`], or for `lowrank:R` a load
/// followed by [`crate::Llama::set_kv_lowrank`] with `factors` (which must be of rank R). Factors with any
/// other mode are refused rather than ignored.
pub fn load(
    ctx: &wring_runtime::Context,
    src: &dyn crate::WeightSource,
    max_context: usize,
    mode: KvMode,
    factors: Option<&wring_io::kv_factors::KvFactors>,
    progress: impl FnMut(usize, usize),
) -> Result<crate::Llama, LlmError> {
    match (mode, factors) {
        (KvMode::LowRank { rank }, Some(f)) => {
            if f.rank != rank {
                return Err(LlmError::Request(format!(
                    "KV cache mode {mode} with factors of rank {}",
                    f.rank
                )));
            }
            let mut llm = crate::Llama::load_with(ctx, src, max_context, KvMode::F16, progress)?;
            llm.set_kv_lowrank(ctx, f)?;
            Ok(llm)
        }
        (KvMode::LowRank { .. }, None) => Err(LlmError::Request(format!(
            "KV cache mode {mode} needs a file of factors (wring kv-calibrate; --kv-factors)"
        ))),
        (_, Some(_)) => Err(LlmError::Request(format!(
            "KV factors are for lowrank:R caches, not {mode}"
        ))),
        (_, None) => crate::Llama::load_with(ctx, src, max_context, mode, progress),
    }
}
