//! wring's file of low-rank KV factors (`wring kv-calibrate`, read for `--kv-cache lowrank:R`): per layer,
//! the factors that let the KV cache store R features per position instead of the keys and values
//! (CSKV's channel shrinking; `wring_quant::lowrank`). Safetensors, so any reader opens it.
//!
//! Schema (version 1). `__metadata__`, all strings: `format` `wring-kv-lowrank`; `version` `1`; `rank`
//! (decimal); `layers` (decimal); `method` (informational: `lsq`, `asvd` or `svd`, calibration tokens);
//! `base`, `base_bytes`, `base_crc32` as in `group_file` (A holds the base's projection weights, so the
//! factors belong to that base). Tensors, all `F32`: `blk.L.attn_k.a` [R, hidden] (hidden -> features),
//! `blk.L.attn_k.b` [kv, R] (features -> keys before RoPE), and `blk.L.attn_v.a`, `blk.L.attn_v.b` the
//! same for values, for every layer L below `layers`.
//!
//! Reading checks the schema, the rank (at least 1), the layer count (at most 4,096), every tensor's
//! presence, type and shape (each `a` [R, hidden] and `b` [kv, R] with one hidden and one kv across the
//! file) and that every value is finite; tensors are copied only once checked, and their sizes are backed
//! by the file's own bytes. The caller checks hidden, kv and the layer count against its model.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};

use crate::IoError;
use crate::group_file::Base;

/// The `format` value of a factors file's metadata.
pub const FORMAT: &str = "wring-kv-lowrank";
/// The `version` value this reader and writer use.
pub const VERSION: &str = "1";
/// The most layers a file may describe.
pub const MAX_LAYERS: usize = 4096;

/// One projection's factors.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// \[rank\]\[hidden\].
    pub a: Vec<f32>,
    /// \[kv\]\[rank\].
    pub b: Vec<f32>,
}

/// A file's contents.
#[derive(Debug, Clone, PartialEq)]
pub struct KvFactors {
    /// The base model the factors were calibrated on.
    pub base: Base,
    /// How they were chosen (`lsq`, `asvd` or `svd`).
    pub method: String,
    /// Features per position (R).
    pub rank: usize,
    /// The model's embedding width, the factors' input.
    pub hidden: usize,
    /// Key/value width per layer (KV heads x head dimension).
    pub kv: usize,
    /// Per layer, the key and the value factors.
    pub layers: Vec<[Factor; 2]>,
}

const PARTS: [&str; 2] = ["attn_k", "attn_v"];

