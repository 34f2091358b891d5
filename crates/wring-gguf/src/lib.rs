//! A GGUF reader (format versions 2 and 3) that treats the file as hostile.
//!
//! Every count and length in the header is checked against the bytes that remain before anything is
//! allocated for it, tensor shapes are checked for overflow, and every tensor's data range must lie inside
//! the file. A truncated or malformed file gives a [`GgufError`] that says where and what, never a panic.
//! Tensor data is not copied: [`Gguf::tensor_data`] borrows it from the memory map.

#![warn(missing_docs)]

use std::path::Path;

mod write;
pub use write::{TensorOut, write_gguf};

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Not a GGUF file.
    #[error("not a GGUF file: the first four bytes are {0:?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    /// A version this reader does not know.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    Version(u32),
    /// The file ends inside a structure.
    #[error(
        "the file is truncated: {what} at byte {at} needs {need} bytes, but only {have} remain"
    )]
    Truncated {
        /// The structure being read.
        what: String,
        /// Its byte offset.
        at: u64,
        /// Bytes it needs.
        need: u64,
        /// Bytes left in the file.
        have: u64,
    },
    /// A header number that cannot be right.
    #[error("malformed GGUF at byte {at}: {what}")]
    Malformed {
        /// Byte offset of the number.
        at: u64,
        /// What is wrong with it.
        what: String,
    },
    /// A tensor whose data lies outside the file or whose shape overflows.
    #[error("tensor `{name}`: {what}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        what: String,
    },
    /// A metadata key that is missing or of another type.
    #[error("metadata `{key}`: {what}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        what: String,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8 (UTF-8).
    String(String),
    /// GGUF type 9: values of one element type.
    Array(Vec<Value>),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 12.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as f64, for any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64).or(match *self {
                Value::I8(v) => Some(v.into()),
                Value::I16(v) => Some(v.into()),
                Value::I32(v) => Some(v.into()),
                Value::I64(v) => Some(v as f64),
                _ => None,
            }),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Elements per block and bytes per block of a GGML tensor type, for the types llama.cpp writes.
pub fn ggml_type_layout(t: u32) -> Option<(u64, u64, &'static str)> {
    Some(match t {
        0 => (1, 4, "F32"),
        1 => (1, 2, "F16"),
        2 => (32, 18, "Q4_0"),
        3 => (32, 20, "Q4_1"),
        6 => (32, 22, "Q5_0"),
        7 => (32, 24, "Q5_1"),
        8 => (32, 34, "Q8_0"),
        9 => (32, 40, "Q8_1"),
        10 => (256, 84, "Q2_K"),
        11 => (256, 110, "Q3_K"),
        12 => (256, 144, "Q4_K"),
        13 => (256, 176, "Q5_K"),
        14 => (256, 210, "Q6_K"),
        15 => (256, 292, "Q8_K"),
        16 => (256, 66, "IQ2_XXS"),
        17 => (256, 74, "IQ2_XS"),
        18 => (256, 98, "IQ3_XXS"),
        19 => (256, 50, "IQ1_S"),
        20 => (32, 18, "IQ4_NL"),
        21 => (256, 110, "IQ3_S"),
        22 => (256, 82, "IQ2_S"),
        23 => (256, 136, "IQ4_XS"),
        24 => (1, 1, "I8"),
        25 => (1, 2, "I16"),
        26 => (1, 4, "I32"),
        27 => (1, 8, "I64"),
        28 => (1, 8, "F64"),
        29 => (256, 56, "IQ1_M"),
        30 => (1, 2, "BF16"),
        34 => (256, 54, "TQ1_0"),
        35 => (256, 66, "TQ2_0"),
        39 => (32, 17, "MXFP4"),
        _ => return None,
    })
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGUF order: innermost (contiguous) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// The GGML type id.
    pub ggml_type: u32,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type's name (`Q4_1`).
    pub fn type_name(&self) -> &'static str {
        ggml_type_layout(self.ggml_type).map_or("unknown", |l| l.2)
    }
}

enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file.
pub struct Gguf {
    bytes: Bytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor descriptions in file order.
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts.
    pub data_offset: u64,
}

