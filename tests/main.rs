//! wring's one integration-test binary. GPU tests run on every adapter wgpu finds and fail, never skip,
//! when there is none (CI installs Mesa's software Vulkan driver for that reason).

mod backends;
mod batch;
mod batching;
mod codec;
mod compress;
mod families;
mod fixture;
mod gpu_plan;
mod harness;
mod hostile;
mod kernels;
mod kv;
mod llm;
mod quant;
mod runtime;
mod server;
mod shaders;
mod tidy;
mod vocab;
mod vq;
mod wavelet;