/// Serializes a file.
pub fn to_bytes(f: &KvFactors) -> Result<Vec<u8>, String> {
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("version", VERSION.to_string()),
        ("rank", f.rank.to_string()),
        ("layers", f.layers.len().to_string()),
        ("method", f.method.clone()),
        ("base", f.base.name.clone()),
        ("base_bytes", f.base.bytes.to_string()),
        ("base_crc32", f.base.crc32.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut named = Vec::new();
    for (l, pair) in f.layers.iter().enumerate() {
        for (part, factor) in PARTS.iter().zip(pair) {
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            named.push((
                format!("blk.{l}.{part}.a"),
                vec![f.rank, f.hidden],
                bytes(&factor.a),
            ));
            named.push((
                format!("blk.{l}.{part}.b"),
                vec![f.kv, f.rank],
                bytes(&factor.b),
            ));
        }
    }
    let views = named
        .iter()
        .map(|(n, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

/// Parses and checks a file held in memory.
pub fn parse(bytes: &[u8]) -> Result<KvFactors, String> {
    let (st, meta) = crate::schema(bytes, FORMAT)?;
    let get = |k: &str| crate::meta_get(&meta, k, FORMAT);
    if get("version")? != VERSION {
        return Err(format!(
            "{FORMAT} version {} is not supported (this build reads version {VERSION})",
            get("version")?
        ));
    }
    let number = |k: &str| -> Result<usize, String> {
        get(k)?
            .parse()
            .map_err(|_| format!("`{k}` is not a number"))
    };
    let (rank, n_layers) = (number("rank")?, number("layers")?);
    if rank == 0 {
        return Err("a rank of 0".into());
    }
    if n_layers == 0 || n_layers > MAX_LAYERS {
        return Err(format!("{n_layers} layers (1 to {MAX_LAYERS})"));
    }
    if st.len() != 4 * n_layers {
        return Err(format!(
            "{} tensors where {n_layers} layers need {}",
            st.len(),
            4 * n_layers
        ));
    }
    let base = Base::from_metadata(&meta, FORMAT)?;
    let (mut hidden, mut kv) = (None::<usize>, None::<usize>);
    let mut tensor = |name: String, a: bool| -> Result<Vec<f32>, String> {
        let t = st.tensor(&name).map_err(|e| format!("{name}: {e}"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!("{name} must be F32, not {:?}", t.dtype()));
        }
        let shape = t.shape();
        let (free, fixed) = match (shape, a) {
            ([r, h], true) => (*h, *r),
            ([k, r], false) => (*k, *r),
            _ => return Err(format!("{name} must be 2-D, not {shape:?}")),
        };
        let seen = if a { &mut hidden } else { &mut kv };
        if fixed != rank || free == 0 || seen.is_some_and(|s| s != free) {
            return Err(format!(
                "{name} has shape {shape:?}; expected {} with rank {rank} and the same {} in every layer",
                if a { "[rank, hidden]" } else { "[kv, rank]" },
                if a { "hidden" } else { "kv" }
            ));
        }
        *seen = Some(free);
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!("{name}[{i}] is {}", values[i]));
        }
        Ok(values)
    };
    let mut layers = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let mut factor = |part: &str| -> Result<Factor, String> {
            Ok(Factor {
                a: tensor(format!("blk.{l}.{part}.a"), true)?,
                b: tensor(format!("blk.{l}.{part}.b"), false)?,
            })
        };
        layers.push([factor(PARTS[0])?, factor(PARTS[1])?]);
    }
    let (hidden, kv) = (hidden.unwrap_or(0), kv.unwrap_or(0));
    if rank > kv {
        return Err(format!("rank {rank} is above the key/value dimension {kv}"));
    }
    Ok(KvFactors {
        base,
        method: get("method")?.clone(),
        rank,
        hidden,
        kv,
        layers,
    })
}

/// Writes a file.
pub fn write(path: &Path, f: &KvFactors) -> Result<(), IoError> {
    let bytes = to_bytes(f).map_err(|e| IoError::new(path, e))?;
    std::fs::write(path, bytes).map_err(|e| IoError::new(path, e))
}

/// Reads and checks a file.
pub fn read(path: &Path) -> Result<KvFactors, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::new(path, e))?;
    parse(&bytes).map_err(|e| IoError::new(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample(rank: usize, layers: usize) -> KvFactors {
        let (hidden, kv) = (8, 4);
        let f = |n: usize, s: f32| (0..n).map(|i| i as f32 * s).collect::<Vec<f32>>();
        KvFactors {
            base: Base {
                name: "m.gguf".into(),
                bytes: 10,
                crc32: 7,
            },
            method: "lsq".into(),
            rank,
            hidden,
            kv,
            layers: (0..layers)
                .map(|_| {
                    [
                        Factor {
                            a: f(rank * hidden, 0.5),
                            b: f(kv * rank, 0.25),
                        },
                        Factor {
                            a: f(rank * hidden, -0.5),
                            b: f(kv * rank, 1.0),
                        },
                    ]
                })
                .collect(),
        }
    }

    #[test]
    fn files_round_trip() {
        let f = sample(2, 3);
        assert_eq!(parse(&to_bytes(&f).unwrap()).unwrap(), f);
    }

    #[test]
    fn a_rank_above_kv_is_refused() {
        let f = sample(5, 1);
        let err = parse(&to_bytes(&f).unwrap()).unwrap_err();
        assert!(err.contains("above the key/value dimension"), "{err}");
    }
}
