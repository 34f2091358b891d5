//! The model's tokenizer, built from the GGUF's own vocabulary.
//!
//! GPT-2-style byte-level BPE (`tokenizer.ggml.model = gpt2`, through the `tokenizers` crate): the
//! vocabulary and merges come straight from the file; the pre-tokenizer follows `tokenizer.ggml.pre` the way
//! llama.cpp maps it (smollm, gpt2, llama-bpe for Llama 3, qwen2). SentencePiece (`llama`: Llama 2, Mistral,
//! Phi-3): llama.cpp's merge by scores ([`crate::spm`]). In both, control tokens (token type 3) and
//! user-defined ones (4) are matched whole in the text, as llama.cpp does when it parses special tokens;
//! `add_bos_token` / `add_eos_token` are honoured.

use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};
use wring_gguf::{Gguf, Value};

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Metadata missing or of the wrong shape.
    #[error("tokenizer metadata: {0}")]
    Metadata(String),
    /// A tokenizer kind wring does not build yet.
    #[error(
        "tokenizer `{0}` is not supported yet (wring builds gpt2-style byte-level BPE and llama's SentencePiece)"
    )]
    Unsupported(String),
    /// The `tokenizers` crate refused.
    #[error("tokenizer: {0}")]
    Library(String),
}

/// Llama 3's pre-tokenizer split (llama.cpp's LLAMA_VOCAB_PRE_TYPE_LLAMA3): contractions, letters with one
/// leading non-letter, numbers of up to three digits, punctuation runs, newlines, spaces.
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's (LLAMA_VOCAB_PRE_TYPE_QWEN2): Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer itself: byte-level BPE through the `tokenizers` crate, or llama.cpp's SentencePiece.
enum Inner {
    // Boxed: the `tokenizers` tokenizer is 1.5 kB, the SentencePiece one a few words of handles.
    Hf(Box<Tokenizer>),
    Spm(crate::spm::Spm),
}

/// A tokenizer with the model's special-token conventions.
pub struct GgufTokenizer {
    inner: Inner,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// Prepend `bos` when encoding a prompt.
    pub add_bos: bool,
    /// Append `eos` when encoding a prompt.
    pub add_eos: bool,
    /// Tokens that end generation (eos, and control tokens such as `<|im_end|>`).
    pub stop_tokens: Vec<u32>,
    /// The chat template, when the file has one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn strings<'a>(g: &'a Gguf, key: &str) -> Result<Vec<&'a str>, TokenizerError> {
    g.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| TokenizerError::Metadata(format!("{key} is missing or not an array")))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| TokenizerError::Metadata(format!("{key} holds a non-string")))
        })
        .collect()
}

/// A special token id: absent is fine, but present it must be an integer naming a token of the
/// vocabulary (ids of -1, 2^32 or the vocabulary size are refused, not ignored).
fn token_id(g: &Gguf, key: &str, vocab: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = g.get(key) else {
        return Ok(None);
    };
    v.as_u64()
        .filter(|&id| id < vocab as u64)
        .map(|id| Some(id as u32))
        .ok_or_else(|| {
            TokenizerError::Metadata(format!(
                "{key} = {v:?} is not a token id of the {vocab}-token vocabulary"
            ))
        })
}

/// Whether llama.cpp adds a bos token when the file does not say (`llama_vocab::impl::load`): always for
/// SentencePiece, and for the byte-level pre-tokenizers of Llama 3 and a few others; Qwen2's and GPT-2's
/// do not.
fn adds_bos_by_default(g: &Gguf, model: &str) -> bool {
    const PRE_WITH_BOS: &[&str] = &[
        "llama3",
        "llama-v3",
        "llama-bpe",
        "falcon3",
        "falcon-h1",
        "pixtral",
        "midm-2.0",
        "lfm2",
        "jina-v5-nano",
        "tekken",
        "chameleon",
    ];
    model == "llama"
        || g.get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .is_some_and(|p| PRE_WITH_BOS.contains(&p))
}

fn flag(g: &Gguf, key: &str, default: bool) -> bool {
    match g.get(key) {
        Some(Value::Bool(b)) => *b,
        _ => default,
    }
}

