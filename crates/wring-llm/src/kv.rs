//! The KV cache's representation, chosen at run time (`--kv-cache MODE`): f32 (the exact cache the
//! attention kernels read directly), f16, or KIVI-style codes at 8, 4 or 2 bits with an optional Hadamard
//! rotation of queries and keys. Every mode but f32 keeps one packed buffer per layer (the
//! `wring-kernels-kv` layout) and decompresses it into one f32 working cache shared by all layers before
//! each layer's attention; how that compares with reading the codes inside attention is measured by
//! `cargo xtask bench kv`.

use wring_runtime::kernels::kv::KvLayout;

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
    Kivi { bits: u32, rotate: bool },
}

/// The modes `KvMode::from_str` accepts, for error messages and help texts.
pub const MODES: &str = "f32, f16, q8, q4, q2 (KIVI codes), q8h, q4h, q2h (the same after a Hadamard rotation of queries and keys)";

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
            KvMode::F16 => KvLayout {
                bits: 16,
                kv,
                value_group: cfg.head_dim,
                capacity,
                group: 1,
                window: 0,
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
                }
            }
        };
        layout
            .check("kv cache")
            .map_err(|e| LlmError::Request(format!("KV cache mode {self}: {e}")))?;
        Ok(Some(layout))
    }

    /// Whether queries and keys are rotated.
    pub fn rotates(&self) -> bool {
        matches!(self, KvMode::Kivi { rotate: true, .. })
    }

    /// Bytes per cached token over every layer, keys and values, every code and statistic counted (f16:
    /// 23,040 for SmolLM2-135M). The f16 window of a KIVI cache is not in it: it is a fixed
    /// `(WINDOW + KEY_GROUP)` positions at f16 cost, whatever the context ([`Llama::kv_bytes`] counts it).
    ///
    /// [`Llama::kv_bytes`]: crate::Llama::kv_bytes
    pub fn bytes_per_token(&self, cfg: &LlamaConfig) -> f64 {
        let per_layer = match self.layout(cfg, 1) {
            Ok(Some(l)) => l.bytes_per_position(),
            _ => 8.0 * (cfg.n_kv_heads * cfg.head_dim) as f64,
        };
        per_layer * cfg.n_layers as f64
    }
}
