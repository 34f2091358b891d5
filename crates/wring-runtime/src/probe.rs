//! The adapter's copy bandwidth: the roofline every bandwidth-bound kernel is reported against.

use crate::context::{Context, ContextOptions};
use crate::error::{Error, Result};
use crate::kernels::DType;
use crate::kernels::tensor::CopyWords;

/// What one bandwidth probe measured.
#[derive(Debug, Clone)]
pub struct CopyProbe {
    /// The adapter, as [`Context::label`] names it.
    pub adapter: String,
    /// Bytes copied per launch.
    pub bytes: u64,
    /// The fastest launch, in seconds (GPU timestamps where the adapter has them, else wall clock after a
    /// full device wait).
    pub seconds: f64,
}

impl CopyProbe {
    /// Bytes read plus bytes written per second, in GB/s.
    pub fn gb_per_s(&self) -> f64 {
        2.0 * self.bytes as f64 / self.seconds / 1e9
    }
}

/// Copies `mib` MiB with the copy kernel `reps` times on the chosen adapter (after one untimed launch
/// that compiles the pipeline and touches the memory), checks the copy, and returns the fastest time.
pub fn copy_bandwidth(mib: u64, reps: usize) -> Result<CopyProbe> {
    let ctx = Context::new(ContextOptions {
        profile: true,
        ..Default::default()
    })?;
    let words = (mib << 20) as usize / 4;
    let src = ctx.upload(&[words], &vec![0x5a5a_5a5au32; words])?;
    let dst = ctx.empty(&[words], DType::U32)?;
    let unit = CopyWords::new(words);
    let mut warm = ctx.step("probe warm-up");
    warm.run(&unit, &[("src", &src), ("dst", &dst)])?;
    warm.submit()?;
    ctx.wait()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        let mut s = ctx.step("probe");
        s.run(&unit, &[("src", &src), ("dst", &dst)])?;
        let report = s.submit()?;
        ctx.wait()?;
        let secs = match report.times {
            Some(t) => t.iter().map(|l| l.nanos).sum::<f64>() * 1e-9,
            None => start.elapsed().as_secs_f64(),
        };
        best = best.min(secs);
    }
    let check: Vec<u32> = ctx.read(&dst)?;
    if !check.iter().all(|&w| w == 0x5a5a_5a5a) {
        return Err(Error::Device(format!(
            "the copy probe read back wrong data on {}",
            ctx.label()
        )));
    }
    Ok(CopyProbe {
        adapter: ctx.label(),
        bytes: mib << 20,
        seconds: best,
    })
}
