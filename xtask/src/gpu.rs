//! `cargo xtask bench gpu`: what a machine with a GPU runs, in one command, the day one is available. It
//! builds in release, runs the kernel harness, the GPU-plan model tests and the back-end translation test
//! on every adapter, the kernel suite in quick mode and `bench llm` beside both of llama.cpp's back ends,
//! and keeps everything under `bench-results/<date>-<adapter>-gpu/` with the adapter's report. On lavapipe
//! the same command is its rehearsal.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one `bench gpu` run found.
#[derive(Debug, serde::Serialize)]
pub struct GpuReport {
    /// `wring info --json` of the chosen adapter.
    pub adapter: serde_json::Value,
    /// The planners' view of it (`cpu` or `gpu`) and why.
    pub plan: String,
    /// The host's CPU.
    pub host_cpu: String,
    /// The test command run and its totals.
    pub tests: TestTotals,
    /// GPU comparisons against CPU twins per adapter (from `WRING_GPU_LOG`).
    pub comparisons: Vec<(String, usize)>,
    /// Seconds per stage: release build, tests, kernel suite, LLM bench.
    pub stages: Vec<(String, f64)>,
    /// Where the kernel suite and the LLM bench wrote their results.
    pub suite_dir: Option<String>,
    pub llm_dir: Option<String>,
}

/// A test command's totals, summed over cargo's `test result:` lines.
#[derive(Debug, Default, serde::Serialize)]
pub struct TestTotals {
    pub command: String,
    pub passed: usize,
    pub failed: usize,
}

/// The tests `bench gpu` runs: every kernel case on every adapter, the whole model, the codec and VQ
/// under both plans, the translation of every variant, and the runtime's own tests.
const TEST_FILTERS: [&str; 4] = ["kernels::", "gpu_plan::", "backends::", "runtime::"];

/// Runs `cmd`, its output appended to `log`; Ok(true) when it exits 0.
fn logged(cmd: &mut Command, log: &Path) -> Result<bool, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let status = cmd
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    Ok(status.success())
}

/// Sums cargo's `test result:` lines.
fn totals(log: &str) -> (usize, usize) {
    let mut t = (0, 0);
    for line in log.lines().filter(|l| l.starts_with("test result:")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            let n = w[0].parse::<usize>().unwrap_or(0);
            if w[1].starts_with("passed") {
                t.0 += n;
            } else if w[1].starts_with("failed") {
                t.1 += n;
            }
        }
    }
    t
}

