//! The kernel test harness, after ggml's test-backend-ops: one case type for every kernel, run on every
//! adapter, judged against the CPU twin by NaN/Inf checks then an NMSE budget, with sentinel bytes around
//! the output to catch out-of-bounds writes.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use wring::kernels::DType;
use wring::kernels::check::{Tolerance, compare};
use wring::kernels::tensor::CopyWords;
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

/// A buffer a case's launches write besides the checked output (scratch lists, the caches of rope_qkv, the
/// sum of rmsnorm_add), with sentinel words before and after it.
struct Guarded {
    whole: Tensor,
    pad: u64,
    data_bytes: u64,
    bound: u64,
    what: String,
}

thread_local! {
    /// The guarded buffers the case being recorded on this thread allocated.
    static GUARDED: RefCell<Vec<Guarded>> = const { RefCell::new(Vec::new()) };
}

/// A device tensor wrapped in sentinels: a kernel that writes outside it fails the case it belongs to,
/// exactly as for the checked output. Use it for every buffer a case's launches write.
pub fn guarded(ctx: &Context, shape: &[usize], dtype: DType) -> wring::runtime::Result<Tensor> {
    let len: usize = shape.iter().product();
    let data_bytes = dtype
        .bytes_for(len)
        .ok_or_else(|| wring::runtime::Error::Shape(format!("{len} values do not fit {dtype}")))?
        as u64;
    let bound = data_bytes.max(4).next_multiple_of(4);
    let pad = ctx.view_alignment().max(256);
    let words = ((2 * pad + bound) / 4) as usize;
    let whole = ctx.upload(&[words], &vec![SENTINEL; words])?;
    let t = ctx.view(&whole, pad, shape, dtype)?;
    GUARDED.with(|g| {
        g.borrow_mut().push(Guarded {
            whole,
            pad,
            data_bytes,
            bound,
            what: format!("{dtype} {shape:?}"),
        })
    });
    Ok(t)
}

/// A guarded tensor holding `data`.
pub fn guarded_upload<T: wring::kernels::Element>(
    ctx: &Context,
    shape: &[usize],
    data: &[T],
) -> wring::runtime::Result<Tensor> {
    // WebGPU writes whole words: an odd number of 2-byte values would overwrite two sentinel bytes.
    if !size_of_val(data).is_multiple_of(4) {
        return Err(wring::runtime::Error::Shape(
            "a guarded upload must be a whole number of 32-bit words".into(),
        ));
    }
    let t = guarded(ctx, shape, T::DTYPE)?;
    ctx.write(&t, data)?;
    Ok(t)
}

/// Copies all of `src` (32-bit words) into `dst` from word `at`: how cases with several outputs put them
/// side by side in the one output the harness checks.
pub fn copy_into(
    step: &mut Step<'_>,
    src: &Tensor,
    dst: &Tensor,
    at: usize,
) -> wring::runtime::Result<()> {
    let unit = CopyWords {
        words: src.len(),
        src_offset: 0,
        dst_offset: at,
    };
    step.run(&unit, &[("src", src), ("dst", dst)])
}

