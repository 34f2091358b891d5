//! LLM inference on wring: a llama-family model read from GGUF, its tokenizer, and (to come) the forward
//! pass on the GPU. Model code speaks in tensors and `wring_runtime::ops`; it never touches wgpu directly.

#![warn(missing_docs)]

pub mod batch;
pub mod chat;
pub mod compress;
pub mod config;
pub mod hf;
pub mod kv;
pub mod layers;
pub mod model;
pub mod paged;
pub mod sample;
pub mod schedule;
pub mod spm;
pub mod tokenizer;

pub use batch::{BatchStats, Batcher, Event, Finish};
pub use config::LlamaConfig;
pub use kv::KvMode;
pub use model::{
    Cancel, Generation, Llama, PagedShape, Perplexity, SeqRows, WeightSource, check_generation,
    check_kv_budget, kv_budget,
};
pub use sample::Sampler;
pub use tokenizer::{GgufTokenizer, TextStream, TokenizerError};

/// Errors from loading a model.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] wring_gguf::GgufError),
    /// The metadata describes a model wring cannot run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The device refused work.
    #[error(transparent)]
    Runtime(#[from] wring_runtime::Error),
    /// A request the model cannot serve (context full, token out of range).
    #[error("{0}")]
    Request(String),
    /// The model produced NaN or infinite logits (broken weights, or a device fault): generation stops
    /// with this error instead of sampling garbage.
    #[error("non-finite logits: {0}")]
    NonFinite(String),
}