impl Gguf {
    /// Tells the kernel that the mapped file's resident pages are not needed now (once the tensors are
    /// uploaded to the device, they would otherwise stay counted in the process's memory beside the
    /// device copy). The mapping stays valid: a later read faults its pages back in from the file. A file
    /// read into memory instead of mapped keeps its bytes.
    pub fn release_pages(&self) {
        if let Bytes::Map(m) = &self.bytes {
            release(m);
        }
    }
}

/// `madvise(MADV_DONTNEED)` over a read-only file mapping; failure only means the pages stay resident.
pub fn release(m: &memmap2::Mmap) {
    // SAFETY: the mapping is private, read-only and never written, so dropping its pages loses nothing:
    // they are reread from the file on the next access (the case memmap2 leaves unchecked is a private
    // mapping with writes of its own).
    #[cfg(unix)]
    #[allow(
        unsafe_code,
        reason = "dropping a read-only mapping's pages is the only way to return them without unmapping"
    )]
    let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    #[cfg(not(unix))]
    let _ = m;
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Array nesting deeper than this is refused (llama.cpp writes one level).
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.into(),
                at: self.pos as u64,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::Malformed {
            at,
            what: format!("{what} is not UTF-8"),
        })
    }

    /// A count of items each at least `min_item` bytes long: refused if the file cannot hold that many,
    /// so that no allocation is ever sized by an unchecked number.
    fn count(&mut self, what: &str, min_item: u64) -> Result<u64, GgufError> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(GgufError::Malformed {
                at,
                what: format!(
                    "{what} is {n}, but only {} bytes remain to hold them",
                    self.remaining()
                ),
            });
        }
        Ok(n)
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, GgufError> {
        let at = self.pos as u64;
        Ok(match ty {
            0 => Value::U8(self.array::<1>("u8 value")?[0]),
            1 => Value::I8(self.array::<1>("i8 value")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            4 => Value::U32(self.u32("u32 value")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            7 => match self.array::<1>("bool value")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::Malformed {
                        at,
                        what: format!("bool value {b} is neither 0 nor 1"),
                    });
                }
            },
            8 => Value::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Malformed {
                        at,
                        what: format!("arrays nest deeper than {MAX_ARRAY_DEPTH}"),
                    });
                }
                let item_ty = self.u32("array item type")?;
                let min_item = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(GgufError::Malformed {
                            at,
                            what: format!("unknown array item type {t}"),
                        });
                    }
                };
                let n = self.count("array length", min_item)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("u64 value")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            t => {
                return Err(GgufError::Malformed {
                    at,
                    what: format!("unknown metadata value type {t}"),
                });
            }
        })
    }
}

