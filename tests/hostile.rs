//! Hostile inputs through the library's entry points: files that pass the parser but not the model, and
//! numbers that must be refused before anything is sized by them. Each case names the error it must give;
//! none may panic. (The start of issue 12's corpus: more formats and a fuzzing harness are to come.)

use wring::gguf::Gguf;
use wring::llm::{GgufTokenizer, LlamaConfig, LlmError, check_kv_budget};

/// A GGUF metadata value as the builder writes it.
#[derive(Clone)]
enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strs(Vec<String>),
    I32(i32),
    U64(u64),
    U32s(Vec<u32>),
}

/// Writes a little GGUF (version 3): the metadata given and F32 tensors of the given dims, zero-filled.
fn gguf(meta: &[(&str, Meta)], tensors: &[(String, Vec<u64>)]) -> Vec<u8> {
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
fn tiny(blocks: usize, overrides: &[(&str, Meta)]) -> Vec<u8> {
    let mut meta: Vec<(&str, Meta)> = vec![
        ("general.architecture", Meta::Str("llama")),
        ("llama.embedding_length", Meta::U32(8)),
        ("llama.attention.head_count", Meta::U32(2)),
        ("llama.feed_forward_length", Meta::U32(16)),
        ("llama.block_count", Meta::U32(blocks as u32)),
        ("llama.context_length", Meta::U32(64)),
        ("llama.rope.freq_base", Meta::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
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
    gguf(&meta, &t)
}

fn config(bytes: Vec<u8>) -> Result<LlamaConfig, LlmError> {
    LlamaConfig::from_gguf(&Gguf::from_vec(bytes)?)
}

#[test]
fn a_tiny_valid_model_loads() {
    let c = config(tiny(2, &[])).unwrap();
    assert_eq!((c.n_layers, c.n_embd, c.head_dim, c.vocab), (2, 8, 4, 5));
    let t = GgufTokenizer::from_gguf(&Gguf::from_vec(tiny(1, &[])).unwrap()).unwrap();
    assert_eq!(t.encode("ab").unwrap(), [2]);
    assert_eq!((t.eos, t.stop_tokens.as_slice()), (Some(4), &[4][..]));
}

/// Tokenizer metadata checked against the vocabulary: type arrays of the wrong length, element type or
/// values, special ids outside the vocabulary (-1, 2^32, 2^40, the vocabulary size), no merges,
/// duplicate tokens.
#[test]
fn tokenizer_metadata_is_checked_against_the_vocabulary() {
    let cases: Vec<(&str, (&str, Meta), &str)> = vec![
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
            "an empty merges list",
            ("tokenizer.ggml.merges", Meta::Strs(vec![])),
            "merges",
        ),
        (
            "duplicate tokens",
            (
                "tokenizer.ggml.tokens",
                Meta::Strs(["a", "b", "ab", "a", "<|end|>"].map(String::from).to_vec()),
            ),
            "distinct",
        ),
    ];
    for (what, over, needle) in cases {
        let g = Gguf::from_vec(tiny(1, &[over])).unwrap();
        let e = GgufTokenizer::from_gguf(&g).expect_err(what).to_string();
        assert!(e.contains(needle), "{what}: {e}");
    }
}

/// Metadata that passes the parser but not the model: each is a typed error naming the problem, found
/// before anything is sized by it.
#[test]
fn model_metadata_is_checked_against_the_model() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "block_count far above the blocks present",
            tiny(2, &[("llama.block_count", Meta::U32(16_777_215))]),
            "block_count",
        ),
        (
            "block_count one short of the blocks present",
            tiny(2, &[("llama.block_count", Meta::U32(1))]),
            "block_count",
        ),
        (
            "rope.freq_base 0",
            tiny(1, &[("llama.rope.freq_base", Meta::F32(0.0))]),
            "freq_base",
        ),
        (
            "rope.freq_base negative",
            tiny(1, &[("llama.rope.freq_base", Meta::F32(-1.0))]),
            "freq_base",
        ),
        (
            "rope.freq_base infinite",
            tiny(1, &[("llama.rope.freq_base", Meta::F32(f32::INFINITY))]),
            "freq_base",
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
            "epsilon",
        ),
        (
            "rms epsilon negative",
            tiny(
                1,
                &[("llama.attention.layer_norm_rms_epsilon", Meta::F32(-1e-5))],
            ),
            "epsilon",
        ),
        (
            "heads that do not divide",
            tiny(1, &[("llama.attention.head_count", Meta::U32(3))]),
            "divide",
        ),
        (
            "an architecture wring does not run",
            tiny(1, &[("general.architecture", Meta::Str("gpt2"))]),
            "architecture",
        ),
    ];
    for (what, bytes, needle) in cases {
        let start = std::time::Instant::now();
        let e = config(bytes).expect_err(what).to_string();
        assert!(e.contains(needle), "{what}: {e}");
        assert!(
            start.elapsed().as_secs_f64() < 1.0,
            "{what} took {:?}",
            start.elapsed()
        );
    }
}

