//! The device context: one adapter, its device and queue, the buffer pool, the pipeline cache, and the
//! single readback path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wring_kernels_core::{BindingKind, Caps, DType, Element, Variant};

use crate::adapter::{self, AdapterReport};
use crate::error::{Error, Result};
use crate::tensor::{Pool, PooledBuffer, STORAGE_USAGE, Tensor, size_class};

/// Options for opening a context.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Do not enable `SHADER_F16` even where the adapter has it (tests of the fallback paths).
    pub disable_f16: bool,
    /// Do not enable `SUBGROUP` even where the adapter has it.
    pub disable_subgroup: bool,
    /// Time every launch with GPU timestamp queries (where the adapter has them). Each step then waits
    /// for the device when it is submitted, so leave it off outside benchmarks and profiling.
    pub profile: bool,
    /// Lower the storage-binding limit to this many bytes (never raise it): tests of the paths that split
    /// work to fit the limit, and a way to mimic a smaller adapter.
    pub max_binding_bytes: Option<u64>,
    /// Decode products with Q4_0, Q4_1 and Q8_0 weights quantize their activations to 8 bits and use
    /// integer dot products (`quantize_q8` + `qmatvec_q8`), as llama.cpp's CPU back end does: faster, at
    /// the cost of the activations' 8-bit rounding (NMSE about 5e-5 against f32 activations). Off, every
    /// product keeps f32 activations.
    pub q8_activations: bool,
    /// Which kind of adapter the kernels' planners decide for (see [`PlanAs`]).
    pub plan: PlanAs,
}

/// Which kind of adapter the kernels' planners decide for. The planners choose different variants, tile
/// shapes and fusions for CPU adapters (lavapipe, WARP, SwiftShader) and for hardware GPUs; forcing one
/// plan on any adapter runs the other's path where it can be tested (a hardware GPU's plan on lavapipe in
/// CI, or the CPU forms on a GPU), within the adapter's real features and limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PlanAs {
    /// `WRING_PLAN` (`gpu`, `cpu` or `auto`) when it is set, else what the adapter reports it is.
    #[default]
    Auto,
    /// What the adapter reports it is, whatever `WRING_PLAN` says.
    Adapter,
    /// As on a hardware GPU (discrete, integrated or virtual), whatever the adapter is.
    Gpu,
    /// As on a CPU adapter, whatever the adapter is.
    Cpu,
}

impl PlanAs {
    /// The plan `WRING_PLAN` asks for, if it is set: `gpu`, `cpu` or `auto` (the adapter's own).
    pub fn from_env() -> Result<Option<PlanAs>> {
        match std::env::var("WRING_PLAN") {
            Ok(v) => PlanAs::parse(&v).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// `gpu`, `cpu` (or `software`), `auto` (or `adapter`, or empty), in any case: what `WRING_PLAN` takes.
    pub fn parse(name: &str) -> Result<PlanAs> {
        match name.trim().to_ascii_lowercase().as_str() {
            "gpu" => Ok(PlanAs::Gpu),
            "cpu" | "software" => Ok(PlanAs::Cpu),
            "auto" | "adapter" | "" => Ok(PlanAs::Adapter),
            _ => Err(Error::UnknownPlan(name.to_string())),
        }
    }

    /// Whether the planners decide as for a CPU adapter on an adapter of `device_type`, and why.
    pub fn resolve(self, device_type: wgpu::DeviceType) -> Result<(bool, String)> {
        // A forced plan and who forced it; None leaves it to the adapter's kind.
        let forced = match self {
            PlanAs::Auto => match PlanAs::from_env()? {
                Some(PlanAs::Gpu) => Some((false, "WRING_PLAN=gpu")),
                Some(PlanAs::Cpu) => Some((true, "WRING_PLAN=cpu")),
                Some(_) | None => None,
            },
            PlanAs::Adapter => None,
            PlanAs::Gpu => Some((false, "the options ask for the GPU plan")),
            PlanAs::Cpu => Some((true, "the options ask for the CPU plan")),
        };
        Ok(match forced {
            Some((cpu, who)) => (cpu, format!("{who} (the adapter is {device_type:?})")),
            None => {
                let cpu = device_type == wgpu::DeviceType::Cpu;
                let kind = if cpu { "a CPU" } else { "a GPU" };
                (cpu, format!("the adapter is {kind} ({device_type:?})"))
            }
        })
    }
}

/// What the device was opened with.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The adapter's description.
    pub adapter: wgpu::AdapterInfo,
    /// The limits the device was opened with (the adapter's own, in full).
    pub limits: wgpu::Limits,
    /// The optional features enabled.
    pub features: wgpu::Features,
    /// Whether launches are timed with timestamp queries.
    pub timestamps: bool,
    /// Why the planners decide as they do (`Caps::software`): the adapter's kind or a forced plan.
    pub plan_why: String,
}

/// Device memory held through a context's tensors (see [`Context::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of buffers that live tensors hold (weights, caches, scratch in use).
    pub live_bytes: u64,
    /// Bytes of idle buffers the pool keeps for reuse.
    pub idle_bytes: u64,
    /// The most `live_bytes + idle_bytes` has been.
    pub peak_bytes: u64,
}