impl Gguf {
    /// Maps and parses a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Another process truncating or
        // rewriting the file while it is mapped would be undefined behaviour, which is the accepted
        // contract of every memory-mapped model loader (llama.cpp included).
        #[allow(
            unsafe_code,
            reason = "memory-mapping is the only way to avoid copying multi-gigabyte models"
        )]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Gguf::parse_bytes(Bytes::Map(map))
    }

    /// Parses a file held in memory.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        Gguf::parse_bytes(Bytes::Owned(bytes))
    }

    fn parse_bytes(bytes: Bytes) -> Result<Gguf, GgufError> {
        let (version, metadata, tensors, data_offset) = {
            let b = bytes.as_slice();
            let mut c = Cursor { b, pos: 0 };
            let magic = c.array::<4>("magic")?;
            if &magic != b"GGUF" {
                return Err(GgufError::BadMagic(magic));
            }
            let version = c.u32("version")?;
            if !(2..=3).contains(&version) {
                return Err(GgufError::Version(version));
            }
            // A tensor info is at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes; a
            // metadata pair at least 8 (key length) + 4 (type) + 1 byte.
            let n_tensors = c.u64("tensor count")?;
            let n_kv = c.count("metadata count", 13)?;
            if n_tensors.saturating_mul(24) > c.remaining() {
                return Err(GgufError::Malformed {
                    at: 8,
                    what: format!(
                        "tensor count is {n_tensors}, but only {} bytes remain to describe them",
                        c.remaining()
                    ),
                });
            }
            let mut metadata = Vec::with_capacity(n_kv as usize);
            // A key given twice would mean one thing to this reader (the first) and another to a reader
            // that keeps the last: refused, as ggml's own reader refuses it.
            let mut keys = std::collections::HashSet::new();
            for _ in 0..n_kv {
                let key = c.string("metadata key")?;
                if !keys.insert(key.clone()) {
                    return Err(GgufError::Metadata {
                        key,
                        what: "the key appears twice".into(),
                    });
                }
                let ty = c.u32("metadata type")?;
                let v = c.value(ty, 0)?;
                metadata.push((key, v));
            }
            let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
                None => 32,
                Some((_, v)) => match v.as_u64() {
                    Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                    _ => {
                        return Err(GgufError::Metadata {
                            key: "general.alignment".into(),
                            what: format!("{v:?} is not a power of two up to 1 MiB"),
                        });
                    }
                },
            };
            let mut tensors = Vec::with_capacity(n_tensors as usize);
            for _ in 0..n_tensors {
                let at = c.pos as u64;
                let name = c.string("tensor name")?;
                let n_dims = c.u32("tensor dimension count")?;
                if n_dims == 0 || n_dims > MAX_DIMS {
                    return Err(GgufError::Tensor {
                        name,
                        what: format!("{n_dims} dimensions; ggml tensors have 1 to {MAX_DIMS}"),
                    });
                }
                let mut dims = Vec::with_capacity(n_dims as usize);
                for _ in 0..n_dims {
                    dims.push(c.u64("tensor dimension")?);
                }
                let ggml_type = c.u32("tensor type")?;
                let offset = c.u64("tensor offset")?;
                let Some((block, block_bytes, _)) = ggml_type_layout(ggml_type) else {
                    return Err(GgufError::Tensor {
                        name,
                        what: format!("unknown GGML type {ggml_type}"),
                    });
                };
                let len = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                let Some(len) = len.filter(|&l| l < 1 << 48) else {
                    return Err(GgufError::Tensor {
                        name,
                        what: format!(
                            "shape {dims:?} is absurd (overflows or exceeds 2^48 elements)"
                        ),
                    });
                };
                if dims[0] % block != 0 {
                    return Err(GgufError::Tensor {
                        name,
                        what: format!(
                            "rows of {} values are not a whole number of {block}-value blocks",
                            dims[0]
                        ),
                    });
                }
                if offset % alignment != 0 {
                    return Err(GgufError::Malformed {
                        at,
                        what: format!("tensor `{name}` offset {offset} is not {alignment}-aligned"),
                    });
                }
                tensors.push(TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    offset,
                    bytes: len / block * block_bytes,
                });
            }
            let data_offset = (c.pos as u64).next_multiple_of(alignment);
            let file_len = b.len() as u64;
            for t in &tensors {
                let end = data_offset
                    .checked_add(t.offset)
                    .and_then(|s| s.checked_add(t.bytes));
                if end.is_none_or(|e| e > file_len) {
                    return Err(GgufError::Tensor {
                        name: t.name.clone(),
                        what: format!(
                            "data at offset {} of {} bytes runs past the end of the file ({file_len} bytes): the file is truncated",
                            t.offset, t.bytes
                        ),
                    });
                }
            }
            // Tensors must not share bytes: a file whose tensors all alias one range parses, and then every
            // weight is the same numbers. Duplicate names are refused for the same reason.
            let mut ranges: Vec<(u64, u64, &str)> = tensors
                .iter()
                .filter(|t| t.bytes > 0)
                .map(|t| (t.offset, t.offset + t.bytes, t.name.as_str()))
                .collect();
            ranges.sort_unstable();
            for w in ranges.windows(2) {
                if w[1].0 < w[0].1 {
                    return Err(GgufError::Tensor {
                        name: w[1].2.to_string(),
                        what: format!(
                            "its data at offset {} overlaps `{}` (offsets {}..{})",
                            w[1].0, w[0].2, w[0].0, w[0].1
                        ),
                    });
                }
            }
            let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(GgufError::Tensor {
                    name: w[0].to_string(),
                    what: "the name appears twice".into(),
                });
            }
            (version, metadata, tensors, data_offset)
        };
        Ok(Gguf {
            bytes,
            version,
            metadata,
            tensors,
            data_offset,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A metadata value that must be there.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::Metadata {
            key: key.into(),
            what: "missing".into(),
        })
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor's data, borrowed from the file (ranges were checked when parsing).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.bytes.as_slice()[start..start + t.bytes as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid file: one u32 and one string array of metadata, one F32 tensor of 2x3.
    pub(crate) fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        s(&mut b, "answer");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&42u32.to_le_bytes());
        s(&mut b, "words");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        s(&mut b, "hello");
        s(&mut b, "world");
        s(&mut b, "t");
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        b
    }

    /// Two F32 tensors of 2 values each: `a` at offset 0, and `name` at `offset`.
    fn two_tensors(name: &str, offset: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        for (n, off) in [("a", 0u64), (name, offset)] {
            b.extend_from_slice(&(n.len() as u64).to_le_bytes());
            b.extend_from_slice(n.as_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&2u64.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&[0u8; 64]);
        b
    }

    #[test]
    fn aliased_or_duplicate_tensors_are_refused() {
        assert!(Gguf::from_vec(two_tensors("b", 32)).is_ok());
        let e = Gguf::from_vec(two_tensors("b", 0)).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        let e = Gguf::from_vec(two_tensors("a", 32))
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn parses_a_valid_file() {
        let g = Gguf::from_vec(sample()).unwrap();
        assert_eq!(g.get("answer").and_then(Value::as_u64), Some(42));
        let words = g.get("words").and_then(Value::as_array).unwrap();
        assert_eq!(words[1].as_str(), Some("world"));
        let t = g.tensor("t").unwrap();
        assert_eq!((t.dims.as_slice(), t.bytes), (&[3u64, 2][..], 24));
        assert_eq!(&g.tensor_data(t)[4..8], &1.0f32.to_le_bytes());
    }

    /// A mapped file whose pages were released reads the same afterwards (they come back from the file).
    #[test]
    fn released_pages_read_back_from_the_file() {
        let path = std::env::temp_dir().join(format!("wring-release-{}.gguf", std::process::id()));
        std::fs::write(&path, sample()).unwrap();
        let g = Gguf::open(&path).unwrap();
        let t = g.tensor("t").unwrap();
        let before = g.tensor_data(t).to_vec();
        g.release_pages();
        assert_eq!(g.tensor_data(t), before.as_slice());
        assert_eq!(g.get("answer").and_then(Value::as_u64), Some(42));
        drop(g);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for cut in 0..full.len() {
            assert!(
                Gguf::from_vec(full[..cut].to_vec()).is_err(),
                "a file cut at {cut} bytes must be refused"
            );
        }
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        // Flipping any byte may still give a valid file, but must never panic or allocate absurdly.
        let full = sample();
        for i in 0..full.len() {
            for v in [0x00, 0xFF, 0x7F, 0x80] {
                let mut b = full.clone();
                b[i] = v;
                let _ = Gguf::from_vec(b);
            }
        }
    }

    #[test]
    fn hostile_counts_are_refused_before_allocating() {
        let mut b = sample();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = Gguf::from_vec(b).unwrap_err().to_string();
        assert!(
            e.contains("metadata count") && e.contains("bytes remain"),
            "{e}"
        );
        let mut b = sample();
        b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(
            Gguf::from_vec(b)
                .unwrap_err()
                .to_string()
                .contains("tensor count")
        );
        // The string array's length.
        let mut b = sample();
        let at = 24 + 8 + 6 + 4 + 4 + 8 + 5 + 4 + 4;
        b[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(
            Gguf::from_vec(b)
                .unwrap_err()
                .to_string()
                .contains("array length")
        );
    }

    #[test]
    fn absurd_shapes_and_bad_headers_are_refused() {
        let mut b = sample();
        b[..4].copy_from_slice(b"GGML");
        assert!(matches!(Gguf::from_vec(b), Err(GgufError::BadMagic(_))));
        let mut b = sample();
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(Gguf::from_vec(b), Err(GgufError::Version(7))));
        // Tensor dims: make the second dimension 2^62.
        let full = sample();
        let dims_at = full
            .windows(9)
            .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b't'])
            .unwrap()
            + 9
            + 4
            + 8;
        let mut b = full.clone();
        b[dims_at..dims_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let e = Gguf::from_vec(b).unwrap_err().to_string();
        assert!(e.contains("absurd"), "{e}");
    }
}
