//! Hostile GGUF files: the parser classes that broke the most used GGUF reader in 2026 (element types,
//! unbounded lengths, dimension products wrapping, alignment, aliasing), truncations, metadata that passes
//! the parser but not the model, and tokenizer metadata that disagrees with the vocabulary. Each goes
//! through what `wring generate` runs before any device work: the reader, the tokenizer, and model
//! loading up to the KV cache budget.

use super::{Case, typed};
use wring::gguf::Gguf;
use wring::llm::{GgufTokenizer, Llama, LlamaConfig, LlmError, check_kv_budget};

/// A GGUF metadata value as the builder writes it.
#[derive(Clone)]
pub enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strs(Vec<String>),
    I32(i32),
    U64(u64),
    U32s(Vec<u32>),
    F32s(Vec<f32>),
}

/// Writes a little GGUF (version 3): the metadata given and F32 tensors of the given dims, zero-filled.
pub fn gguf(meta: &[(&str, Meta)], tensors: &[(String, Vec<u64>)]) -> Vec<u8> {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        s(&mut b, k);
        match v {
            Meta::U32(x) => {
                b.extend_from_slice(&4u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Meta::F32(x) => {
                b.extend_from_slice(&6u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Meta::Str(x) => {
                b.extend_from_slice(&8u32.to_le_bytes());
                s(&mut b, x);
            }
            Meta::Strs(xs) => {
                b.extend_from_slice(&9u32.to_le_bytes());
                b.extend_from_slice(&8u32.to_le_bytes());
                b.extend_from_slice(&(xs.len() as u64).to_le_bytes());
                for x in xs {
                    s(&mut b, x);
                }
            }
            Meta::I32(x) => {
                b.extend_from_slice(&5u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Meta::U64(x) => {
                b.extend_from_slice(&10u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            Meta::U32s(xs) => {
                b.extend_from_slice(&9u32.to_le_bytes());
                b.extend_from_slice(&4u32.to_le_bytes());
                b.extend_from_slice(&(xs.len() as u64).to_le_bytes());
                for x in xs {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            }
            Meta::F32s(xs) => {
                b.extend_from_slice(&9u32.to_le_bytes());
                b.extend_from_slice(&6u32.to_le_bytes());
                b.extend_from_slice(&(xs.len() as u64).to_le_bytes());
                for x in xs {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims) in tensors {
        s(&mut b, name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        offset += (dims.iter().product::<u64>() * 4).next_multiple_of(32);
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.resize(b.len() + offset as usize, 0);
    b
}

/// A tiny llama: 8 embedding dimensions, 2 heads of 4, 16 feed-forward, a vocabulary of 5, `blocks`
/// blocks of tensors, and the metadata given over the defaults.
pub fn tiny(blocks: usize, overrides: &[(&str, Meta)]) -> Vec<u8> {
    tiny_as("llama", blocks, overrides, &[])
}

/// A tiny model of architecture `arch` (its hyperparameters under `arch.`) with `tensors` beside, or in
/// place of (same name), llama's; a tensor given with no dimensions is left out.
pub fn tiny_as(
    arch: &'static str,
    blocks: usize,
    overrides: &[(&str, Meta)],
    tensors: &[(String, Vec<u64>)],
) -> Vec<u8> {
    let key = |s: &str| format!("{arch}.{s}");
    let keys = [
        key("embedding_length"),
        key("attention.head_count"),
        key("feed_forward_length"),
        key("block_count"),
        key("context_length"),
        key("rope.freq_base"),
        key("attention.layer_norm_rms_epsilon"),
    ];
    let mut meta: Vec<(&str, Meta)> = vec![
        ("general.architecture", Meta::Str(arch)),
        (&keys[0], Meta::U32(8)),
        (&keys[1], Meta::U32(2)),
        (&keys[2], Meta::U32(16)),
        (&keys[3], Meta::U32(blocks as u32)),
        (&keys[4], Meta::U32(64)),
        (&keys[5], Meta::F32(10_000.0)),
        (&keys[6], Meta::F32(1e-5)),
        ("tokenizer.ggml.model", Meta::Str("gpt2")),
        (
            "tokenizer.ggml.tokens",
            Meta::Strs(["a", "b", "ab", "c", "<|end|>"].map(String::from).to_vec()),
        ),
        ("tokenizer.ggml.merges", Meta::Strs(vec!["a b".into()])),
        ("tokenizer.ggml.token_type", Meta::U32s(vec![1, 1, 1, 1, 3])),
        ("tokenizer.ggml.eos_token_id", Meta::U32(4)),
    ];
    for (k, v) in overrides {
        meta.retain(|(m, _)| m != k);
        meta.push((k, v.clone()));
    }
    let mut t = vec![
        ("token_embd.weight".to_string(), vec![8, 5]),
        ("output_norm.weight".to_string(), vec![8]),
    ];
    for l in 0..blocks {
        for (n, dims) in [
            ("attn_norm", vec![8]),
            ("attn_q", vec![8, 8]),
            ("attn_k", vec![8, 8]),
            ("attn_v", vec![8, 8]),
            ("attn_output", vec![8, 8]),
            ("ffn_norm", vec![8]),
            ("ffn_gate", vec![8, 16]),
            ("ffn_up", vec![8, 16]),
            ("ffn_down", vec![16, 8]),
        ] {
            t.push((format!("blk.{l}.{n}.weight"), dims));
        }
    }
    for (name, dims) in tensors {
        t.retain(|(n, _)| n != name);
        if !dims.is_empty() {
            t.push((name.clone(), dims.clone()));
        }
    }
    gguf(&meta, &t)
}

fn config(bytes: Vec<u8>) -> Result<LlamaConfig, LlmError> {
    LlamaConfig::from_gguf(&Gguf::from_vec(bytes)?)
}

/// What `wring generate` does with a model file before the first token: read it, build the tokenizer,
/// load the model with a cache of `positions` (checking the configuration against the tensors present and
/// the cache against the memory budget before any device allocation).
fn load(bytes: &[u8], positions: usize) -> Result<(), String> {
    let g = Gguf::from_vec(bytes.to_vec()).map_err(|e| typed(LlmError::from(e)))?;
    GgufTokenizer::from_gguf(&g).map_err(typed)?;
    Llama::load(crate::harness::ctx(), &g, positions, |_, _| {}).map_err(typed)?;
    Ok(())
}

/// Model loading alone, for files that carry no tokenizer.
fn load_model(bytes: &[u8]) -> Result<(), String> {
    let g = Gguf::from_vec(bytes.to_vec()).map_err(|e| typed(LlmError::from(e)))?;
    Llama::load(crate::harness::ctx(), &g, 64, |_, _| {}).map_err(typed)?;
    Ok(())
}

fn case(name: impl Into<String>, bytes: Vec<u8>, expect: &[&'static str]) -> Case {
    let n = bytes.len();
    Case::new("gguf", name, n, expect, move || load(&bytes, 64))
}

/// Raw GGUF bytes for parser-level attacks: the header, then whatever the case writes.
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, tensors: u64, kvs: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(tensors).u64(kvs);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    /// A tensor record: name, dims, ggml type, offset.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, to: usize, data: usize) -> Vec<u8> {
        while !self.0.len().is_multiple_of(to) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + data, 0);
        std::mem::take(&mut self.0)
    }
    fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// The reader's own classes: each file is a few dozen bytes claiming far more.
fn parser_cases() -> Vec<Case> {
    let mut c = Vec::new();
    let key = |r: &mut Raw, k: &str, ty: u32| {
        r.str(k.as_bytes()).u32(ty);
    };
    c.push(case("an empty file", vec![], &["Gguf", "truncated"]));
    c.push(case(
        "wrong magic",
        b"GGUG\x03\0\0\0".to_vec(),
        &["BadMagic", "not a GGUF file"],
    ));
    for v in [0u32, 1, 4, u32::MAX] {
        c.push(case(
            format!("format version {v}"),
            Raw::header(v, 0, 0).done(),
            &["Version", "not supported"],
        ));
    }
    c.push(case(
        "2^63 tensors declared in a 24-byte file",
        Raw::header(3, 1 << 63, 0).done(),
        &["Gguf"],
    ));
    c.push(case(
        "2^63 metadata pairs declared (the 43-byte file that hung a reader)",
        Raw::header(3, 0, 1 << 63).u64(3).done(),
        &["Gguf"],
    ));
    c.push(case(
        "a key of length 2^63",
        Raw::header(3, 0, 1).u64(1 << 63).done(),
        &["Gguf"],
    ));
    c.push(case(
        "a key that is not UTF-8",
        Raw::header(3, 0, 1).str(b"\xff\xfe").u32(4).u32(1).done(),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "general.name", 8);
    c.push(case(
        "a string value of length 2^63",
        r.u64(1 << 63).done(),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "tokenizer.ggml.scores", 9);
    c.push(case(
        "an f32 array of length 2^63",
        r.u32(6).u64(1 << 63).done(),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "tokenizer.ggml.tokens", 9);
    c.push(case(
        "a string array of length 2^62 in a few bytes",
        r.u32(8).u64(1 << 62).u64(1).done(),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "x", 9);
    for _ in 0..64 {
        r.u32(9).u64(1);
    }
    c.push(case("arrays nested 64 deep", r.done(), &["Gguf", "nest"]));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "x", 9);
    c.push(case(
        "an array of element type 13 (none exists)",
        r.u32(13).u64(1).u32(0).done(),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "x", 99);
    c.push(case("a value of type 99", r.u32(0).done(), &["Gguf"]));
    let mut r = Raw::header(3, 0, 1);
    key(&mut r, "x", 7);
    c.push(case(
        "a bool of 2",
        {
            r.0.push(2);
            r.done()
        },
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 0, 2);
    key(&mut r, "general.name", 4);
    r.u32(1);
    key(&mut r, "general.name", 4);
    c.push(case(
        "a key given twice",
        r.u32(2).done(),
        &["Gguf", "general.name", "twice"],
    ));
    for (what, ty, v) in [
        ("general.alignment 0", 4u32, 0u64),
        ("general.alignment 3 (not a power of two)", 4, 3),
        ("general.alignment 2^31", 4, 1 << 31),
        ("general.alignment 2^40 as u64", 10, 1 << 40),
        ("general.alignment as a float", 6, 32f32.to_bits() as u64),
    ] {
        let mut r = Raw::header(3, 0, 1);
        key(&mut r, "general.alignment", ty);
        if ty == 10 {
            r.u64(v);
        } else {
            r.u32(v as u32);
        }
        c.push(case(what, r.done(), &["Gguf", "alignment"]));
    }
    let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("token_embd.weight", dims, ty, offset);
        r.pad(32, data)
    };
    c.push(case(
        "a tensor of 0 dimensions",
        one(&[], 0, 0, 32),
        &["Gguf", "dimensions"],
    ));
    c.push(case(
        "a tensor of 5 dimensions",
        one(&[1; 5], 0, 0, 32),
        &["Gguf", "dimensions"],
    ));
    c.push(case(
        "a tensor of 2^32 - 1 dimensions",
        {
            let mut r = Raw::header(3, 1, 0);
            r.str(b"t").u32(u32::MAX).done()
        },
        &["Gguf", "remain"],
    ));
    c.push(case(
        "dimensions whose product wraps to zero (2^32 x 2^32)",
        one(&[1 << 32, 1 << 32], 0, 0, 32),
        &["Gguf"],
    ));
    c.push(case(
        "an element count whose byte size wraps (2^62 f32)",
        one(&[1 << 62], 0, 0, 32),
        &["Gguf"],
    ));
    c.push(case(
        "a tensor of ggml type 99",
        one(&[8], 99, 0, 32),
        &["Gguf", "type"],
    ));
    c.push(case(
        "a tensor of the removed type Q4_2",
        one(&[32], 4, 0, 32),
        &["Gguf", "type"],
    ));
    c.push(case(
        "a Q4_0 row of 31 values (not whole blocks)",
        one(&[31], 2, 0, 32),
        &["Gguf"],
    ));
    c.push(case(
        "a tensor offset not aligned",
        one(&[8], 0, 4, 64),
        &["Gguf", "aligned"],
    ));
    c.push(case(
        "a tensor past the end of the file",
        one(&[8], 0, 1 << 20, 32),
        &["Gguf"],
    ));
    c.push(case(
        "a tensor whose data runs past the end",
        one(&[64], 0, 0, 32),
        &["Gguf"],
    ));
    c.push(case(
        "a tensor offset of 2^64 - 32",
        one(&[8], 0, u64::MAX - 31, 32),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 0);
    c.push(case(
        "two tensors on one byte range",
        r.pad(32, 32),
        &["Gguf"],
    ));
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32);
    c.push(case("a tensor name given twice", r.pad(32, 64), &["Gguf"]));
    let mut r = Raw::header(3, 1, 0);
    c.push(case(
        "a tensor name of length 2^63",
        r.u64(1 << 63).done(),
        &["Gguf"],
    ));
    // Every truncation of a valid model is an error (the cut points spread over header, metadata,
    // tensor records and data).
    let whole = tiny(1, &[]);
    for cut in [
        4,
        8,
        23,
        30,
        100,
        400,
        700,
        1000,
        whole.len() / 2,
        whole.len() - 1,
    ] {
        c.push(case(
            format!("a valid model cut to {cut} of {} bytes", whole.len()),
            whole[..cut].to_vec(),
            &["Gguf"],
        ));
    }
    c
}

/// Metadata that passes the parser but not the model: each is refused by name before anything is sized by
/// it.
fn model_cases() -> Vec<Case> {
    let mut c = vec![Case::control(
        "gguf",
        "a tiny valid model (control)",
        0,
        || load(&tiny(2, &[]), 64),
    )];
    for (what, bytes, expect) in [
        (
            "block_count far above the blocks present",
            tiny(2, &[("llama.block_count", Meta::U32(16_777_215))]),
            &["Unsupported", "block_count"][..],
        ),
        (
            "block_count one short of the blocks present",
            tiny(2, &[("llama.block_count", Meta::U32(1))]),
            &["Unsupported", "block_count"],
        ),
        (
            "block_count 0 with a block present",
            tiny(1, &[("llama.block_count", Meta::U32(0))]),
            &["Unsupported", "block_count"],
        ),
        (
            "rope.freq_base 0",
            tiny(1, &[("llama.rope.freq_base", Meta::F32(0.0))]),
            &["Unsupported", "freq_base"],
        ),
        (
            "rope.freq_base negative",
            tiny(1, &[("llama.rope.freq_base", Meta::F32(-1.0))]),
            &["Unsupported", "freq_base"],
        ),
        (
            "rope.freq_base infinite",
            tiny(1, &[("llama.rope.freq_base", Meta::F32(f32::INFINITY))]),
            &["Unsupported", "freq_base"],
        ),
        (
            "rope.freq_base a string",
            tiny(1, &[("llama.rope.freq_base", Meta::Str("10000"))]),
            &["Unsupported", "freq_base"],
        ),
        (
            "rms epsilon NaN",
            tiny(
                1,
                &[(
                    "llama.attention.layer_norm_rms_epsilon",
                    Meta::F32(f32::NAN),
                )],
            ),
            &["Unsupported", "epsilon"],
        ),
        (
            "rms epsilon negative",
            tiny(
                1,
                &[("llama.attention.layer_norm_rms_epsilon", Meta::F32(-1e-5))],
            ),
            &["Unsupported", "epsilon"],
        ),
        (
            "heads that do not divide the embedding",
            tiny(1, &[("llama.attention.head_count", Meta::U32(3))]),
            &["Unsupported", "divide"],
        ),
        (
            "zero heads",
            tiny(1, &[("llama.attention.head_count", Meta::U32(0))]),
            &["Unsupported"],
        ),
        (
            "zero key/value heads",
            tiny(1, &[("llama.attention.head_count_kv", Meta::U32(0))]),
            &["Unsupported"],
        ),
        (
            "key/value heads that do not divide the heads",
            tiny(1, &[("llama.attention.head_count_kv", Meta::U32(3))]),
            &["Unsupported", "divide"],
        ),
        (
            "an odd RoPE dimension count",
            tiny(1, &[("llama.rope.dimension_count", Meta::U32(3))]),
            &["Unsupported", "rope"],
        ),
        (
            "RoPE dimensions above the head size",
            tiny(1, &[("llama.rope.dimension_count", Meta::U32(64))]),
            &["Unsupported", "rope"],
        ),
        (
            "an embedding length the tensors do not have",
            tiny(1, &[("llama.embedding_length", Meta::U32(16))]),
            &["Unsupported", "shape"],
        ),
        (
            "a feed-forward length the tensors do not have",
            tiny(1, &[("llama.feed_forward_length", Meta::U32(32))]),
            &["Unsupported", "shape"],
        ),
        (
            "a vocab_size the embedding does not have",
            tiny(1, &[("llama.vocab_size", Meta::U32(6))]),
            &["Unsupported", "shape"],
        ),
        (
            "an architecture wring does not run",
            tiny(1, &[("general.architecture", Meta::Str("gpt2"))]),
            &["Unsupported", "architecture"],
        ),
        (
            "no architecture",
            tiny(1, &[("general.architecture", Meta::U32(1))]),
            &["Unsupported", "architecture"],
        ),
    ] {
        c.push(case(what, bytes, expect));
    }
    c.extend(family_cases());
    // A block missing a tensor, and a tensor of the wrong rank.
    let meta = [
        ("general.architecture", Meta::Str("llama")),
        ("llama.embedding_length", Meta::U32(8)),
        ("llama.attention.head_count", Meta::U32(2)),
        ("llama.feed_forward_length", Meta::U32(16)),
        ("llama.block_count", Meta::U32(1)),
        ("llama.context_length", Meta::U32(64)),
        ("llama.vocab_size", Meta::U32(5)),
    ];
    for (what, bytes, expect) in [
        (
            "a model with no blocks' tensors but block_count 1",
            gguf(&meta, &[("token_embd.weight".into(), vec![8, 5])]),
            &["Unsupported", "block_count"][..],
        ),
        (
            "a model missing blk.0.ffn_down",
            gguf(
                &meta,
                &[
                    ("token_embd.weight".into(), vec![8, 5]),
                    ("output_norm.weight".into(), vec![8]),
                    ("blk.0.attn_norm.weight".into(), vec![8]),
                ],
            ),
            &["Unsupported", "missing"],
        ),
    ] {
        let n = bytes.len();
        c.push(Case::new("gguf", what, n, expect, move || {
            load_model(&bytes)
        }));
    }
    c.push(case(
        "context_length 2^40",
        tiny(1, &[("llama.context_length", Meta::U64(1 << 40))]),
        &["Unsupported", "context_length", "plausible"],
    ));
    // A context whose KV cache would not fit: refused with the numbers before any allocation (five
    // blocks of 8 key/value values per position at 16,777,215 positions are 5 GiB in f32).
    let huge = tiny(5, &[("llama.context_length", Meta::U32(16_777_215))]);
    let n = huge.len();
    c.push(Case::new(
        "gguf",
        "context_length 16777215 requested in full",
        n,
        &["16777215 positions", "GiB"],
        move || load(&huge, 16_777_215),
    ));
    c.push(Case::new(
        "gguf",
        "SmolLM2's cache shape at 170,000 positions (7.5 GiB)",
        0,
        &["170000 positions", "GiB"],
        || {
            let mut cfg = config(tiny(1, &[])).map_err(typed)?;
            (cfg.n_layers, cfg.n_kv_heads, cfg.head_dim) = (30, 3, 64);
            check_kv_budget(&cfg, 170_000, wring::llm::KvMode::F32, 4 << 30).map_err(typed)
        },
    ));
    c
}

/// The families beside llama: each one's own tensors and metadata wrong in the ways a converter or a
/// hand-edited file gets them wrong, refused by name before any allocation; a well-formed Phi-3 (fused
/// tensors) and Qwen2 (biases) load.
fn family_cases() -> Vec<Case> {
    fn t(name: &str, dims: &[u64]) -> (String, Vec<u64>) {
        (name.to_string(), dims.to_vec())
    }
    // Phi-3's fused q/k/v [8, 8 + 2 * 8] and gate/up [8, 2 * 16] in place of the separate tensors.
    let phi3 = |qkv: u64, up: u64| {
        vec![
            t("blk.0.attn_qkv.weight", &[8, qkv]),
            t("blk.0.attn_q.weight", &[]),
            t("blk.0.attn_k.weight", &[]),
            t("blk.0.attn_v.weight", &[]),
            t("blk.0.ffn_gate.weight", &[]),
            t("blk.0.ffn_up.weight", &[8, up]),
        ]
    };
    let biases = |q: u64| {
        vec![
            t("blk.0.attn_q.bias", &[q]),
            t("blk.0.attn_k.bias", &[8]),
            t("blk.0.attn_v.bias", &[8]),
        ]
    };
    // Gemma's norms after the attention and the feed-forward block.
    fn gemma_norms() -> Vec<(String, Vec<u64>)> {
        vec![
            t("blk.0.post_attention_norm.weight", &[8]),
            t("blk.0.post_ffw_norm.weight", &[8]),
        ]
    }
    let mut c = vec![
        Case::control("gguf", "a tiny Gemma 2 (control)", 0, || {
            load(&tiny_as("gemma2", 1, &[], &gemma_norms()), 64)
        }),
        // A window wider than the context is a global layer in all but name: llama.cpp takes it.
        Case::control(
            "gguf",
            "a Gemma 2 window wider than the context (control)",
            0,
            || {
                let meta = [("gemma2.attention.sliding_window", Meta::U32(16_777_215))];
                load(&tiny_as("gemma2", 1, &meta, &gemma_norms()), 64)
            },
        ),
        Case::control(
            "gguf",
            "a tiny Phi-3 with fused tensors (control)",
            0,
            move || load(&tiny_as("phi3", 1, &[], &phi3(24, 32)), 64),
        ),
        Case::control("gguf", "a tiny Qwen2 with biases (control)", 0, move || {
            load(&tiny_as("qwen2", 1, &[], &biases(8)), 64)
        }),
    ];
    for (what, bytes, expect) in [
        (
            "a Qwen2 q bias of the wrong width",
            tiny_as("qwen2", 1, &[], &biases(7)),
            &["Unsupported", "attn_q.bias", "shape"][..],
        ),
        (
            "a Qwen3 q norm without its k norm",
            tiny_as("qwen3", 1, &[], &[t("blk.0.attn_q_norm.weight", &[4])]),
            &["Unsupported", "attn_k_norm", "missing"],
        ),
        (
            "a Qwen3 q/k norm of the embedding's width, not the head's",
            tiny_as(
                "qwen3",
                1,
                &[],
                &[
                    t("blk.0.attn_q_norm.weight", &[8]),
                    t("blk.0.attn_k_norm.weight", &[8]),
                ],
            ),
            &["Unsupported", "attn_q_norm", "shape"],
        ),
        (
            "Qwen3 heads wider than the q projection (key_length 8 of 2 heads)",
            tiny_as(
                "qwen3",
                1,
                &[("qwen3.attention.key_length", Meta::U32(8))],
                &[],
            ),
            &["Unsupported", "attn_output", "shape"],
        ),
        (
            "a key_length of 16777215",
            tiny_as(
                "qwen3",
                1,
                &[("qwen3.attention.key_length", Meta::U32(16_777_215))],
                &[],
            ),
            &["Unsupported", "16777215"],
        ),
        (
            "value heads narrower than key heads",
            tiny_as(
                "qwen3",
                1,
                &[("qwen3.attention.value_length", Meta::U32(2))],
                &[],
            ),
            &["Unsupported", "value heads"],
        ),
        (
            "a Phi-3 fused q/k/v four rows short",
            tiny_as("phi3", 1, &[], &phi3(20, 32)),
            &["Unsupported", "attn_qkv", "shape"],
        ),
        (
            "a Phi-3 gate/up of one half only",
            tiny_as("phi3", 1, &[], &phi3(24, 16)),
            &["Unsupported", "ffn_up", "shape"],
        ),
        (
            "Llama 3 RoPE factors of the wrong length",
            tiny_as("llama", 1, &[], &[t("rope_freqs.weight", &[3])]),
            &["Unsupported", "rope_freqs", "shape"],
        ),
        (
            "Phi-3 long factors without the short ones",
            tiny_as("phi3", 1, &[], &{
                let mut v = phi3(24, 32);
                v.push(t("rope_factors_long.weight", &[2]));
                v
            }),
            &["Unsupported", "rope_factors_short", "missing"],
        ),
        (
            "a LongRoPE original context of 0",
            tiny_as(
                "phi3",
                1,
                &[("phi3.rope.scaling.original_context_length", Meta::U32(0))],
                &{
                    let mut v = phi3(24, 32);
                    v.push(t("rope_factors_long.weight", &[2]));
                    v.push(t("rope_factors_short.weight", &[2]));
                    v
                },
            ),
            &["Unsupported", "original_context_length", "plausible"],
        ),
        (
            "RoPE scaling type yarn",
            tiny(1, &[("llama.rope.scaling.type", Meta::Str("yarn"))]),
            &["Unsupported", "yarn"],
        ),
        (
            "RoPE scaling type a number",
            tiny(1, &[("llama.rope.scaling.type", Meta::U32(2))]),
            &["Unsupported", "rope.scaling.type"],
        ),
        (
            "RoPE scaling factor 0",
            tiny(1, &[("llama.rope.scaling.factor", Meta::F32(0.0))]),
            &["Unsupported", "rope.scaling.factor"],
        ),
        (
            "RoPE attention factor NaN",
            tiny(
                1,
                &[("llama.rope.scaling.attn_factor", Meta::F32(f32::NAN))],
            ),
            &["Unsupported", "attn_factor"],
        ),
        (
            "a Gemma 2 model without its post-norms",
            tiny_as("gemma2", 1, &[], &[]),
            &["Unsupported", "post_attention_norm", "missing"],
        ),
        (
            "a negative attention soft-cap",
            tiny_as(
                "gemma2",
                1,
                &[("gemma2.attn_logit_softcapping", Meta::F32(-5.0))],
                &gemma_norms(),
            ),
            &["Unsupported", "attn_logit_softcapping"],
        ),
        (
            "an infinite logit soft-cap",
            tiny_as(
                "gemma3",
                1,
                &[("gemma3.final_logit_softcapping", Meta::F32(f32::INFINITY))],
                &gemma_norms(),
            ),
            &["Unsupported", "final_logit_softcapping"],
        ),
        (
            "a sliding window of 0",
            tiny_as(
                "gemma2",
                1,
                &[("gemma2.attention.sliding_window", Meta::U32(0))],
                &gemma_norms(),
            ),
            &["Unsupported", "sliding_window"],
        ),
        (
            "a window pattern of 0",
            tiny_as(
                "gemma3",
                1,
                &[
                    ("gemma3.attention.sliding_window", Meta::U32(4)),
                    ("gemma3.attention.sliding_window_pattern", Meta::U32(0)),
                ],
                &gemma_norms(),
            ),
            &["Unsupported", "sliding_window_pattern"],
        ),
        (
            "a per-layer window pattern of the wrong length",
            tiny_as(
                "gemma3",
                1,
                &[
                    ("gemma3.attention.sliding_window", Meta::U32(4)),
                    (
                        "gemma3.attention.sliding_window_pattern",
                        Meta::U32s(vec![1, 0]),
                    ),
                ],
                &gemma_norms(),
            ),
            &["Unsupported", "sliding_window_pattern"],
        ),
        (
            "a Gemma 1 model",
            tiny_as("gemma", 1, &[], &[]),
            &["Unsupported", "gemma", "docs/src/model-families.md"],
        ),
        (
            "the architecture `mistral`, which llama.cpp never writes",
            tiny_as("mistral", 1, &[], &[]),
            &[
                "Unsupported",
                "mistral",
                "llama",
                "docs/src/model-families.md",
            ],
        ),
    ] {
        c.push(case(what, bytes, expect));
    }
    c
}

/// Tokenizer metadata checked against the vocabulary: type arrays of the wrong length, element type or
/// values, special ids outside the vocabulary (-1, 2^32, 2^40, the vocabulary size), no merges,
/// duplicate tokens.
fn tokenizer_cases() -> Vec<Case> {
    let mut c = Vec::new();
    for (what, over, needle) in [
        (
            "token_type shorter than the vocabulary",
            ("tokenizer.ggml.token_type", Meta::U32s(vec![1, 1])),
            "entries",
        ),
        (
            "token_type longer than the vocabulary",
            ("tokenizer.ggml.token_type", Meta::U32s(vec![1; 9])),
            "entries",
        ),
        (
            "token_type of strings",
            ("tokenizer.ggml.token_type", Meta::Strs(vec!["x".into(); 5])),
            "token type",
        ),
        (
            "token_type out of range",
            (
                "tokenizer.ggml.token_type",
                Meta::U32s(vec![1, 1, 1, 99, 3]),
            ),
            "token type",
        ),
        (
            "token_type not an array",
            ("tokenizer.ggml.token_type", Meta::U32(1)),
            "not an array",
        ),
        (
            "eos id -1",
            ("tokenizer.ggml.eos_token_id", Meta::I32(-1)),
            "eos_token_id",
        ),
        (
            "eos id 2^32",
            ("tokenizer.ggml.eos_token_id", Meta::U64(1 << 32)),
            "eos_token_id",
        ),
        (
            "bos id 2^40",
            ("tokenizer.ggml.bos_token_id", Meta::U64(1 << 40)),
            "bos_token_id",
        ),
        (
            "bos id equal to the vocabulary size",
            ("tokenizer.ggml.bos_token_id", Meta::U32(5)),
            "bos_token_id",
        ),
        (
            "padding id -1",
            ("tokenizer.ggml.padding_token_id", Meta::I32(-1)),
            "padding_token_id",
        ),
        (
            "an empty merges list",
            ("tokenizer.ggml.merges", Meta::Strs(vec![])),
            "merges",
        ),
        (
            "a merge of tokens not in the vocabulary",
            ("tokenizer.ggml.merges", Meta::Strs(vec!["x y".into()])),
            "out of vocabulary",
        ),
        (
            "duplicate tokens",
            (
                "tokenizer.ggml.tokens",
                Meta::Strs(["a", "b", "ab", "a", "<|end|>"].map(String::from).to_vec()),
            ),
            "distinct",
        ),
        (
            "an empty vocabulary",
            ("tokenizer.ggml.tokens", Meta::Strs(vec![])),
            "token",
        ),
        (
            "a tokenizer model wring does not know",
            ("tokenizer.ggml.model", Meta::Str("rwkv")),
            "rwkv",
        ),
    ] {
        let bytes = tiny(1, &[over]);
        let n = bytes.len();
        c.push(Case::new("gguf tokenizer", what, n, &[needle], move || {
            let g = Gguf::from_vec(bytes.clone()).map_err(typed)?;
            GgufTokenizer::from_gguf(&g).map(|_| ()).map_err(typed)
        }));
    }
    // A SentencePiece (`llama`) tokenizer over the same five tokens: its scores are what it merges by.
    let spm = |scores: Option<Meta>| {
        let mut over = vec![
            ("tokenizer.ggml.model", Meta::Str("llama")),
            (
                "tokenizer.ggml.tokens",
                Meta::Strs(
                    ["\u{2581}", "a", "b", "ab", "<|end|>"]
                        .map(String::from)
                        .to_vec(),
                ),
            ),
        ];
        over.extend(scores.map(|s| ("tokenizer.ggml.scores", s)));
        tiny(1, &over)
    };
    let encodes = |bytes: Vec<u8>| {
        move || {
            let g = Gguf::from_vec(bytes.clone()).map_err(typed)?;
            let tok = GgufTokenizer::from_gguf(&g).map_err(typed)?;
            tok.encode("ab c <|end|> \u{1F999}")
                .map(|_| ())
                .map_err(typed)
        }
    };
    let valid = spm(Some(Meta::F32s(vec![0.0, -1.0, -0.5, -2.0, 0.0])));
    c.push(Case::control(
        "gguf tokenizer",
        "SentencePiece scores (control)",
        valid.len(),
        move || {
            let g = Gguf::from_vec(valid.clone()).map_err(typed)?;
            let tok = GgufTokenizer::from_gguf(&g).map_err(typed)?;
            tok.encode("ab<|end|>ab").map(|_| ()).map_err(typed)
        },
    ));
    // A character no token holds, in a vocabulary with neither byte tokens nor an unknown token.
    let no_bytes = spm(Some(Meta::F32s(vec![0.0; 5])));
    c.push(Case::new(
        "gguf tokenizer",
        "a SentencePiece text with a character no token holds",
        no_bytes.len(),
        &["no token"],
        encodes(no_bytes),
    ));
    for (what, scores, needle) in [
        ("SentencePiece without scores", None, "scores"),
        (
            "SentencePiece scores of the wrong length",
            Some(Meta::F32s(vec![0.0; 3])),
            "3 entries for 5 tokens",
        ),
        (
            "a NaN SentencePiece score",
            Some(Meta::F32s(vec![0.0, f32::NAN, 0.0, 0.0, 0.0])),
            "finite",
        ),
        (
            "SentencePiece scores as strings",
            Some(Meta::Strs(
                ["1", "2", "3", "4", "5"].map(String::from).to_vec(),
            )),
            "not a number",
        ),
    ] {
        let bytes = spm(scores);
        let n = bytes.len();
        c.push(Case::new(
            "gguf tokenizer",
            what,
            n,
            &[needle],
            encodes(bytes),
        ));
    }
    c
}

pub fn cases() -> Vec<Case> {
    let mut c = parser_cases();
    c.extend(model_cases());
    c.extend(tokenizer_cases());
    c
}
