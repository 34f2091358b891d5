//! Recording work: a step is a sequence of kernel launches (and buffer copies) submitted as one command
//! buffer, with no waiting between them.

use std::sync::Arc;

use wring_kernels_core::kernel::{self, Kernel};
use wring_kernels_core::{BindingKind, Choice, Plan, Variant};

use crate::context::{CachedPipeline, Context};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

enum Command {
    Launch {
        name: String,
        pipeline: Arc<CachedPipeline>,
        params: Option<(u32, Vec<u8>)>,
        args: Vec<(u32, Tensor)>,
        workgroups: [u32; 3],
        /// CPU time spent recording it (operand checks, plan, binding checks), pipeline creation excluded.
        record_nanos: f64,
    },
    Copy {
        src: Tensor,
        dst: Tensor,
    },
}

/// The GPU time of one launch, from timestamp queries, and the CPU time it took to record and encode.
#[derive(Debug, Clone)]
pub struct LaunchTime {
    /// `kernel/variant`.
    pub kernel: String,
    /// Nanoseconds between the start and end of the launch's compute pass.
    pub nanos: f64,
    /// Nanoseconds of CPU time the launch cost before the device saw it: recording (operand and binding
    /// checks, the plan), its bind group and its commands in the encoder. Pipeline creation on a
    /// variant's first use is left out (it is a one-time cost, not a per-launch one), as are the step's
    /// own submit and wait.
    pub cpu_nanos: f64,
}

/// What a submitted step reports.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// Launches submitted.
    pub launches: usize,
    /// Per-launch GPU times, when the context profiles and the adapter has timestamps.
    pub times: Option<Vec<LaunchTime>>,
}

/// A sequence of launches to submit together. Created by [`Context::step`].
pub struct Step<'c> {
    ctx: &'c Context,
    label: String,
    commands: Vec<Command>,
}

impl std::fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("label", &self.label)
            .field("commands", &self.commands.len())
            .finish()
    }
}

impl Context {
    /// Starts recording a step.
    pub fn step(&self, label: &str) -> Step<'_> {
        Step {
            ctx: self,
            label: label.into(),
            commands: Vec::new(),
        }
    }
}