impl GgufTokenizer {
    /// Builds the tokenizer a GGUF file describes.
    pub fn from_gguf(g: &Gguf) -> Result<GgufTokenizer, TokenizerError> {
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if model != "gpt2" && model != "llama" {
            return Err(TokenizerError::Unsupported(model.into()));
        }
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        // llama.cpp's token types: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
        // 6 byte. One per token, each an integer in that range.
        let types: Vec<u64> = match g.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => {
                let a = v.as_array().ok_or_else(|| {
                    TokenizerError::Metadata("tokenizer.ggml.token_type is not an array".into())
                })?;
                if a.len() != tokens.len() {
                    return Err(TokenizerError::Metadata(format!(
                        "tokenizer.ggml.token_type has {} entries for {} tokens",
                        a.len(),
                        tokens.len()
                    )));
                }
                a.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_u64().filter(|&t| t <= 6).ok_or_else(|| {
                            TokenizerError::Metadata(format!(
                                "tokenizer.ggml.token_type[{i}] = {v:?} is not a token type (0 to 6)"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let inner = if model == "llama" {
            spm(g, &tokens, types.clone())?
        } else {
            byte_level_bpe(g, &tokens, &types)?
        };
        let stop_tokens_of_type = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (tok, t))| {
                **t == 3 && (tok.ends_with("end|>") || tok.contains("endoftext"))
            })
            .map(|(i, _)| i as u32);
        let mut stop_tokens: Vec<u32> = stop_tokens_of_type.collect();
        // Every special id the file names is checked, including those wring does not use itself
        // (padding, unknown, separator, ...): a file whose ids point outside its vocabulary is broken,
        // and another reader of the same file would index out of bounds with them.
        for (key, _) in &g.metadata {
            if key.starts_with("tokenizer.ggml.") && key.ends_with("_token_id") {
                token_id(g, key, tokens.len())?;
            }
        }
        let eos = token_id(g, "tokenizer.ggml.eos_token_id", tokens.len())?;
        if let Some(e) = eos
            && !stop_tokens.contains(&e)
        {
            stop_tokens.push(e);
        }
        Ok(GgufTokenizer {
            inner,
            bos: token_id(g, "tokenizer.ggml.bos_token_id", tokens.len())?,
            eos,
            add_bos: flag(
                g,
                "tokenizer.ggml.add_bos_token",
                adds_bos_by_default(g, model),
            ),
            add_eos: flag(g, "tokenizer.ggml.add_eos_token", false),
            stop_tokens,
            chat_template: g
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// The SentencePiece tokenizer of a `llama` tokenizer model: its scores (one finite number per token) and
/// `add_space_prefix` (on unless the file turns it off, as llama.cpp reads it).
fn spm(g: &Gguf, tokens: &[&str], types: Vec<u64>) -> Result<Inner, TokenizerError> {
    let scores: Vec<f32> = g
        .get("tokenizer.ggml.scores")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TokenizerError::Metadata(
                "tokenizer.ggml.scores is missing or not an array: a SentencePiece tokenizer needs its scores"
                    .into(),
            )
        })?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64().map(|x| x as f32).ok_or_else(|| {
                TokenizerError::Metadata(format!("tokenizer.ggml.scores[{i}] = {v:?} is not a number"))
            })
        })
        .collect::<Result<_, _>>()?;
    let unknown = token_id(g, "tokenizer.ggml.unknown_token_id", tokens.len())?;
    let spm = crate::spm::Spm::new(
        tokens.iter().map(|t| t.to_string()).collect(),
        scores,
        types,
        flag(g, "tokenizer.ggml.add_space_prefix", true),
        unknown,
    )?;
    Ok(Inner::Spm(spm))
}

/// The byte-level BPE of a `gpt2` tokenizer model: its merges and pre-tokenizer, control and
/// user-defined tokens matched whole in the text.
fn byte_level_bpe(g: &Gguf, tokens: &[&str], types: &[u64]) -> Result<Inner, TokenizerError> {
    let merges = strings(g, "tokenizer.ggml.merges")?;
    if merges.is_empty() {
        return Err(TokenizerError::Metadata(
            "tokenizer.ggml.merges is empty: a gpt2 tokenizer needs its merges".into(),
        ));
    }
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(TokenizerError::Metadata(format!(
            "tokenizer.ggml.tokens has {} tokens but only {} distinct ones",
            tokens.len(),
            vocab.len()
        )));
    }
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::Metadata(format!("merge `{m}` is not two tokens")))
        })
        .collect::<Result<_, _>>()?;
    let pre = g
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    // llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM splits digits one by one, then applies GPT-2's regex;
    // "gpt2" and "default" apply GPT-2's regex alone; Llama 3 and Qwen2 split by their own regexes
    // (llama-vocab.cpp's, which are the tokenizer.json ones with the case-insensitive contractions
    // spelled out) and then map bytes without GPT-2's regex. Llama 3's vocabulary also takes a word
    // that is a token whole, before any merge (llama.cpp's `ignore_merges`).
    let byte_level = ByteLevel::new(false, true, true);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Library(e.to_string()))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    let (pre_tokenizer, ignore_merges): (PreTokenizerWrapper, bool) = match pre {
        "smollm" => (
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            false,
        ),
        "gpt2" | "default" => (byte_level.into(), false),
        "llama3" | "llama-v3" | "llama-bpe" => (split(LLAMA3_SPLIT)?, true),
        "qwen2" | "deepseek-r1-qwen" => (split(QWEN2_SPLIT)?, false),
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "gpt2 with pre-tokenizer `{other}`"
            )));
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| TokenizerError::Library(e.to_string()))?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(tok, _)| AddedToken::from(tok.to_string(), true))
        .collect();
    inner.add_special_tokens(&specials);
    Ok(Inner::Hf(Box::new(inner)))
}

