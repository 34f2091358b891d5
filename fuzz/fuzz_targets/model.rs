//! A model file's metadata through everything that reads it before any device work: the GGUF reader, the
//! hyperparameters checked against the tensors present, the KV cache budget, and the tokenizer built from
//! the vocabulary, merges and special ids, which then encodes and decodes a fixed text. Every path ends in a
//! typed error or a consistent result.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = wring_gguf::Gguf::from_vec(data.to_vec()) else {
        return;
    };
    if let Ok(cfg) = wring_llm::LlamaConfig::from_gguf(&g) {
        let _ = wring_llm::check_kv_budget(&cfg, cfg.context, wring_llm::KvMode::F32, wring_llm::kv_budget());
    }
    if let Ok(tok) = wring_llm::GgufTokenizer::from_gguf(&g) {
        if let Ok(ids) = tok.encode("Hello, world! 123 <|im_start|>") {
            assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
            let _ = tok.decode(&ids);
        }
    }
});
