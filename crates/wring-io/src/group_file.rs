//! wring's file of compressed weights: the group-quantized linear layers of a model, in safetensors, so any
//! safetensors reader can open it. It holds only the matrices that were quantized and names the GGUF it was
//! made from (by size and CRC-32), whose other tensors (embedding, norms), configuration and tokenizer the
//! model takes as they are.
//!
//! Schema (version 5; each version adds an optional tensor, and a file is written with the lowest version
//! that holds it, so older readers still read what they can). `__metadata__`, all strings:
//! - `format`: `wring-group`; `version`: `1` to `5`;
//! - `base`: the base model's file name (informational), `base_bytes` and `base_crc32` (decimal): the base
//!   it must be loaded with;
//! - `method`: how it was made (informational, e.g. `spqr bits=3 group=16 tau=0.2`);
//! - for each matrix, its GGUF tensor name as the key and its layout as the value:
//!   `rows=R cols=C bits=B group=G stats=affine` or `... stats=bilevel:SB:SR` (SB-bit scales and zeros,
//!   second-order parameters per SR rows; see `wring_quant::group`), or `... group=16 stats=trellis:L`
//!   (version 5: trellis-coded weights with L-bit states, `wring_quant::trellis`).
//!
//! Tensors, all `U32` (little-endian words, `wring_quant::group`'s buffers): `NAME.codes` [R, code words],
//! `NAME.stats` [R, stat words], `NAME.second` [second words] (bilevel only), `NAME.perm` \[C\] (absent when
//! the columns are in input order), `NAME.outliers` [R + 1 + outliers]. Version 2 adds `NAME.row_bits`, `U8`
//! \[R\]: each row's code width (MixLLM's mixed precision); with it, `NAME.codes` is 1-D, the rows' words one
//! after another. Version 3 adds `NAME.mask`, `U32` [R, ceil(G' / 32)] for G' groups per row: bit g of a
//! row set when the row keeps group g (GQSA's group sparsity; affine statistics only); with it, `NAME.codes`
//! and `NAME.stats` are 1-D and hold only the kept groups' codes and statistics. Version 4 adds
//! `NAME.signs`, `U32` [ceil(C / 32)]: the sign bits of the incoherence transform the rows were stored in
//! (`wring_quant::rht`; bit j for column j, bits past C zero). Version 5 adds trellis-coded matrices:
//! `NAME.codes` [R, C B / 32] holds the 16 x 16 tiles' streams in tile order (a row tile's 16 rows of
//! words hold that row tile's streams), `NAME.stats` [R, 1] each row's f32 scale (as its bits); no
//! `second`, `perm`, `row_bits` or `mask`.
//!
//! Reading checks everything before returning a matrix: the schema and version, every layout, each
//! tensor's type and exact shape, and each matrix's contents (`GroupMatrix::check`: a permutation, rising
//! outlier offsets, columns in range, finite values); no allocation is sized by a number the file has not
//! backed with its own bytes.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use wring_quant::group::{GroupMatrix, Layout, Stats};

use crate::IoError;

/// The schema's name and version.
pub const FORMAT: &str = "wring-group";
/// The version written when a matrix is trellis-coded (the newest this build reads).
pub const VERSION: &str = "5";
/// The version written when a matrix has an incoherence transform and none is trellis-coded.
pub const VERSION_SIGNS: &str = "4";
/// The version written when a matrix has pruned groups and none has a transform.
pub const VERSION_MASK: &str = "3";
/// The version written when a matrix has per-row widths and none has pruned groups.
pub const VERSION_ROW_BITS: &str = "2";
/// The version written when no matrix has per-row widths or pruned groups, so version-1 readers still read
/// those files.
pub const VERSION_UNIFORM: &str = "1";

/// The most matrices one file may hold (a 405B llama has 126 x 7).
pub const MAX_MATRICES: usize = 1 << 14;

/// The base model a file was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// File name, for messages.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

/// A file's contents.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupFile {
    /// The base model the weights were made from.
    pub base: Base,
    /// How it was made.
    pub method: String,
    /// The matrices by GGUF tensor name.
    pub matrices: HashMap<String, GroupMatrix>,
}

