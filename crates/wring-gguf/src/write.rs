//! A GGUF writer (format version 3), so that weights wring has compressed can be handed, dequantized, to
//! any GGUF runtime: the quality bench scores them with llama.cpp's own perplexity tool this way.

use std::io::Write;

use crate::Value;

/// One tensor to write: its data must already be in `ggml_type`'s layout, rows of `dims[0]` elements.
#[derive(Debug)]
pub struct TensorOut<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// Dimensions in GGUF order, innermost first.
    pub dims: &'a [u64],
    /// The GGML type id of `data` (0 for f32, 8 for Q8_0, ...).
    pub ggml_type: u32,
    /// The packed bytes.
    pub data: &'a [u8],
}

impl Value {
    /// The GGUF value-type id.
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn write_to(&self, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend(v.to_le_bytes()),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::String(s) => put_string(out, s),
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
            Value::Array(items) => {
                // The reader does not keep an empty array's item type; u8 is as good as any for no items.
                let ty = items.first().map_or(0, Value::type_id);
                if items.iter().any(|v| v.type_id() != ty) {
                    return Err("an array mixes value types".into());
                }
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    v.write_to(out)?;
                }
            }
        }
        Ok(())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Writes a version-3 GGUF file: the metadata in the given order, then the tensor descriptions, then the
/// data, each tensor at a multiple of `general.alignment` (32 when the metadata does not set it).
pub fn write_gguf(
    out: &mut impl Write,
    metadata: &[(String, Value)],
    tensors: &[TensorOut<'_>],
) -> Result<(), String> {
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(32);
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(format!(
            "general.alignment {alignment} is not a power of two"
        ));
    }
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_string(&mut head, k);
        head.extend(v.type_id().to_le_bytes());
        v.write_to(&mut head)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        let (block, block_bytes, _) = crate::ggml_type_layout(t.ggml_type)
            .ok_or_else(|| format!("tensor `{}`: unknown ggml type {}", t.name, t.ggml_type))?;
        let n: u64 = t.dims.iter().product();
        if t.dims.is_empty()
            || t.dims[0] % block != 0
            || n / block * block_bytes != t.data.len() as u64
        {
            return Err(format!(
                "tensor `{}`: {} bytes do not hold {:?} elements of type {}",
                t.name,
                t.data.len(),
                t.dims,
                t.ggml_type
            ));
        }
        put_string(&mut head, t.name);
        head.extend((t.dims.len() as u32).to_le_bytes());
        for d in t.dims {
            head.extend(d.to_le_bytes());
        }
        head.extend(t.ggml_type.to_le_bytes());
        head.extend(offset.to_le_bytes());
        offset = (offset + t.data.len() as u64).next_multiple_of(alignment);
    }
    head.resize((head.len() as u64).next_multiple_of(alignment) as usize, 0);
    let io = |e: std::io::Error| e.to_string();
    out.write_all(&head).map_err(io)?;
    let mut at = 0u64;
    for t in tensors {
        out.write_all(t.data).map_err(io)?;
        at += t.data.len() as u64;
        let pad = at.next_multiple_of(alignment) - at;
        out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        at += pad;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gguf;

    #[test]
    fn a_written_file_reads_back_the_same() {
        let metadata = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("general.alignment".to_string(), Value::U32(64)),
            ("x.f".to_string(), Value::F32(1.5)),
            ("x.b".to_string(), Value::Bool(true)),
            (
                "x.tokens".to_string(),
                Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
            ),
            ("x.empty".to_string(), Value::Array(vec![])),
            ("x.i".to_string(), Value::I64(-3)),
        ];
        let a: Vec<u8> = (0..3 * 4 * 4).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..20).map(|i| 255 - i as u8).collect();
        let tensors = [
            TensorOut {
                name: "a",
                dims: &[4, 3],
                ggml_type: 0,
                data: &a,
            },
            TensorOut {
                name: "b",
                dims: &[32],
                ggml_type: 3,
                data: &b,
            },
        ];
        let mut bytes = Vec::new();
        write_gguf(&mut bytes, &metadata, &tensors).unwrap();
        let g = Gguf::from_vec(bytes).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.metadata, metadata);
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[1].dims, vec![32]);
        assert_eq!(g.tensors[1].offset % 64, 0);
        assert_eq!(g.tensor_data(&g.tensors[0]), &a[..]);
        assert_eq!(g.tensor_data(&g.tensors[1]), &b[..]);
        // Data that does not fit its shape is refused.
        let bad = [TensorOut {
            name: "c",
            dims: &[5],
            ggml_type: 0,
            data: &a,
        }];
        assert!(
            write_gguf(&mut Vec::new(), &metadata, &bad)
                .unwrap_err()
                .contains("`c`")
        );
    }
}