/// The whole run; `dir` is where its own files go. `suite` and `llm` run the in-process benchmarks and
/// return the directories they wrote.
pub fn run(
    quick: bool,
    dir: &Path,
    suite: impl FnOnce() -> Result<PathBuf, String>,
    llm: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<GpuReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut stages = Vec::new();
    let timed = |stages: &mut Vec<(String, f64)>, name: &str, start: std::time::Instant| {
        let s = start.elapsed().as_secs_f64();
        println!("== bench gpu: {name} took {s:.0} s");
        stages.push((name.to_string(), s));
    };

    // The adapter, as `wring info` reports it, and the plan in force.
    let (reports, chosen, why) = wring_runtime::adapter_reports().map_err(|e| e.to_string())?;
    let ctx = wring_runtime::Context::new(wring_runtime::ContextOptions::default())
        .map_err(|e| e.to_string())?;
    let info = &reports[chosen].info;
    let adapter = serde_json::json!({
        "name": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
        "why_chosen": why,
        "caps": format!("{:?}", ctx.caps()),
        "limits": format!("{:?}", ctx.info().limits),
        "others": reports.iter().filter(|r| r.index != chosen).map(|r| format!("{} ({:?}, {:?})", r.info.name, r.info.backend, r.info.device_type)).collect::<Vec<_>>(),
    });
    let plan = format!(
        "{}: {}",
        if ctx.caps().software { "cpu" } else { "gpu" },
        ctx.info().plan_why
    );
    drop(ctx);
    println!("== bench gpu on {} ({plan})", info.name);

    // llama.cpp, the peer: built once by tools/build-llama-cpp.sh unless LLAMA_BENCH names one.
    let log = dir.join("build.log");
    let start = std::time::Instant::now();
    if std::env::var_os("LLAMA_BENCH").is_none()
        && !Path::new("target/llama.cpp/build/bin/llama-bench").is_file()
    {
        println!(
            "== bench gpu: building llama.cpp (tools/build-llama-cpp.sh; log in {})",
            log.display()
        );
        if !logged(Command::new("bash").arg("tools/build-llama-cpp.sh"), &log)? {
            println!("llama.cpp did not build (see the log): the LLM rows will have no peer");
        }
    }
    // The release test binary (the xtask itself already runs in release).
    println!("== bench gpu: building the tests in release");
    if !logged(
        Command::new("cargo").args(["test", "--release", "--workspace", "--no-run"]),
        &log,
    )? {
        return Err(format!("the release build failed; see {}", log.display()));
    }
    timed(&mut stages, "builds", start);

    // The tests, with every GPU comparison logged per adapter.
    let start = std::time::Instant::now();
    let test_log = dir.join("tests.log");
    let comparisons_log = dir.join("gpu-comparisons.tsv");
    let _ = std::fs::remove_file(&test_log);
    let _ = std::fs::remove_file(&comparisons_log);
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--release", "--workspace", "--test", "main", "--"])
        .args(TEST_FILTERS)
        .env("WRING_GPU_LOG", &comparisons_log);
    let command = format!(
        "WRING_GPU_LOG={} cargo test --release --workspace --test main -- {}",
        comparisons_log.display(),
        TEST_FILTERS.join(" ")
    );
    println!("== bench gpu: {command}");
    let ok = logged(&mut cmd, &test_log)?;
    let text = std::fs::read_to_string(&test_log).unwrap_or_default();
    let (passed, failed) = totals(&text);
    println!("== bench gpu: tests {passed} passed, {failed} failed");
    let mut per_adapter: Vec<(String, usize)> = Vec::new();
    for line in std::fs::read_to_string(&comparisons_log)
        .unwrap_or_default()
        .lines()
    {
        let mut f = line.split('\t');
        let (Some(a), _, Some(result)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if result.starts_with("n/a") {
            continue;
        }
        match per_adapter.iter_mut().find(|(n, _)| n == a) {
            Some((_, c)) => *c += 1,
            None => per_adapter.push((a.to_string(), 1)),
        }
    }
    timed(&mut stages, "tests", start);
    let tests = TestTotals {
        command,
        passed,
        failed,
    };
    if !ok || failed > 0 || passed == 0 {
        return Err(format!(
            "the tests failed ({passed} passed, {failed} failed); see {}",
            test_log.display()
        ));
    }

    let start = std::time::Instant::now();
    let suite_dir = suite()?;
    timed(&mut stages, "kernel suite (quick)", start);
    let start = std::time::Instant::now();
    let llm_dir = llm()?;
    timed(
        &mut stages,
        if quick {
            "bench llm (quick)"
        } else {
            "bench llm"
        },
        start,
    );
    Ok(GpuReport {
        adapter,
        plan,
        host_cpu: crate::host_cpu(),
        tests,
        comparisons: per_adapter,
        stages,
        suite_dir: Some(suite_dir.display().to_string()),
        llm_dir: Some(llm_dir.display().to_string()),
    })
}

/// The run's summary page.
pub fn summary(r: &GpuReport, llm_summary: &str) -> String {
    let mut md = format!(
        "# bench gpu, {}\n\nAdapter: {} ({}, {}), driver {} {}  \nPlan: {}  \nHost CPU: {}\n\n",
        crate::today(),
        r.adapter["name"].as_str().unwrap_or(""),
        r.adapter["backend"].as_str().unwrap_or(""),
        r.adapter["device_type"].as_str().unwrap_or(""),
        r.adapter["driver"].as_str().unwrap_or(""),
        r.adapter["driver_info"].as_str().unwrap_or(""),
        r.plan,
        r.host_cpu
    );
    md += &format!(
        "Tests (`{}`): **{} passed, {} failed**.\n\n",
        r.tests.command, r.tests.passed, r.tests.failed
    );
    for (a, n) in &r.comparisons {
        md += &format!("- {n} GPU comparisons against CPU twins on {a}\n");
    }
    md += "\n| stage | seconds |\n|---|---:|\n";
    for (s, t) in &r.stages {
        md += &format!("| {s} | {t:.0} |\n");
    }
    md += &format!(
        "\nKernel suite: `{}`. LLM bench: `{}` (below).\n\n",
        r.suite_dir.as_deref().unwrap_or("-"),
        r.llm_dir.as_deref().unwrap_or("-")
    );
    md += llm_summary;
    md
}
