//! The runtime's error type: every variant carries the numbers involved and says what to do.

use wring_kernels_core::{KernelError, ShaderError};

/// Everything that can go wrong between choosing an adapter and reading a result back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// wgpu found no adapter for the allowed backends.
    #[error(
        "no GPU adapter found for backends {backends}; on Linux without a GPU install Mesa's software Vulkan \
         driver (Debian/Ubuntu: `bash .ci/install-vulkan.sh`, or `apt-get install mesa-vulkan-drivers \
         libvulkan1`), or unset WRING_BACKEND; see the guide's Troubleshooting page, \
         docs/src/troubleshooting.md"
    )]
    NoAdapter {
        /// The backends searched.
        backends: String,
    },
    /// `WRING_ADAPTER` matched none of the adapters found.
    #[error("WRING_ADAPTER={wanted} matches no adapter; found: {available}")]
    AdapterNotFound {
        /// The value of `WRING_ADAPTER`.
        wanted: String,
        /// The adapters found.
        available: String,
    },
    /// `WRING_BACKEND` names no backend wring knows.
    #[error("WRING_BACKEND={0} is not one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),
    /// `WRING_PLAN` (or a `--plan` option) names no plan wring knows.
    #[error("WRING_PLAN={0} is not one of gpu, cpu, auto")]
    UnknownPlan(String),
    /// `WRING_BACKEND=gl` in a build without OpenGL support.
    #[error(
        "WRING_BACKEND={0}: this build has no OpenGL backend; rebuild with `--features wring-runtime/gl`"
    )]
    BackendNotCompiled(String),
    /// The adapter refused the device request.
    #[error("adapter {adapter} refused to open a device: {source}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        #[source]
        /// wgpu's reason.
        source: wgpu::RequestDeviceError,
    },
    /// A buffer above what the adapter can bind or allocate.
    #[error(
        "{what} of {} exceeds this adapter's {limit_name} of {}; split the tensor into chunks of at most that size",
        human_bytes(*bytes),
        human_bytes(*limit)
    )]
    BufferTooLarge {
        /// The buffer.
        what: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
        /// The limit's name in `wring info`.
        limit_name: &'static str,
    },
    /// A kernel could not be planned for the request.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A kernel specialised from source failed preprocessing or validation.
    #[error(transparent)]
    Shader(#[from] ShaderError),
    /// The device rejected a pipeline; the source is kept for the report.
    #[error("the device rejected kernel {kernel}: {message}\n--- source ---\n{source_text}")]
    Pipeline {
        /// The kernel and variant.
        kernel: String,
        /// The device's message.
        message: String,
        /// The WGSL it was given.
        source_text: String,
    },
    /// The adapter lacks a feature a variant needs.
    #[error("kernel {kernel} needs {feature}, which this device does not have enabled")]
    MissingFeature {
        /// The kernel and variant.
        kernel: String,
        /// The feature.
        feature: &'static str,
    },
    /// Launch arguments that do not match the kernel's reflected bindings.
    #[error("kernel {kernel}: {what}")]
    Binding {
        /// The kernel and variant.
        kernel: String,
        /// What does not match.
        what: String,
    },
    /// Host data or views of the wrong size.
    #[error("{0}")]
    Shape(String),
    /// The device reported an error (validation, a lost device) while running recorded work.
    #[error("device error: {0}")]
    Device(String),
    /// The device could not allocate what recorded work needed.
    #[error(
        "the device ran out of memory ({0}); shrink the KV cache (a smaller --ctx, --kv-cache f16 or q4, for \
         `serve` a smaller --kv-budget or --parallel) or compress the weights (`wring quantize`); see the \
         guide's Troubleshooting page, docs/src/troubleshooting.md"
    )]
    OutOfMemory(String),
    /// The device did not finish within the time allowed.
    #[error("the device did not finish within {seconds} s; the adapter may be hung or overloaded")]
    Timeout {
        /// Seconds waited.
        seconds: u64,
    },
    /// Mapping a buffer for readback failed.
    #[error("reading back from the device failed: {0}")]
    Readback(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `1.5 MiB`-style sizes for error messages.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {} ({b} bytes)", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors a newcomer meets first name their fix and the guide's page.
    #[test]
    fn first_errors_name_their_fix_and_page() {
        let no_adapter = Error::NoAdapter {
            backends: "VULKAN".into(),
        }
        .to_string();
        assert!(no_adapter.contains("install-vulkan.sh"), "{no_adapter}");
        assert!(
            no_adapter.contains("docs/src/troubleshooting.md"),
            "{no_adapter}"
        );
        let oom = Error::OutOfMemory("Out of Memory".into()).to_string();
        for fix in [
            "--ctx",
            "--kv-cache",
            "--kv-budget",
            "wring quantize",
            "docs/src/troubleshooting.md",
        ] {
            assert!(oom.contains(fix), "{oom} does not mention {fix}");
        }
    }
}