impl Step<'_> {
    /// Runs any kernel unit with the planner's choice of variant: see [`Step::run_with`].
    pub fn run(&mut self, unit: &dyn Kernel, operands: &[(&str, &Tensor)]) -> Result<()> {
        self.run_with(unit, Choice::Auto, operands)
    }

    /// Runs any kernel unit: every operand the unit declares must be given once by name and none other;
    /// each is checked against its declaration (element type, length, shape) before the unit plans, and
    /// the plan's variant is checked to bind exactly the declared operands with the declared access. The
    /// launch itself then refuses a written operand that shares its buffer with another operand.
    pub fn run_with(
        &mut self,
        unit: &dyn Kernel,
        choice: Choice<'_>,
        operands: &[(&str, &Tensor)],
    ) -> Result<()> {
        let start = std::time::Instant::now();
        let name = unit.kernel();
        let bad = |what: String| Error::Binding {
            kernel: name.to_string(),
            what,
        };
        let declared = unit.operands();
        for (given, _) in operands {
            if !declared.iter().any(|d| d.name == *given) {
                return Err(bad(format!(
                    "has no operand `{given}`; it takes {}",
                    declared
                        .iter()
                        .map(|d| d.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        for d in &declared {
            let mut given = operands.iter().filter(|(n, _)| *n == d.name);
            let (Some((_, t)), None) = (given.next(), given.next()) else {
                return Err(bad(format!(
                    "operand `{}` must be given exactly once",
                    d.name
                )));
            };
            if !d.elem.accepts(t.dtype()) {
                return Err(Error::Shape(format!(
                    "{name}: operand `{}` must be {}, got {}",
                    d.name,
                    d.elem,
                    t.dtype()
                )));
            }
            if let Some(shape) = &d.shape
                && t.shape() != shape.as_slice()
            {
                return Err(Error::Shape(format!(
                    "{name}: operand `{}` must have shape {shape:?}, got {:?}",
                    d.name,
                    t.shape()
                )));
            }
            if t.len() < d.min_len {
                return Err(Error::Shape(format!(
                    "{name}: operand `{}` must hold at least {} elements, got {}",
                    d.name,
                    d.min_len,
                    t.len()
                )));
            }
        }
        let plan = unit.plan(self.caps(), choice)?;
        if plan.variant.kernel != name {
            return Err(bad(format!(
                "the unit planned variant {}, of another kernel",
                plan.variant.id()
            )));
        }
        kernel::check_declaration(plan.variant, &declared)?;
        let before = start.elapsed().as_nanos() as f64;
        self.launch(&plan, operands)?;
        // The checks and the plan belong to this launch's recording too.
        if let Some(Command::Launch { record_nanos, .. }) = self.commands.last_mut() {
            *record_nanos += before;
        }
        Ok(())
    }

    /// Records a planned launch. `args` name the kernel's storage bindings; every one must be given once.
    pub fn launch(&mut self, plan: &Plan, args: &[(&str, &Tensor)]) -> Result<()> {
        self.launch_variant(plan.variant, &plan.params, plan.workgroups, args)
    }

    /// Records a launch of any variant, built-in or made from source.
    pub fn launch_variant(
        &mut self,
        v: &Variant,
        params: &[u8],
        workgroups: [u32; 3],
        args: &[(&str, &Tensor)],
    ) -> Result<()> {
        let _span = tracing::debug_span!("launch", kernel = %v.id(), ?workgroups).entered();
        let start = std::time::Instant::now();
        let bad = |what: String| Error::Binding {
            kernel: v.id(),
            what,
        };
        let max = self.ctx.info.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(bad(format!(
                "workgroups {workgroups:?} exceed the adapter's {max} per dimension"
            )));
        }
        for (name, _) in args {
            if !v
                .bindings
                .iter()
                .any(|b| b.name == *name && b.kind != BindingKind::Uniform)
            {
                return Err(bad(format!("has no storage binding named `{name}`")));
            }
        }
        let mut bound = Vec::new();
        let mut uniform = None;
        for b in v.bindings.iter() {
            if b.group != 0 {
                return Err(bad(format!(
                    "binding `{}` is in group {}; wring kernels use group 0 only",
                    b.name, b.group
                )));
            }
            if b.kind == BindingKind::Uniform {
                if uniform.is_some() {
                    return Err(bad("declares more than one uniform".into()));
                }
                uniform = Some((b.binding, params.to_vec()));
                continue;
            }
            let mut given = args.iter().filter(|(n, _)| *n == b.name);
            let (Some((_, t)), None) = (given.next(), given.next()) else {
                return Err(bad(format!(
                    "binding `{}` must be given exactly once",
                    b.name
                )));
            };
            self.ctx.check_size(
                &format!("binding `{}` of {}", b.name, v.id()),
                t.bound_bytes(),
            )?;
            bound.push((b.binding, b.kind, (*t).clone()));
        }
        // A buffer written by the launch must not also be read through another binding: WebGPU forbids it.
        for (i, (_, ki, ti)) in bound.iter().enumerate() {
            for (_, kj, tj) in &bound[i + 1..] {
                let writes =
                    *ki == BindingKind::StorageReadWrite || *kj == BindingKind::StorageReadWrite;
                if writes && ti.shares_buffer(tj) {
                    return Err(bad(
                        "a written binding shares its buffer with another binding".into(),
                    ));
                }
            }
        }
        let checked = start.elapsed().as_nanos() as f64;
        let pipeline = self.ctx.pipeline(v)?;
        self.commands.push(Command::Launch {
            name: v.id(),
            pipeline,
            params: uniform,
            args: bound.into_iter().map(|(b, _, t)| (b, t)).collect(),
            workgroups,
            record_nanos: checked,
        });
        Ok(())
    }

    /// Records a device-side buffer copy (the DMA path, the peer of the copy kernel in benchmarks).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.bound_bytes() != dst.bound_bytes() {
            return Err(Error::Shape(format!(
                "copy of {} bytes into {} bytes",
                src.bytes(),
                dst.bytes()
            )));
        }
        self.commands.push(Command::Copy {
            src: src.clone(),
            dst: dst.clone(),
        });
        Ok(())
    }

    /// Launches recorded so far.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Submits everything as one command buffer. Without profiling this does not wait for the device.
    pub fn submit(self) -> Result<StepReport> {
        let ctx = self.ctx;
        let _span =
            tracing::debug_span!("step", label = %self.label, commands = self.commands.len())
                .entered();
        let device = &ctx.device;
        // All launch parameters live in one uniform buffer, each at an aligned offset.
        let align = u64::from(ctx.info.limits.min_uniform_buffer_offset_alignment).max(16);
        let mut uniform_bytes = Vec::new();
        let mut offsets = Vec::new();
        for c in &self.commands {
            if let Command::Launch {
                params: Some((_, p)),
                ..
            } = c
            {
                let at = (uniform_bytes.len() as u64).next_multiple_of(align);
                uniform_bytes.resize(at as usize, 0);
                uniform_bytes.extend_from_slice(p);
                uniform_bytes.resize(
                    (uniform_bytes.len() as u64).next_multiple_of(16) as usize,
                    0,
                );
                offsets.push(at);
            } else {
                offsets.push(0);
            }
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let uniform = (!uniform_bytes.is_empty()).then(|| {
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wring params"),
                size: uniform_bytes.len() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.queue.write_buffer(&b, 0, &uniform_bytes);
            b
        });
        let launches = self
            .commands
            .iter()
            .filter(|c| matches!(c, Command::Launch { .. }))
            .count();
        let timed = ctx.info.timestamps && launches > 0;
        let queries = timed.then(|| {
            let n = (2 * launches) as u32;
            let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wring timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: n,
            });
            let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wring timestamp resolve"),
                size: u64::from(n) * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve, n)
        });
        // CPU nanoseconds per command: its recording, then its bind group and its encoding added below.
        let mut cpu: Vec<f64> = self
            .commands
            .iter()
            .map(|c| match c {
                Command::Launch { record_nanos, .. } => *record_nanos,
                Command::Copy { .. } => 0.0,
            })
            .collect();
        let bind_groups: Vec<Option<wgpu::BindGroup>> = self
            .commands
            .iter()
            .zip(&offsets)
            .zip(&mut cpu)
            .map(|((c, &off), cpu)| match c {
                Command::Launch {
                    pipeline,
                    params,
                    args,
                    ..
                } => {
                    let start = std::time::Instant::now();
                    let mut entries: Vec<wgpu::BindGroupEntry> = args
                        .iter()
                        .map(|(binding, t)| wgpu::BindGroupEntry {
                            binding: *binding,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &t.buf.buffer,
                                offset: t.offset,
                                size: std::num::NonZeroU64::new(t.bound_bytes()),
                            }),
                        })
                        .collect();
                    if let (Some((binding, p)), Some(u)) = (params, &uniform) {
                        entries.push(wgpu::BindGroupEntry {
                            binding: *binding,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: u,
                                offset: off,
                                size: std::num::NonZeroU64::new(
                                    (p.len() as u64).next_multiple_of(16),
                                ),
                            }),
                        });
                    }
                    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &pipeline.layout,
                        entries: &entries,
                    });
                    *cpu += start.elapsed().as_nanos() as f64;
                    Some(group)
                }
                Command::Copy { .. } => None,
            })
            .collect();
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some(&self.label),
        });
        let mut names = Vec::new();
        let mut launch_cpu = Vec::new();
        {
            // Without timestamps every launch shares one compute pass; with them each launch gets its own
            // pass so that its begin and end can be stamped.
            let mut pass: Option<wgpu::ComputePass<'_>> = None;
            for ((c, bg), &cpu) in self.commands.iter().zip(&bind_groups).zip(&cpu) {
                match c {
                    Command::Launch {
                        name,
                        pipeline,
                        workgroups,
                        ..
                    } => {
                        let start = std::time::Instant::now();
                        if timed || pass.is_none() {
                            drop(pass.take());
                            let q = names.len() as u32;
                            let timestamp_writes = queries.as_ref().map(|(set, _, _)| {
                                wgpu::ComputePassTimestampWrites {
                                    query_set: set,
                                    beginning_of_pass_write_index: Some(2 * q),
                                    end_of_pass_write_index: Some(2 * q + 1),
                                }
                            });
                            pass = Some(
                                enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                                    label: Some(name),
                                    timestamp_writes,
                                })
                                .forget_lifetime(),
                            );
                        }
                        let p = pass.as_mut().expect("a pass was just begun");
                        p.set_pipeline(&pipeline.pipeline);
                        p.set_bind_group(0, bg.as_ref(), &[]);
                        p.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                        names.push(name.clone());
                        launch_cpu.push(cpu + start.elapsed().as_nanos() as f64);
                    }
                    Command::Copy { src, dst } => {
                        drop(pass.take());
                        enc.copy_buffer_to_buffer(
                            &src.buf.buffer,
                            src.offset,
                            &dst.buf.buffer,
                            dst.offset,
                            src.bound_bytes(),
                        );
                    }
                }
            }
        }
        if let Some((set, resolve, n)) = &queries {
            enc.resolve_query_set(set, 0..*n, resolve, 0);
        }
        ctx.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!("step `{}`: {e}", self.label)));
        }
        let times = match &queries {
            Some((_, resolve, n)) => {
                let bytes = ctx.read_bytes(resolve, 0, u64::from(*n) * 8)?;
                let ticks: &[u64] = bytemuck::cast_slice(&bytes);
                let period = f64::from(ctx.queue.get_timestamp_period());
                Some(
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, k)| LaunchTime {
                            kernel: k.clone(),
                            nanos: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period,
                            cpu_nanos: launch_cpu[i],
                        })
                        .collect(),
                )
            }
            None => None,
        };
        ctx.take_device_errors()?;
        Ok(StepReport { launches, times })
    }
}

impl Step<'_> {
    /// The context this step records for (scratch tensors, options).
    pub fn context(&self) -> &Context {
        self.ctx
    }

    /// The capabilities of the device this step records for.
    pub fn caps(&self) -> &wring_kernels_core::Caps {
        self.ctx.caps()
    }
}
