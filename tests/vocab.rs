//! The tokenizers of the model families people run, against llama.cpp's own: the vocabulary-only GGUFs and
//! test texts of llama.cpp's tests/test-tokenizer-0 (multilingual text, code, emoji, runs of spaces and
//! newlines), fetched by `.ci/fetch-vocab.sh` from the llama-cpp-python 0.3.36 source package. Each text's
//! ids (no bos or eos, special tokens not parsed: the test's `add_special = false`) equal the ids llama.cpp
//! recorded beside it (`.out`): byte-level BPE (Qwen2, Llama 3) and SentencePiece (Llama 2, Phi-3).

use wring::gguf::Gguf;
use wring::llm::GgufTokenizer;

/// A vocabulary's test texts and the ids llama.cpp gives them, read as test-tokenizer-0 reads them: the
/// `.inp` file cut at each separator line, the `.out` file a line of ids per text.
fn cases(name: &str) -> (Gguf, Vec<(String, Vec<u32>)>) {
    let base = format!("models/vocab/ggml-vocab-{name}.gguf");
    let g = Gguf::open(std::path::Path::new(&base))
        .unwrap_or_else(|e| panic!("{base}: {e} (fetch it with `bash .ci/fetch-vocab.sh`)"));
    let inp = std::fs::read_to_string(format!("{base}.inp")).unwrap();
    let out = std::fs::read_to_string(format!("{base}.out")).unwrap();
    // test-tokenizer-0 stops at the end of the file, so a final separator ends the last text rather
    // than starting an empty one.
    let sep = "\n__ggml_vocab_test__\n";
    let texts: Vec<&str> = inp.strip_suffix(sep).unwrap_or(&inp).split(sep).collect();
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: a line of ids per text");
    (g, texts.into_iter().map(str::to_string).zip(ids).collect())
}

/// Qwen2's and Llama 3's byte-level BPE (each with its own pre-tokenizer regex; Llama 3 takes whole words
/// that are tokens before merging) give llama.cpp's ids for every test text.
#[test]
fn qwen2_and_llama3_tokenize_as_llama_cpp() {
    same_ids_as_llama_cpp(&["qwen2", "llama-bpe"]);
}

/// Every test text of each vocabulary in `names` tokenizes to llama.cpp's ids.
fn same_ids_as_llama_cpp(names: &[&str]) {
    for &name in names {
        let (g, cases) = cases(name);
        let tok = GgufTokenizer::from_gguf(&g).unwrap();
        let mut wrong = Vec::new();
        for (text, want) in &cases {
            let got = tok.encode_text(text).unwrap();
            if &got != want {
                wrong.push(format!("{text:?}: {got:?}, llama.cpp {want:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{name}: {} of {} texts differ:\n{}",
            wrong.len(),
            cases.len(),
            wrong.join("\n")
        );
    }
}

/// The SentencePiece vocabularies of Llama 2 and Phi-3 (merged by score, bytes as `<0xXX>` tokens) give
/// llama.cpp's ids for every test text.
#[test]
fn sentencepiece_tokenizes_as_llama_cpp() {
    same_ids_as_llama_cpp(&["llama-spm", "phi-3"]);
}
