//! llama.cpp's SentencePiece tokenizer (`tokenizer.ggml.model = llama`: Llama 2, Mistral, Phi-3): the text
//! gets a leading space (`add_space_prefix`, on unless the file says otherwise), spaces become U+2581, and
//! the characters are merged pairwise, always the adjacent pair whose merged text is the token with the
//! highest score (the leftmost among equals), until no adjacent pair forms a token; a character that is
//! no token comes out as its bytes' `<0xXX>` tokens. Control and user-defined tokens are matched whole in
//! the text first, as the byte-level tokenizer's added tokens are. Written after llama-vocab.cpp's
//! `llm_tokenizer_spm_session`, which the tests match id for id on llama.cpp's own test texts.

use std::collections::{BinaryHeap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};

use crate::tokenizer::TokenizerError;

/// A SentencePiece vocabulary with its scores.
#[derive(Debug, Clone)]
pub struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    index: HashMap<String, u32>,
    /// The `<0xXX>` token of each byte, where the vocabulary has it.
    bytes: Vec<Option<u32>>,
    /// Control and user-defined tokens, found in one pass over the text (the leftmost first, the longest
    /// where two start together), and the id of each pattern.
    specials: AhoCorasick,
    special_ids: Vec<u32>,
    /// Token types (llama.cpp's: 3 control, 6 byte).
    types: Vec<u64>,
    add_space_prefix: bool,
    unknown: Option<u32>,
}

/// A candidate merge: the symbols `left` and `right` (adjacent) form a token of `score`.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged text, to tell a stale candidate (one side merged since) from a live one.
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// The highest score first, then the leftmost (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A run of text during merging: bytes `start..start + len` of the escaped text, and its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// The vocabulary `tokens` with `scores` and llama.cpp token `types` (checked by the caller to be one
    /// per token); `unknown` stands for a byte the vocabulary has no token for.
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<u64>,
        add_space_prefix: bool,
        unknown: Option<u32>,
    ) -> Result<Spm, TokenizerError> {
        if scores.len() != tokens.len() {
            return Err(TokenizerError::Metadata(format!(
                "tokenizer.ggml.scores has {} entries for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(TokenizerError::Metadata(format!(
                "tokenizer.ggml.scores[{i}] = {} is not a finite score",
                scores[i]
            )));
        }
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // The first of two equal texts keeps the text's id, as llama.cpp's map insertion does.
            index.entry(t.clone()).or_insert(i as u32);
        }
        let bytes = (0..=255u8)
            .map(|b| index.get(&format!("<0x{b:02X}>")).copied())
            .collect();
        let (texts, special_ids): (Vec<&str>, Vec<u32>) = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, ty))| (**ty == 3 || **ty == 4) && !t.is_empty())
            .map(|(i, (t, _))| (t.as_str(), i as u32))
            .unzip();
        let specials = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&texts)
            .map_err(|e| TokenizerError::Library(e.to_string()))?;
        Ok(Spm {
            tokens,
            scores,
            index,
            bytes,
            specials,
            special_ids,
            types,
            add_space_prefix,
            unknown,
        })
    }

    /// Tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The ids of `text` (no bos or eos): special tokens matched whole, the text between them merged. A
    /// character no token holds, in a vocabulary without its bytes' tokens or an unknown token, is an
    /// error rather than dropped.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        // Every raw fragment starts the text or follows a special token, so each gets the space prefix
        // (llama.cpp's `is_prev_special`).
        let mut last = 0;
        for m in self.specials.find_iter(text) {
            if m.start() > last {
                self.encode_raw(&text[last..m.start()], &mut out)?;
            }
            out.push(self.special_ids[m.pattern().as_usize()]);
            last = m.end();
        }
        if last < text.len() {
            self.encode_raw(&text[last..], &mut out)?;
        }
        Ok(out)
    }

    fn encode_raw(&self, raw: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let mut text = String::with_capacity(raw.len() + 4);
        if self.add_space_prefix {
            text.push(' ');
        }
        text.push_str(raw);
        let text = text.replace(' ', "\u{2581}");
        let mut symbols: Vec<Symbol> = Vec::new();
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            let (l, r) = (symbols[left], symbols[right]);
            let merged = &text[l.start..r.start + r.len];
            let id = *self.index.get(merged)?;
            Some(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                size: merged.len(),
            })
        };
        for i in 1..symbols.len() {
            queue.extend(bigram(&symbols, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // A side merged since the candidate was queued: stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = symbols[b.left].prev {
                queue.extend(bigram(&symbols, p, b.left));
            }
            if let Some(n) = symbols[b.left].next {
                queue.extend(bigram(&symbols, b.left, n));
            }
        }
        let mut at = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.index.get(piece) {
                Some(&id) => out.push(id),
                // Only a lone character can be no token (merges only make tokens): its bytes.
                None => {
                    for b in piece.bytes() {
                        out.push(self.bytes[b as usize].or(self.unknown).ok_or_else(|| {
                            TokenizerError::Library(format!(
                                "{piece:?} is no token, and the vocabulary has neither a token for byte \
                                 0x{b:02X} nor an unknown token"
                            ))
                        })?);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }

    /// The text of `ids`, piece by piece as llama.cpp's `token_to_piece` gives it: U+2581 back to spaces,
    /// byte tokens as their bytes, special tokens as their text. A leading space stays: generated text
    /// continues its prompt (" Paris" after "The capital of France is"). Ids past the vocabulary are an
    /// error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            let t = self.tokens.get(id as usize).ok_or_else(|| {
                TokenizerError::Library(format!(
                    "token {id} is outside the {}-token vocabulary",
                    self.tokens.len()
                ))
            })?;
            if self.types[id as usize] == 6
                && let Some(b) = t
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(b);
                continue;
            }
            bytes.extend_from_slice(t.replace('\u{2581}', " ").as_bytes());
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