fn layout_string(l: &Layout) -> String {
    let stats = match l.stats {
        Stats::Affine => "affine".to_string(),
        Stats::Bilevel { bits, rows } => format!("bilevel:{bits}:{rows}"),
        Stats::Trellis { state } => format!("trellis:{state}"),
    };
    format!(
        "rows={} cols={} bits={} group={} stats={stats}",
        l.rows, l.cols, l.bits, l.group
    )
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    let mut f: HashMap<&str, &str> = HashMap::new();
    for part in s.split(' ') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("layout field `{part}` is not key=value"))?;
        if f.insert(k, v).is_some() {
            return Err(format!("layout field `{k}` is given twice"));
        }
    }
    if f.len() != 5 {
        return Err(format!(
            "layout `{s}` must have exactly rows, cols, bits, group, stats"
        ));
    }
    let num = |k: &str| -> Result<usize, String> {
        let v = f.get(k).ok_or_else(|| format!("layout lacks `{k}`"))?;
        v.parse::<usize>()
            .ok()
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| format!("layout `{k}={v}` is not a number up to 2^32"))
    };
    let stats = match f.get("stats").copied() {
        Some("affine") => Stats::Affine,
        Some(b) if b.starts_with("bilevel:") => {
            let mut it = b["bilevel:".len()..].split(':');
            let (Some(sb), Some(sr), None) = (it.next(), it.next(), it.next()) else {
                return Err(format!("stats `{b}` is not bilevel:BITS:ROWS"));
            };
            Stats::Bilevel {
                bits: sb.parse().map_err(|_| format!("stats bits `{sb}`"))?,
                rows: sr.parse().map_err(|_| format!("stats rows `{sr}`"))?,
            }
        }
        Some(t) if t.starts_with("trellis:") => Stats::Trellis {
            state: t["trellis:".len()..]
                .parse()
                .map_err(|_| format!("stats `{t}` is not trellis:STATE_BITS"))?,
        },
        other => {
            return Err(format!(
                "stats `{}` is not affine, bilevel or trellis",
                other.unwrap_or("")
            ));
        }
    };
    let l = Layout {
        rows: num("rows")?,
        cols: num("cols")?,
        bits: u32::try_from(num("bits")?).map_err(|e| e.to_string())?,
        group: num("group")?,
        stats,
    };
    l.check().map_err(|e| e.to_string())?;
    Ok(l)
}

fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The shapes of a matrix's codes and statistics: 2-D [rows, words per row] when every row has the same
/// width and keeps every group, 1-D otherwise. The mask and widths must already be valid (their shapes
/// and the mask's spare bits checked), since the lengths are counted from them.
fn shapes(m: &GroupMatrix) -> (Vec<usize>, Vec<usize>) {
    let l = &m.layout;
    let end = m.row_at(l.rows);
    let codes = if m.row_bits.is_empty() && m.mask.is_empty() {
        vec![l.rows, l.code_words()]
    } else {
        vec![end.code]
    };
    let stats = if m.mask.is_empty() {
        vec![l.rows, l.stat_words()]
    } else {
        vec![end.stat]
    };
    (codes, stats)
}