/// A context whose KV cache would not fit is refused with the numbers, before any allocation: SmolLM2's
/// shape (30 layers of 3 key/value heads of 64) at 170,000 positions is 7.5 GiB.
#[test]
fn a_context_beyond_the_kv_budget_is_refused() {
    let mut c = config(tiny(1, &[])).unwrap();
    (c.n_layers, c.n_kv_heads, c.head_dim) = (30, 3, 64);
    let e = check_kv_budget(&c, 170_000, 4 << 30)
        .unwrap_err()
        .to_string();
    assert!(e.contains("170000 positions") && e.contains("GiB"), "{e}");
    assert!(check_kv_budget(&c, 8192, 4 << 30).is_ok());
}

/// A WAV with a header as given and a few bytes of data.
fn wav(channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut fmt = Vec::new();
    for v in [1u16, channels] {
        fmt.extend_from_slice(&v.to_le_bytes());
    }
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate.wrapping_mul(u32::from(block))).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    let mut body = b"WAVEfmt ".to_vec();
    body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    body.extend_from_slice(&fmt);
    body.extend_from_slice(b"data");
    body.extend_from_slice(&data_len.to_le_bytes());
    body.extend_from_slice(&[0, 1].repeat(8));
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A PNG whose header declares `w` x `h` RGB pixels, with almost no data.
fn png(w: u32, h: u32) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crate::codec::crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // A stored (uncompressed) zlib block of ten zero bytes.
    chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 10, 0, 0xF5, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A, 0, 0x01,
        ],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Audio and image files from strangers: a WAV whose data chunk claims 4 GB (read lazily, so nothing is
/// sized by the claim), zero channels, a PNG declaring 100,000 x 100,000 pixels (the image crate's
/// allocation limit): each an error within a second, never a panic or an abort. A WAV at 0 Hz reads, and
/// the encoder refuses it.
#[test]
fn audio_and_image_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("wring-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "huge-data.wav",
            wav(1, 16_000, 16, 0xFFFF_FF00),
            "enough bytes",
        ),
        ("no-channels.wav", wav(0, 16_000, 16, 16), "zero channels"),
        ("zero-bits.wav", wav(1, 16_000, 0, 16), "bits per sample"),
        ("huge.png", png(100_000, 100_000), "Memory limit"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let start = std::time::Instant::now();
        let r = if name.ends_with(".wav") {
            wring::codec::io::read_wav(&path).map(|_| ())
        } else {
            wring::codec::io::read_image(&path).map(|_| ())
        };
        let e = r.expect_err(name).to_string();
        assert!(e.contains(needle), "{name}: {e}");
        assert!(
            start.elapsed().as_secs_f64() < 1.0,
            "{name} took {:?}",
            start.elapsed()
        );
    }
    let path = dir.join("zero-rate.wav");
    std::fs::write(&path, wav(1, 0, 16, 16)).unwrap();
    if let Ok(a) = wring::codec::io::read_wav(&path) {
        let ctx = crate::harness::ctx();
        let e = wring::codec::encode_audio(ctx, &a, &wring::codec::Options::default());
        assert!(e.is_err(), "audio at 0 Hz was encoded");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
