//! wring's host runtime: chooses an adapter, opens a device with the optional features wring's kernels
//! can use, holds tensors in pooled device buffers, caches pipelines per kernel variant, runs any kernel
//! unit through one generic path ([`Step::run`]) that checks its operands against the unit's declaration,
//! records launches into steps submitted as one command buffer, and reads results back through one path
//! that always polls the device.
//!
//! The kernel families are re-exported under [`kernels`], so model crates depend on the runtime alone.
//! Bind groups are built from the layout naga reflected at build time, matched to operands by binding
//! name.

#![warn(missing_docs)]

pub mod adapter;
mod context;
pub mod dispatch;
mod error;
pub mod kernels;
pub mod probe;
mod step;
mod tensor;

pub use context::{Context, ContextOptions, DeviceInfo, DeviceMemory, PlanAs, adapter_reports};
pub use error::{Error, Result, human_bytes};
pub use step::{LaunchTime, Step, StepReport};
pub use tensor::Tensor;
