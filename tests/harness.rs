//! The kernel test harness, after ggml's test-backend-ops: one case type for every kernel, run on every
//! adapter, judged against the CPU twin by NaN/Inf checks then an NMSE budget, with sentinel bytes around
//! the output to catch out-of-bounds writes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use wring::kernels::DType;
use wring::kernels::check::{Tolerance, compare};
use wring::runtime::{Context, ContextOptions, Step, Tensor};

/// Every adapter wgpu finds, opened once for the whole test binary.
pub fn contexts() -> &'static [Context] {
    static CONTEXTS: OnceLock<Vec<Context>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let adapters = wring::runtime::adapter::all_adapters()
            .unwrap_or_else(|e| panic!("GPU tests need an adapter and must not be skipped: {e}"));
        adapters
            .iter()
            .map(|a| {
                Context::from_adapter(a, ContextOptions::default())
                    .unwrap_or_else(|e| panic!("opening a device: {e}"))
            })
            .collect()
    })
}

/// The first adapter, for tests about the runtime rather than a kernel.
pub fn ctx() -> &'static Context {
    &contexts()[0]
}

/// The byte pattern written around outputs; a kernel that writes outside its output changes it.
const SENTINEL: u32 = 0xDEAD_BEEF;

/// A deterministic generator for test data (xorshift64*), so failures reproduce from the case name.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Uploads a case's inputs and records the launch(es) writing its output.
pub type Record<'a> =
    Box<dyn Fn(&Context, &mut Step<'_>, &Tensor) -> wring::runtime::Result<()> + 'a>;

/// One comparison of a kernel against its CPU twin.
pub struct Case<'a> {
    /// Everything needed to re-run the case: kernel, variant, shape, parameters, seed.
    pub name: String,
    pub tol: Tolerance,
    /// The output's element type and shape.
    pub out_dtype: DType,
    pub out_shape: Vec<usize>,
    /// The CPU twin's result, as f32 (f16 widened, u32 as raw bits).
    pub expected: Vec<f32>,
    /// Uploads inputs and records the launch(es) writing `out`.
    pub record: Record<'a>,
    /// Variant feature needs: the case is reported as not applicable on adapters without them.
    pub needs_f16: bool,
    pub needs_subgroup: bool,
}

/// The outcome on one adapter.
#[derive(Debug)]
pub enum Outcome {
    Passed { nmse: f64 },
    NotApplicable(&'static str),
}

impl Case<'_> {
    /// Runs the case on every adapter. Returns a description of the first failure.
    pub fn check(&self) -> Result<Vec<Outcome>, String> {
        contexts().iter().map(|ctx| self.check_on(ctx)).collect()
    }

    /// Runs the case on every adapter and panics with the case name on failure.
    pub fn assert(&self) {
        match self.check() {
            Err(e) => panic!("{e}"),
            Ok(outcomes) => {
                for (ctx, o) in contexts().iter().zip(outcomes) {
                    match o {
                        Outcome::Passed { nmse } => {
                            eprintln!("ok   [{}] on {}: NMSE {nmse:.2e}", self.name, ctx.label())
                        }
                        Outcome::NotApplicable(f) => eprintln!(
                            "n/a  [{}] on {}: the adapter lacks {f}",
                            self.name,
                            ctx.label()
                        ),
                    }
                }
            }
        }
    }

    pub fn check_on(&self, ctx: &Context) -> Result<Outcome, String> {
        if self.needs_f16 && !ctx.caps().f16 {
            return Ok(Outcome::NotApplicable("SHADER_F16"));
        }
        if self.needs_subgroup && !ctx.caps().subgroup {
            return Ok(Outcome::NotApplicable("SUBGROUP"));
        }
        let fail = |what: String| {
            format!(
                "[{}] {} on {}: {what}",
                self.name,
                self.tol_text(),
                ctx.label()
            )
        };
        let len: usize = self.out_shape.iter().product();
        let data_bytes = self
            .out_dtype
            .bytes_for(len)
            .ok_or_else(|| fail(format!("{len} values do not fit {}", self.out_dtype)))?
            as u64;
        let bound = data_bytes.max(4).next_multiple_of(4);
        let pad = ctx.view_alignment().max(256);
        let words = ((2 * pad + bound) / 4) as usize;
        let whole = ctx
            .upload(&[words], &vec![SENTINEL; words])
            .map_err(|e| fail(e.to_string()))?;
        let out = ctx
            .view(&whole, pad, &self.out_shape, self.out_dtype)
            .map_err(|e| fail(e.to_string()))?;
        let mut step = ctx.step(&self.name);
        (self.record)(ctx, &mut step, &out).map_err(|e| fail(format!("recording failed: {e}")))?;
        step.submit()
            .map_err(|e| fail(format!("submit failed: {e}")))?;
        let got: Vec<f32> = match self.out_dtype {
            DType::F32 => ctx.read::<f32>(&out).map_err(|e| fail(e.to_string()))?,
            DType::F16 => ctx
                .read::<half::f16>(&out)
                .map_err(|e| fail(e.to_string()))?
                .into_iter()
                .map(f32::from)
                .collect(),
            DType::U32 | DType::I32 => ctx
                .read::<u32>(&out)
                .map_err(|e| fail(e.to_string()))?
                .into_iter()
                .map(f32::from_bits)
                .collect(),
            DType::Block(f) => {
                return Err(fail(format!(
                    "outputs in {f} blocks are not compared; dequantize them in the case"
                )));
            }
        };
        // Sentinels: every byte before the output, and from its last data byte to the end of the pad.
        let raw = ctx
            .read_underlying_bytes(&whole)
            .map_err(|e| fail(e.to_string()))?;
        let sentinel_bytes = SENTINEL.to_le_bytes();
        let untouched = |range: std::ops::Range<u64>| {
            range
                .clone()
                .all(|i| raw[i as usize] == sentinel_bytes[(i % 4) as usize])
        };
        if !untouched(0..pad) {
            return Err(fail("bytes before the output were overwritten".into()));
        }
        if !untouched(pad + data_bytes..2 * pad + bound) {
            return Err(fail(format!(
                "bytes after the output were overwritten (output is {data_bytes} bytes)"
            )));
        }
        let nmse = compare(&got, &self.expected, self.tol).map_err(|e| fail(e.to_string()))?;
        log_comparison(&ctx.label(), &self.name, nmse);
        Ok(Outcome::Passed { nmse })
    }

    fn tol_text(&self) -> String {
        match self.tol {
            Tolerance::Exact => "exact".into(),
            Tolerance::Nmse(b) => format!("NMSE budget {b:.0e}"),
        }
    }
}

/// Appends `adapter<TAB>case<TAB>nmse` to the file named by `WRING_GPU_LOG`, so CI can count how many
/// comparisons ran on which adapter (and prove they were not skipped).
fn log_comparison(adapter: &str, case: &str, nmse: f64) {
    static LOG: Mutex<()> = Mutex::new(());
    let Ok(path) = std::env::var("WRING_GPU_LOG") else {
        return;
    };
    let _guard = LOG.lock();
    let mut line = String::new();
    let _ = writeln!(line, "{adapter}\t{case}\t{nmse:.3e}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
