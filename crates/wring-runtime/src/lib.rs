//! wring's host runtime: chooses an adapter, opens a device with the optional features wring's kernels
//! can use, holds tensors in pooled device buffers, caches pipelines per kernel variant, records kernel
//! launches into steps submitted as one command buffer, and reads results back through one path that
//! always polls the device.
//!
//! Kernels come from `wring-kernels` as [`Plan`](wring_kernels::Plan)s; bind groups are built from the
//! layout naga reflected at build time, matched to arguments by binding name.

pub mod adapter;
mod context;
mod error;
pub mod ops;
mod step;
mod tensor;

pub use context::{Context, ContextOptions, DeviceInfo, adapter_reports};
pub use error::{Error, Result, human_bytes};
pub use step::{LaunchTime, Step, StepReport};
pub use tensor::Tensor;
pub use wgpu;