pub(crate) struct CachedPipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// A device ready to run wring's kernels. Safe to share between threads.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: DeviceInfo,
    pub(crate) caps: Caps,
    q8_activations: bool,
    pool: Arc<Mutex<Pool>>,
    pipelines: Arc<Mutex<HashMap<String, Arc<CachedPipeline>>>>,
    /// Errors the device reported outside any error scope, surfaced by the next submit or readback: whether
    /// each was an out-of-memory error, and its message.
    device_errors: Arc<Mutex<Vec<(bool, String)>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.info.adapter.name)
            .field("caps", &self.caps)
            .finish()
    }
}

/// How long readback waits for the device before reporting a hang.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(120);

impl Context {
    /// Opens the adapter that `WRING_BACKEND`, `WRING_ADAPTER` and the default preference choose.
    pub fn new(options: ContextOptions) -> Result<Context> {
        let sel = adapter::select()?;
        let adapter = sel
            .adapters
            .into_iter()
            .nth(sel.chosen)
            .expect("select returns an index into its adapters");
        Context::from_adapter(&adapter, options)
    }

    /// Opens a device on a given adapter, enabling the optional features wring uses where present and
    /// asking for the adapter's full limits (the default WebGPU limits cap storage bindings at 128 MiB).
    pub fn from_adapter(adapter: &wgpu::Adapter, options: ContextOptions) -> Result<Context> {
        let have = adapter.features();
        let mut want = wgpu::Features::empty();
        if !options.disable_f16 {
            want |= wgpu::Features::SHADER_F16;
        }
        if !options.disable_subgroup {
            want |= wgpu::Features::SUBGROUP;
        }
        if options.profile {
            want |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let features = have & want;
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_binding_bytes {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap.max(4));
        }
        let info = adapter.get_info();
        // Resolved before the device is opened, so that a bad WRING_PLAN costs nothing.
        let (plan_cpu, plan_why) = options.plan.resolve(info.device_type)?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wring"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| Error::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        let device_errors = Arc::new(Mutex::new(Vec::new()));
        let sink = device_errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            tracing::error!("device error: {e}");
            // Out of memory is kept apart from other errors: it has a fix the user can apply.
            let oom = matches!(e, wgpu::Error::OutOfMemory { .. });
            if let Ok(mut v) = sink.lock() {
                v.push((oom, e.to_string()));
            }
        }));
        let caps = Caps {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: if features.contains(wgpu::Features::SUBGROUP) {
                info.subgroup_min_size
            } else {
                0
            },
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            software: plan_cpu,
        };
        tracing::debug!(adapter = %info.name, ?caps, plan = if plan_cpu { "cpu" } else { "gpu" }, why = %plan_why, "opened device");
        let timestamps = features.contains(wgpu::Features::TIMESTAMP_QUERY);
        Ok(Context {
            device,
            queue,
            info: DeviceInfo {
                adapter: info,
                limits,
                features,
                timestamps,
                plan_why,
            },
            caps,
            q8_activations: options.q8_activations,
            pool: Arc::new(Mutex::new(Pool::default())),
            pipelines: Arc::new(Mutex::new(HashMap::new())),
            device_errors,
        })
    }

    /// A second context on this device, planned as `options` say: their plan, their `q8_activations`,
    /// and `disable_f16` / `disable_subgroup`, which withhold those features from the planners (the
    /// device keeps them enabled; the sibling never asks for them). The device, its queue and limits,
    /// the buffer pool and the compiled pipelines are shared, so tensors (a model's weights and KV cache)
    /// made through either run through both; `profile` and `max_binding_bytes` belong to the device and
    /// are this context's. The tests run one loaded model under the CPU-adapter and the GPU plans this
    /// way, a decode step at depth 2,048 among them, without loading or prefilling twice.
    pub fn sibling(&self, options: &ContextOptions) -> Result<Context> {
        let (plan_cpu, plan_why) = options.plan.resolve(self.info.adapter.device_type)?;
        let subgroup = self.caps.subgroup && !options.disable_subgroup;
        let caps = Caps {
            f16: self.caps.f16 && !options.disable_f16,
            subgroup,
            subgroup_min_size: if subgroup {
                self.caps.subgroup_min_size
            } else {
                0
            },
            software: plan_cpu,
            ..self.caps
        };
        tracing::debug!(adapter = %self.info.adapter.name, ?caps, why = %plan_why, "sibling context");
        Ok(Context {
            device: self.device.clone(),
            queue: self.queue.clone(),
            info: DeviceInfo {
                plan_why,
                ..self.info.clone()
            },
            caps,
            q8_activations: options.q8_activations,
            pool: self.pool.clone(),
            pipelines: self.pipelines.clone(),
            device_errors: self.device_errors.clone(),
        })
    }

    /// The device's description.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// What kernels may use on this device.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// Whether decode products quantize activations to 8 bits (see [`ContextOptions::q8_activations`]).
    pub fn q8_activations(&self) -> bool {
        self.q8_activations
    }

    /// The adapter name with its backend, as tests and benchmarks label results.
    pub fn label(&self) -> String {
        format!(
            "{} ({:?})",
            self.info.adapter.name, self.info.adapter.backend
        )
    }

    /// Checks a buffer size against the adapter's binding and allocation limits.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let l = &self.info.limits;
        if bytes > l.max_storage_buffer_binding_size {
            return Err(Error::BufferTooLarge {
                what: what.into(),
                bytes,
                limit: l.max_storage_buffer_binding_size,
                limit_name: "max storage buffer binding size",
            });
        }
        if bytes > l.max_buffer_size {
            return Err(Error::BufferTooLarge {
                what: what.into(),
                bytes,
                limit: l.max_buffer_size,
                limit_name: "max buffer size",
            });
        }
        Ok(())
    }

    fn alloc(&self, bytes: u64) -> Result<Arc<PooledBuffer>> {
        self.check_size("a tensor", bytes)?;
        let class = size_class(bytes).min(
            self.info
                .limits
                .max_storage_buffer_binding_size
                .max(bytes.next_multiple_of(4)),
        );
        let reused = self
            .pool
            .lock()
            .map_err(|_| Error::Device("buffer pool lock poisoned".into()))?
            .take(class);
        let buffer = match reused {
            Some(b) => b,
            None => {
                if let Ok(mut p) = self.pool.lock() {
                    p.misses += 1;
                }
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wring tensor"),
                    size: class,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        if let Ok(mut p) = self.pool.lock() {
            p.lend(class);
        }
        Ok(Arc::new(PooledBuffer {
            buffer,
            class,
            pool: Arc::downgrade(&self.pool),
        }))
    }

    /// An uninitialised tensor (its contents are whatever the pooled buffer last held).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let len = checked_len(shape)?;
        let bytes = dtype.bytes_for(len).ok_or_else(|| {
            Error::Shape(format!(
                "shape {shape:?} overflows or is not a whole number of {dtype} blocks"
            ))
        })? as u64;
        Ok(Tensor {
            buf: self.alloc(bytes)?,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A tensor holding `data`.
    pub fn upload<T: Element>(&self, shape: &[usize], data: &[T]) -> Result<Tensor> {
        let len = checked_len(shape)?;
        if len != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} holds {len} elements but {} were given",
                data.len()
            )));
        }
        let t = self.empty(shape, T::DTYPE)?;
        self.write(&t, data)?;
        Ok(t)
    }

    /// A tensor of packed GGUF blocks holding `bytes` (exactly the bytes `shape` needs in `format`).
    pub fn upload_blocks(
        &self,
        shape: &[usize],
        format: wring_kernels_core::dtype::BlockFormat,
        bytes: &[u8],
    ) -> Result<Tensor> {
        let dtype = DType::Block(format);
        let t = self.empty(shape, dtype)?;
        if t.bytes() != bytes.len() as u64 {
            return Err(Error::Shape(format!(
                "shape {shape:?} in {format} needs {} bytes, got {}",
                t.bytes(),
                bytes.len()
            )));
        }
        self.write_words(&t, bytes);
        Ok(t)
    }

    /// Queues `bytes` into `t`'s buffer at its offset. WebGPU writes whole words: a length that is not
    /// one is padded with zeros, which land in the tensor's own rounding slack. Only the last partial
    /// word is copied to pad it, never the whole (a model's weights pass through here).
    fn write_words(&self, t: &Tensor, bytes: &[u8]) {
        let whole = bytes.len() - bytes.len() % 4;
        if whole > 0 {
            self.queue
                .write_buffer(&t.buf.buffer, t.offset, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue
                .write_buffer(&t.buf.buffer, t.offset + whole as u64, &tail);
        }
    }

    /// Overwrites a tensor's contents (queued; ordered before the next submitted step).
    pub fn write<T: Element>(&self, t: &Tensor, data: &[T]) -> Result<()> {
        if T::DTYPE != t.dtype || data.len() != t.len() {
            return Err(Error::Shape(format!(
                "writing {} {} values into a {} tensor of {}",
                data.len(),
                T::DTYPE,
                t.dtype,
                t.len()
            )));
        }
        self.write_words(t, bytemuck::cast_slice(data));
        Ok(())
    }

    /// A view of `shape`/`dtype` at `byte_offset` into `t`'s buffer. The offset must be a multiple of the
    /// adapter's storage offset alignment and the view must fit inside the buffer.
    pub fn view(
        &self,
        t: &Tensor,
        byte_offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let align = u64::from(self.info.limits.min_storage_buffer_offset_alignment);
        let offset = t.offset + byte_offset;
        if !offset.is_multiple_of(align) {
            return Err(Error::Shape(format!(
                "view offset {offset} is not a multiple of the storage offset alignment {align}"
            )));
        }
        let len = checked_len(shape)?;
        let bytes = dtype.bytes_for(len).ok_or_else(|| {
            Error::Shape(format!(
                "shape {shape:?} is not a whole number of {dtype} blocks"
            ))
        })?;
        let end = offset + (bytes as u64).next_multiple_of(4);
        if end > t.offset + t.bound_bytes() {
            return Err(Error::Shape(format!(
                "view ending at byte {end} lies outside the tensor ({} bytes)",
                t.bound_bytes()
            )));
        }
        Ok(Tensor {
            buf: t.buf.clone(),
            offset,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// The storage offset alignment views must respect.
    pub fn view_alignment(&self) -> u64 {
        u64::from(self.info.limits.min_storage_buffer_offset_alignment)
    }

    /// Reads a tensor back. This is the one readback path: it submits the copy, always polls the device
    /// until the map completes (or the timeout passes), and surfaces device errors.
    pub fn read<T: Element>(&self, t: &Tensor) -> Result<Vec<T>> {
        if T::DTYPE.size() != t.dtype.size() {
            return Err(Error::Shape(format!(
                "reading a {} tensor as {}",
                t.dtype,
                T::DTYPE
            )));
        }
        let bytes = self.read_bytes(&t.buf.buffer, t.offset, t.bound_bytes())?;
        let n = t.len();
        let mut out = vec![T::zeroed(); n];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes[..n * T::DTYPE.size()]);
        Ok(out)
    }

    /// Reads `size` bytes at `offset` of a buffer (both multiples of 4).
    pub(crate) fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wring readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wring readback"),
            });
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // Another thread polling the same device may be the one that runs this map's callback, a moment
        // after our own poll returns; so poll until the callback has reported, within the timeout.
        let start = std::time::Instant::now();
        loop {
            self.wait()?;
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(Error::Readback(e.to_string())),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if start.elapsed() < DEVICE_TIMEOUT => {}
                Err(_) => {
                    return Err(Error::Timeout {
                        seconds: DEVICE_TIMEOUT.as_secs(),
                    });
                }
            }
        }
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Readback(e.to_string()))?
            .to_vec();
        staging.unmap();
        self.take_device_errors()?;
        Ok(data)
    }

    /// Reads the whole buffer under a tensor, including bytes outside the tensor's view (sentinel checks).
    pub fn read_underlying_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        self.read_bytes(&t.buf.buffer, 0, t.buf.buffer.size())
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(DEVICE_TIMEOUT),
        }) {
            Ok(_) => self.take_device_errors(),
            Err(wgpu::PollError::Timeout) => Err(Error::Timeout {
                seconds: DEVICE_TIMEOUT.as_secs(),
            }),
            Err(e) => Err(Error::Device(e.to_string())),
        }
    }

    pub(crate) fn take_device_errors(&self) -> Result<()> {
        let mut errs = self
            .device_errors
            .lock()
            .map_err(|_| Error::Device("error sink lock poisoned".into()))?;
        if errs.is_empty() {
            return Ok(());
        }
        let errs = std::mem::take(&mut *errs);
        let oom = errs.iter().any(|(oom, _)| *oom);
        let text = errs
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>()
            .join("; ");
        Err(if oom {
            Error::OutOfMemory(text)
        } else {
            Error::Device(text)
        })
    }

    /// Pool statistics: (buffers reused, buffers created).
    pub fn pool_stats(&self) -> (u64, u64) {
        self.pool
            .lock()
            .map(|p| (p.hits, p.misses))
            .unwrap_or((0, 0))
    }

    /// Device memory in wring's tensors: what live tensors hold, what idles in the pool, and the most the
    /// two came to together since the context opened (size classes counted whole, as allocated).
    pub fn memory(&self) -> DeviceMemory {
        self.pool
            .lock()
            .map(|p| DeviceMemory {
                live_bytes: p.live,
                idle_bytes: p.held,
                peak_bytes: p.peak,
            })
            .unwrap_or_default()
    }

    /// Releases every idle pooled buffer.
    pub fn trim_pool(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
    }

    /// The pipeline for a variant, created on first use inside an error scope so that a rejection comes
    /// back as [`Error::Pipeline`] with the kernel name and source rather than as a panic.
    pub(crate) fn pipeline(&self, v: &Variant) -> Result<Arc<CachedPipeline>> {
        if v.requires.f16 && !self.caps.f16 {
            return Err(Error::MissingFeature {
                kernel: v.id(),
                feature: "SHADER_F16",
            });
        }
        if v.requires.subgroup && !self.caps.subgroup {
            return Err(Error::MissingFeature {
                kernel: v.id(),
                feature: "SUBGROUP",
            });
        }
        // Built-in variants are unique by id; kernels made from source also key on their text.
        let key = match v.source {
            std::borrow::Cow::Borrowed(_) => v.id(),
            std::borrow::Cow::Owned(ref s) => format!("{}#{:x}", v.id(), fxhash(s)),
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .map_err(|_| Error::Device("pipeline cache lock poisoned".into()))?
            .get(&key)
        {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&key),
                source: wgpu::ShaderSource::Wgsl(v.source.clone()),
            });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = v
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::StorageReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&key),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&key),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(&v.entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Pipeline {
                kernel: v.id(),
                message: e.to_string(),
                source_text: v.source.to_string(),
            });
        }
        let cached = Arc::new(CachedPipeline { pipeline, layout });
        if let Ok(mut map) = self.pipelines.lock() {
            map.insert(key, cached.clone());
        }
        tracing::debug!(kernel = %v.id(), "created pipeline");
        Ok(cached)
    }
}

fn checked_len(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::Shape(format!("shape {shape:?} overflows")))
}

/// A small stable hash (FNV-1a) for pipeline cache keys of kernels built from source.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reports for every adapter found, for `wring info`.
pub fn adapter_reports() -> Result<(Vec<AdapterReport>, usize, String)> {
    let s = adapter::select()?;
    Ok((s.reports, s.chosen, s.why))
}