impl GgufTokenizer {
    /// Token ids of `text` alone: no bos or eos (llama.cpp's `add_special = false`).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match &self.inner {
            Inner::Hf(t) => {
                let enc = t
                    .encode(text, false)
                    .map_err(|e| TokenizerError::Library(e.to_string()))?;
                Ok(enc.get_ids().to_vec())
            }
            Inner::Spm(t) => t.encode(text),
        }
    }

    /// Token ids of `text`, with bos/eos added as the model's flags ask.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let body = self.encode_text(text)?;
        let mut ids = Vec::with_capacity(body.len() + 2);
        if self.add_bos
            && let Some(b) = self.bos
        {
            ids.push(b);
        }
        ids.extend_from_slice(&body);
        if self.add_eos
            && let Some(e) = self.eos
        {
            ids.push(e);
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match &self.inner {
            Inner::Hf(t) => t
                .decode(ids, false)
                .map_err(|e| TokenizerError::Library(e.to_string())),
            Inner::Spm(t) => t.decode(ids),
        }
    }

    /// The tokenizer of a Hugging Face `tokenizer.json`, with the special-token conventions given.
    pub fn from_json_file(
        path: &std::path::Path,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<GgufTokenizer, TokenizerError> {
        let inner =
            Tokenizer::from_file(path).map_err(|e| TokenizerError::Library(e.to_string()))?;
        Ok(GgufTokenizer {
            inner: Inner::Hf(Box::new(inner)),
            bos,
            eos,
            add_bos,
            add_eos: false,
            stop_tokens: eos.into_iter().collect(),
            chat_template: None,
        })
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Hf(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.len(),
        }
    }

    /// The Hugging Face `tokenizer.json` for this tokenizer (what `wring convert` writes beside the weights);
    /// a SentencePiece vocabulary has no such export yet.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        match &self.inner {
            Inner::Hf(t) => t
                .to_string(true)
                .map_err(|e| TokenizerError::Library(e.to_string())),
            Inner::Spm(_) => Err(TokenizerError::Unsupported(
                "llama (SentencePiece) export to tokenizer.json".into(),
            )),
        }
    }
}

/// Turns generated tokens into text as they arrive, handing out only whole characters: a byte-level token
/// can end inside a multi-byte character, which decodes as U+FFFD until the next token completes it.
///
/// With stop strings it also ends the text at the first one (which is not handed out), and holds back any
/// tail that could still grow into one, so a caller never prints text it would have to take back.
#[derive(Debug)]
pub struct TextStream<'a> {
    tokenizer: &'a GgufTokenizer,
    ids: Vec<u32>,
    /// Everything decoded so far (whole characters).
    text: String,
    /// Bytes of `text` handed out.
    emitted: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl<'a> TextStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a GgufTokenizer) -> TextStream<'a> {
        TextStream::with_stops(tokenizer, &[])
    }

    /// An empty stream that ends at the first of `stops` (empty strings are ignored).
    pub fn with_stops(tokenizer: &'a GgufTokenizer, stops: &[String]) -> TextStream<'a> {
        let stops = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        TextStream {
            tokenizer,
            ids: Vec::new(),
            text: String::new(),
            emitted: 0,
            stops,
            stopped: false,
        }
    }

    /// Adds a token; returns the text it completes (possibly empty). After a stop string nothing more is
    /// handed out.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        if self.stopped {
            return Ok(String::new());
        }
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{fffd}') || !text.starts_with(&self.text) {
            return Ok(String::new());
        }
        self.text = text;
        // A stop string may straddle the boundary of what was handed out only if it began in the held-back
        // tail, so searching from the emitted point is enough.
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.text[self.emitted..].find(s.as_str()))
            .min();
        let end = match first_stop {
            Some(at) => {
                self.stopped = true;
                self.emitted + at
            }
            None => self.text.len() - self.held_tail(),
        };
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        Ok(out)
    }

    /// The length of the longest tail of the text (after what was handed out) that is a proper prefix of a
    /// stop string.
    fn held_tail(&self) -> usize {
        let rest = &self.text[self.emitted..];
        let mut held = 0;
        for s in &self.stops {
            for (i, _) in rest.char_indices() {
                let tail = &rest[i..];
                if tail.len() < s.len() && s.starts_with(tail) {
                    held = held.max(tail.len());
                    break;
                }
            }
        }
        held
    }

    /// Whether a stop string ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text still held back (a tail that might have begun a stop string); call when generation ends.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// Tokens pushed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    /// The text handed out so far.
    pub fn text(&self) -> &str {
        &self.text[..self.emitted]
    }
}