/// Whether the bytes outside `pad..pad + data_bytes` of a sentinel-wrapped buffer are untouched.
fn sentinels_hold(raw: &[u8], pad: u64, data_bytes: u64, bound: u64) -> Result<(), String> {
    let sentinel_bytes = SENTINEL.to_le_bytes();
    let untouched = |range: std::ops::Range<u64>| {
        range
            .clone()
            .all(|i| raw[i as usize] == sentinel_bytes[(i % 4) as usize])
    };
    if !untouched(0..pad) {
        return Err("bytes before it were overwritten".into());
    }
    if !untouched(pad + data_bytes..2 * pad + bound) {
        return Err(format!(
            "bytes after it were overwritten (it is {data_bytes} bytes)"
        ));
    }
    Ok(())
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

/// Known wrong behaviour of a driver, as data (wgpu's tests keep theirs the same way): a case on an adapter
/// whose label contains `adapter` and whose name starts with `case` is not run, and is reported and
/// counted as not applicable with the reason, never silently passed. Remove a line when the driver is
/// fixed; the count in CI shows what it still hides.
const KNOWN_DRIVER_FAILURES: &[(&str, &str, &str)] = &[(
    "llvmpipe (LLVM 15.0.6, 256 bits) (Gl)",
    "qmatmul ",
    // FIXME: Mesa 25.0's llvmpipe compiles the GL version of qmatmul's barrier-separated tile loops into
    // LLVM coroutines whose frame building (CoroSplit) ran past 4 GiB and did not finish in 10 minutes;
    // lavapipe (Vulkan) on the same LLVM compiles it in under a second. CPU adapters never choose
    // qmatmul (they use qmatvec's 8-row tiles), so only the forced cases are affected.
    "the driver's shader compiler does not finish (llvmpipe GL, LLVM 15 CoroSplit)",
)];

/// wgpu's OpenGL backend shares one context per adapter and gives up (panics) when another thread holds
/// it for more than a second, which a long shader compile on llvmpipe does; GL cases therefore run one at
/// a time, while the other adapters' cases run in parallel.
static GL_CASES: Mutex<()> = Mutex::new(());

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
                        Outcome::NotApplicable(f) => {
                            eprintln!("n/a  [{}] on {}: {f}", self.name, ctx.label())
                        }
                    }
                }
            }
        }
    }

    pub fn check_on(&self, ctx: &Context) -> Result<Outcome, String> {
        let missing = if self.needs_f16 && !ctx.caps().f16 {
            Some("the adapter lacks SHADER_F16")
        } else if self.needs_subgroup && !ctx.caps().subgroup {
            Some("the adapter lacks SUBGROUP")
        } else {
            None
        };
        if let Some(feature) = missing {
            log_line(&ctx.label(), &self.name, &format!("n/a:{feature}"));
            return Ok(Outcome::NotApplicable(feature));
        }
        let label = ctx.label();
        if let Some((_, _, why)) = KNOWN_DRIVER_FAILURES
            .iter()
            .find(|(adapter, case, _)| label.contains(adapter) && self.name.starts_with(case))
        {
            log_line(&label, &self.name, &format!("n/a:{why}"));
            return Ok(Outcome::NotApplicable(why));
        }
        let _gl = label
            .ends_with("(Gl)")
            .then(|| GL_CASES.lock().unwrap_or_else(|e| e.into_inner()));
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
        GUARDED.with(|g| g.borrow_mut().clear());
        let mut step = ctx.step(&self.name);
        (self.record)(ctx, &mut step, &out).map_err(|e| fail(format!("recording failed: {e}")))?;
        step.submit()
            .map_err(|e| fail(format!("submit failed: {e}")))?;
        for g in GUARDED.with(|g| std::mem::take(&mut *g.borrow_mut())) {
            let raw = ctx
                .read_underlying_bytes(&g.whole)
                .map_err(|e| fail(e.to_string()))?;
            sentinels_hold(&raw, g.pad, g.data_bytes, g.bound)
                .map_err(|e| fail(format!("a written buffer ({}): {e}", g.what)))?;
        }
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
        sentinels_hold(&raw, pad, data_bytes, bound)
            .map_err(|e| fail(format!("the output: {e}")))?;
        let nmse = compare(&got, &self.expected, self.tol).map_err(|e| fail(e.to_string()))?;
        log_line(&ctx.label(), &self.name, &format!("{nmse:.3e}"));
        Ok(Outcome::Passed { nmse })
    }

    fn tol_text(&self) -> String {
        match self.tol {
            Tolerance::Exact => "exact".into(),
            Tolerance::Nmse(b) => format!("NMSE budget {b:.0e}"),
            Tolerance::Q8Units(b) => format!("8-bit units, NMSE budget {b:.0e} on their values"),
        }
    }
}

/// Appends `adapter<TAB>case<TAB>nmse` (or `n/a:FEATURE` for a case the adapter cannot run) to the file
/// named by `WRING_GPU_LOG`, so CI can count how many comparisons ran on which adapter, and how many were
/// not applicable there (and prove they were not skipped).
fn log_line(adapter: &str, case: &str, outcome: &str) {
    static LOG: Mutex<()> = Mutex::new(());
    let Ok(path) = std::env::var("WRING_GPU_LOG") else {
        return;
    };
    let _guard = LOG.lock();
    let mut line = String::new();
    let _ = writeln!(line, "{adapter}\t{case}\t{outcome}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