/// Serializes a file.
pub fn to_bytes(file: &GroupFile) -> Result<Vec<u8>, String> {
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (
            "version".to_string(),
            if file
                .matrices
                .values()
                .any(|m| matches!(m.layout.stats, Stats::Trellis { .. }))
            {
                VERSION
            } else if file.matrices.values().any(|m| !m.signs.is_empty()) {
                VERSION_SIGNS
            } else if file.matrices.values().any(|m| !m.mask.is_empty()) {
                VERSION_MASK
            } else if file.matrices.values().any(|m| !m.row_bits.is_empty()) {
                VERSION_ROW_BITS
            } else {
                VERSION_UNIFORM
            }
            .to_string(),
        ),
        ("base".to_string(), file.base.name.clone()),
        ("base_bytes".to_string(), file.base.bytes.to_string()),
        ("base_crc32".to_string(), file.base.crc32.to_string()),
        ("method".to_string(), file.method.clone()),
    ]);
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut names: Vec<&String> = file.matrices.keys().collect();
    names.sort();
    for name in names {
        if meta.contains_key(name.as_str()) {
            return Err(format!(
                "a matrix may not be named `{name}` (a metadata key)"
            ));
        }
        let m = &file.matrices[name];
        m.check().map_err(|e| format!("{name}: {e}"))?;
        let l = &m.layout;
        meta.insert(name.clone(), layout_string(l));
        let (code_shape, stat_shape) = shapes(m);
        buffers.push((format!("{name}.codes"), code_shape, words(&m.codes)));
        buffers.push((format!("{name}.stats"), stat_shape, words(&m.stats)));
        if !m.mask.is_empty() {
            buffers.push((
                format!("{name}.mask"),
                vec![l.rows, l.mask_words()],
                words(&m.mask),
            ));
        }
        if matches!(l.stats, Stats::Bilevel { .. }) {
            buffers.push((
                format!("{name}.second"),
                vec![m.second.len()],
                words(&m.second),
            ));
        }
        if m.permuted() {
            buffers.push((format!("{name}.perm"), vec![l.cols], words(&m.perm)));
        }
        if !m.signs.is_empty() {
            buffers.push((
                format!("{name}.signs"),
                vec![m.signs.len()],
                words(&m.signs),
            ));
        }
        buffers.push((
            format!("{name}.outliers"),
            vec![m.outliers.len()],
            words(&m.outliers),
        ));
    }
    let row_bits: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .matrices
        .iter()
        .filter(|(_, m)| !m.row_bits.is_empty())
        .map(|(name, m)| {
            (
                format!("{name}.row_bits"),
                vec![m.row_bits.len()],
                m.row_bits.clone(),
            )
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(n, shape, data)| (n, Dtype::U32, shape, data))
        .chain(
            row_bits
                .iter()
                .map(|(n, shape, data)| (n, Dtype::U8, shape, data)),
        )
        .map(|(n, dtype, shape, data)| {
            TensorView::new(dtype, shape.clone(), data)
                .map(|v| (n.as_str(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

/// Parses and checks a file held in memory.
pub fn parse(bytes: &[u8]) -> Result<GroupFile, String> {
    let (st, meta) = crate::schema(bytes, FORMAT)?;
    let meta = &meta;
    let get = |k: &str| crate::meta_get(meta, k, FORMAT);
    let version = get("version")?;
    if ![
        VERSION_UNIFORM,
        VERSION_ROW_BITS,
        VERSION_MASK,
        VERSION_SIGNS,
        VERSION,
    ]
    .contains(&version.as_str())
    {
        return Err(format!(
            "{FORMAT} version {version} is not supported (this build reads versions {VERSION_UNIFORM} to {VERSION})"
        ));
    }
    let base = Base::from_metadata(meta, FORMAT)?;
    let reserved = [
        "format",
        "version",
        "base",
        "base_bytes",
        "base_crc32",
        "method",
    ];
    let names: Vec<&String> = meta
        .keys()
        .filter(|k| !reserved.contains(&k.as_str()))
        .collect();
    if names.len() > MAX_MATRICES {
        return Err(format!("{} matrices; at most {MAX_MATRICES}", names.len()));
    }
    let mut matrices = HashMap::new();
    for name in names {
        let layout = parse_layout(&meta[name]).map_err(|e| format!("{name}: {e}"))?;
        let tensor = |part: &str, shape: Option<Vec<usize>>| -> Result<Option<Vec<u32>>, String> {
            let full = format!("{name}.{part}");
            let t = match st.tensor(&full) {
                Ok(t) => t,
                Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
                Err(e) => return Err(format!("{full}: {e}")),
            };
            if t.dtype() != Dtype::U32 {
                return Err(format!("{full} must be U32, not {:?}", t.dtype()));
            }
            if let Some(s) = shape
                && t.shape() != s.as_slice()
            {
                return Err(format!(
                    "{full} has shape {:?}, the layout needs {s:?}",
                    t.shape()
                ));
            }
            if t.shape().len() != 1 && t.shape().len() != 2 {
                return Err(format!("{full} must be 1-D or 2-D"));
            }
            // The view's bytes are backed by the file (safetensors checked the offsets), so this
            // allocation is bounded by the file's size.
            Ok(Some(
                t.data()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ))
        };
        let need = |part: &str, shape: Option<Vec<usize>>| {
            tensor(part, shape)?.ok_or_else(|| format!("{name}.{part} is missing"))
        };
        let bilevel = matches!(layout.stats, Stats::Bilevel { .. });
        let row_bits = match st.tensor(&format!("{name}.row_bits")) {
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => Vec::new(),
            Err(e) => return Err(format!("{name}.row_bits: {e}")),
            Ok(_) if version == VERSION_UNIFORM => {
                return Err(format!("{name}.row_bits in a version-1 file"));
            }
            Ok(t) if t.dtype() != Dtype::U8 || t.shape() != [layout.rows] => {
                return Err(format!(
                    "{name}.row_bits must be U8 [{}], not {:?} {:?}",
                    layout.rows,
                    t.dtype(),
                    t.shape()
                ));
            }
            Ok(t) => t.data().to_vec(),
        };
        // Widths are checked before they size anything: each 2 to 8 bits, so the codes' length is bounded
        // by the rows the file itself holds.
        if let Some(b) = row_bits.iter().find(|b| !(2..=8).contains(*b)) {
            return Err(format!(
                "{name}: a row of {b}-bit codes; 2 to 8 bits are supported"
            ));
        }
        // The mask likewise: its shape, and no bit past the last group, before it counts anything.
        let mask = match tensor("mask", Some(vec![layout.rows, layout.mask_words()]))? {
            None => Vec::new(),
            // Versions are checked to be one of "1" to "5" above, so they order as strings.
            Some(_) if version.as_str() < VERSION_MASK => {
                return Err(format!("{name}.mask in a version-{version} file"));
            }
            Some(_) if bilevel => {
                return Err(format!("{name}.mask with bilevel statistics"));
            }
            Some(mask) => mask,
        };
        let mut m = GroupMatrix {
            layout,
            codes: Vec::new(),
            stats: Vec::new(),
            second: Vec::new(),
            perm: Vec::new(),
            outliers: Vec::new(),
            row_bits,
            mask,
            signs: Vec::new(),
        };
        if matches!(layout.stats, Stats::Trellis { .. }) && version.as_str() < VERSION {
            return Err(format!(
                "{name}: trellis statistics in a version-{version} file"
            ));
        }
        m.check_mask().map_err(|e| format!("{name}: {e}"))?;
        let (code_shape, stat_shape) = shapes(&m);
        m.codes = need("codes", Some(code_shape))?;
        m.stats = need("stats", Some(stat_shape))?;
        if bilevel {
            m.second = need("second", Some(vec![layout.second_words()]))?;
        }
        m.perm = match tensor("perm", Some(vec![layout.cols]))? {
            Some(p) => p,
            None => (0..layout.cols as u32).collect(),
        };
        m.outliers = need("outliers", None)?;
        // The signs' shape follows from the columns alone (a width with no transform has none to hold).
        m.signs = match tensor("signs", Some(vec![layout.cols.div_ceil(32)]))? {
            None => Vec::new(),
            Some(_) if version.as_str() < VERSION_SIGNS => {
                return Err(format!("{name}.signs in a version-{version} file"));
            }
            Some(signs) => signs,
        };
        m.check().map_err(|e| format!("{name}: {e}"))?;
        matrices.insert(name.clone(), m);
    }
    Ok(GroupFile {
        base,
        method: get("method")?.clone(),
        matrices,
    })
}

impl Base {
    /// The size and CRC-32 of the file at `path` (read in 1 MiB pieces).
    pub fn of(path: &Path) -> Result<Base, IoError> {
        use std::io::Read as _;
        let mut f = std::fs::File::open(path).map_err(|e| IoError::new(path, e))?;
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| IoError::new(path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(Base {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            crc32: h.finalize(),
        })
    }

    /// The base a `format` file names in its metadata (`base`, `base_bytes`, `base_crc32`).
    pub fn from_metadata(meta: &HashMap<String, String>, format: &str) -> Result<Base, String> {
        let get = |k: &str| crate::meta_get(meta, k, format);
        Ok(Base {
            name: get("base")?.clone(),
            bytes: get("base_bytes")?
                .parse()
                .map_err(|_| "base_bytes is not a number".to_string())?,
            crc32: get("base_crc32")?
                .parse()
                .map_err(|_| "base_crc32 is not a 32-bit number".to_string())?,
        })
    }

    /// Whether `other` (the file a model is being loaded with) is this base: same size and CRC-32.
    pub fn matches(&self, other: &Base) -> bool {
        self.bytes == other.bytes && self.crc32 == other.crc32
    }
}

/// Writes a file.
pub fn write(path: &Path, file: &GroupFile) -> Result<(), IoError> {
    let bytes = to_bytes(file).map_err(|e| IoError::new(path, e))?;
    std::fs::write(path, bytes).map_err(|e| IoError::new(path, e))
}

/// Reads and checks a file.
pub fn read(path: &Path) -> Result<GroupFile, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::new(path, e))?;
    parse(&bytes).map_err(|e| IoError::new(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wring_quant::gptq::{Config, Hessian, Method, quantize, quantize_rows};

    #[test]
    fn files_round_trip() {
        let (rows, cols) = (32, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut h = Hessian::new(cols);
        h.add(
            &(0..4 * cols * cols)
                .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
                .collect::<Vec<_>>(),
        );
        let mut matrices = HashMap::new();
        matrices.insert(
            "blk.0.attn_q.weight".to_string(),
            quantize(&w, rows, cols, &h, &Config::spqr(3)).unwrap().0,
        );
        matrices.insert(
            "blk.0.ffn_up.weight".to_string(),
            quantize(&w, rows, cols, &h, &Config::plain(Method::Rtn, 4, 32))
                .unwrap()
                .0,
        );
        let file = GroupFile {
            base: Base {
                name: "base.gguf".into(),
                bytes: 1234,
                crc32: 0xDEAD_BEEF,
            },
            method: "test".into(),
            matrices,
        };
        let bytes = to_bytes(&file).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"version\":\"1\""));
        assert_eq!(parse(&bytes).unwrap(), file);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());

        // Mixed row widths make a version-2 file and come back as they went.
        let mut mixed = file.clone();
        let widths: Vec<u8> = (0..rows).map(|r| if r % 5 == 0 { 8 } else { 4 }).collect();
        let cfg = Config::mixllm(0.2);
        mixed.matrices.insert(
            "blk.0.ffn_down.weight".to_string(),
            quantize_rows(&w, rows, cols, &h, &cfg, &widths).unwrap().0,
        );
        let bytes = to_bytes(&mixed).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"version\":\"2\""));
        let back = parse(&bytes).unwrap();
        assert_eq!(back, mixed);
        assert_eq!(back.matrices["blk.0.ffn_down.weight"].row_bits, widths);
        // The same bytes claiming version 1 are refused: version 1 has no row widths.
        let mut v1 = bytes.clone();
        let at = v1
            .windows(13)
            .position(|w| w == b"\"version\":\"2\"")
            .unwrap();
        v1[at + 11] = b'1';
        let e = parse(&v1).unwrap_err();
        assert!(e.contains("row_bits in a version-1 file"), "{e}");

        // A trellis-coded matrix (with incoherence signs) makes a version-5 file and comes back as it went.
        let mut trellis = file.clone();
        let mut t = quantize(&w, rows, cols, &h, &Config::trellis(3, 10, 1))
            .unwrap()
            .0;
        t.signs = wring_quant::rht::signs_from_seed(cols, 9);
        trellis
            .matrices
            .insert("blk.0.ffn_gate.weight".to_string(), t);
        let bytes = to_bytes(&trellis).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"version\":\"5\""));
        assert_eq!(parse(&bytes).unwrap(), trellis);
    }

    /// The fuzz target's seeds (written from the schema by tools/fixtures/fuzz_seeds.py, not by this
    /// crate) parse: the schema documented above is the one implemented.
    #[test]
    fn the_seeds_written_from_the_schema_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/group_file");
        for name in [
            "affine-4bit.safetensors",
            "bilevel-3bit.safetensors",
            "mixed-4-8bit.safetensors",
            "incoherence-4bit.safetensors",
            "trellis-2bit.safetensors",
        ] {
            let f = read(&dir.join(name)).unwrap();
            assert_eq!(f.matrices.len(), 1, "{name}");
            assert_eq!(f.base.crc32, 12345);
        }
    }

    #[test]
    fn layouts_are_parsed_strictly() {
        assert!(parse_layout("rows=32 cols=64 bits=3 group=16 stats=bilevel:3:16").is_ok());
        assert!(parse_layout("rows=32 cols=64 bits=3 group=16 stats=trellis:16").is_ok());
        for bad in [
            "rows=32 cols=64 bits=3 group=16",
            "rows=32 cols=64 bits=3 group=16 stats=affine extra=1",
            "rows=32 rows=32 bits=3 group=16 stats=affine",
            "rows=32 cols=64 bits=9 group=16 stats=affine",
            "rows=32 cols=64 bits=3 group=24 stats=affine",
            "rows=-1 cols=64 bits=3 group=16 stats=affine",
            "rows=99999999999 cols=64 bits=3 group=16 stats=affine",
            "rows=32 cols=64 bits=3 group=16 stats=bilevel:3",
            "rows=32 cols=64 bits=3 group=16 stats=bilevel:3:16:1",
            "rows=32 cols=64 bits=3 group=16 stats=bilevel:3:24",
            "rows=32 cols=64 bits=3 group=16 stats=sparse",
            "rows=32 cols=64 bits=3 group=16 stats=trellis",
            "rows=32 cols=64 bits=3 group=16 stats=trellis:17",
            "rows=32 cols=64 bits=5 group=16 stats=trellis:16",
            "rows=32 cols=64 bits=3 group=32 stats=trellis:16",
            "rows=24 cols=64 bits=3 group=16 stats=trellis:16",
            "rows=32 cols=48 bits=3 group=16 stats=trellis:16",
        ] {
            assert!(parse_layout(bad).is_err(), "{bad}");
        }
    }
}
