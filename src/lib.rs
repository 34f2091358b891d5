//! wring: portable GPU compute for compressed inference and neural compression.
//!
//! This facade re-exports the workspace's crates under one name.

#![warn(missing_docs)]

pub use wring_codec as codec;
pub use wring_gguf as gguf;
pub use wring_io as io;
pub use wring_llm as llm;
pub use wring_quant as quant;
pub use wring_runtime as runtime;
pub use wring_runtime::kernels;
pub use wring_server as server;
pub use wring_vq as vq;
