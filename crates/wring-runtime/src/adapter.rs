//! Adapter discovery and choice: `WRING_BACKEND` and `WRING_ADAPTER` first, then discrete GPUs, then
//! integrated, virtual and software ones.

use crate::error::{Error, Result};

/// What `wring info` shows about one adapter.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    /// Index in enumeration order, which `WRING_ADAPTER` may name.
    pub index: usize,
    /// wgpu's description of the adapter.
    pub info: wgpu::AdapterInfo,
    /// Its limits.
    pub limits: wgpu::Limits,
    /// Its features.
    pub features: wgpu::Features,
}

impl AdapterReport {
    /// Whether the adapter can time GPU work with timestamp queries.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }
}

/// The adapters found and the one chosen, with the reason.
#[derive(Debug)]
pub struct Selection {
    /// The instance the adapters came from.
    pub instance: wgpu::Instance,
    /// Every adapter found for the allowed backends.
    pub reports: Vec<AdapterReport>,
    /// Index into `reports` and `adapters` of the chosen one.
    pub chosen: usize,
    /// Why it was chosen, in words.
    pub why: String,
    /// The adapters themselves.
    pub adapters: Vec<wgpu::Adapter>,
}

/// The backends allowed by `WRING_BACKEND` (all native ones when unset).
pub fn backends_from_env() -> Result<wgpu::Backends> {
    match std::env::var("WRING_BACKEND") {
        Err(_) => Ok(wgpu::Backends::VULKAN
            | wgpu::Backends::METAL
            | wgpu::Backends::DX12
            | gl_backend()),
        Ok(v) => parse_backend(&v),
    }
}

fn gl_backend() -> wgpu::Backends {
    if cfg!(feature = "gl") {
        wgpu::Backends::GL
    } else {
        wgpu::Backends::empty()
    }
}

/// Parses one backend name.
pub fn parse_backend(v: &str) -> Result<wgpu::Backends> {
    match v.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => {
            if cfg!(feature = "gl") {
                Ok(wgpu::Backends::GL)
            } else {
                Err(Error::BackendNotCompiled(v.into()))
            }
        }
        _ => Err(Error::UnknownBackend(v.into())),
    }
}

/// How much a device type is preferred: lower is better.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Enumerates adapters for the allowed backends and picks one.
pub fn select() -> Result<Selection> {
    let backends = backends_from_env()?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        // Validation layers are opt-in through WGPU_VALIDATION / WGPU_DEBUG: they slow every dispatch.
        flags: wgpu::InstanceFlags::empty().with_env(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    if adapters.is_empty() {
        return Err(Error::NoAdapter {
            backends: format!("{backends:?}"),
        });
    }
    let reports: Vec<AdapterReport> = adapters
        .iter()
        .enumerate()
        .map(|(index, a)| AdapterReport {
            index,
            info: a.get_info(),
            limits: a.limits(),
            features: a.features(),
        })
        .collect();
    let (chosen, why) = match std::env::var("WRING_ADAPTER") {
        Ok(wanted) => {
            let by_index = wanted.parse::<usize>().ok().filter(|&i| i < reports.len());
            let lower = wanted.to_lowercase();
            let found = by_index.or_else(|| {
                reports
                    .iter()
                    .position(|r| r.info.name.to_lowercase().contains(&lower))
            });
            match found {
                Some(i) => (i, format!("WRING_ADAPTER={wanted} selects it")),
                None => {
                    return Err(Error::AdapterNotFound {
                        wanted,
                        available: reports
                            .iter()
                            .map(|r| format!("[{}] {}", r.index, r.info.name))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        Err(_) => {
            let best = reports
                .iter()
                .min_by_key(|r| (rank(r.info.device_type), r.index))
                .map(|r| r.index)
                .unwrap_or(0);
            let t = reports[best].info.device_type;
            (
                best,
                format!(
                    "it is the first {t:?} adapter, and wring prefers discrete, then integrated, then virtual, then software adapters"
                ),
            )
        }
    };
    tracing::debug!(adapter = %reports[chosen].info.name, "chose adapter because {why}");
    Ok(Selection {
        instance,
        reports,
        chosen,
        why,
        adapters,
    })
}

/// Every adapter for the allowed backends, for tests that run on each.
pub fn all_adapters() -> Result<Vec<wgpu::Adapter>> {
    let s = select()?;
    Ok(s.adapters)
}
