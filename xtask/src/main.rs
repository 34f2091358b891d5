//! Workspace chores. `cargo xtask bench` runs the benchmark suite on the chosen adapter and keeps the run
//! under `bench-results/<date>-<adapter>/` with the exact command, versions, raw JSON and a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../../benches/suite.rs"]
mod suite;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark every kernel: GB/s or GFLOP/s, and the fraction of the measured copy bandwidth.
    Bench {
        /// Only kernels whose name contains this (copy always runs: it is the reference).
        filter: Option<String>,
        /// Fewer sizes and repetitions.
        #[arg(long)]
        quick: bool,
        /// Print only; do not write bench-results/.
        #[arg(long)]
        no_save: bool,
        /// Where to keep results (default bench-results/).
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { filter, quick, no_save, out } => {
            let opts = suite::Options { quick, filter };
            match suite::run(&opts) {
                Ok(report) => {
                    if !no_save && let Err(e) = save(&out, &report) {
                        eprintln!("error: could not write results: {e}");
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Today's date as YYYY-MM-DD (UTC), from the days since the epoch (Howard Hinnant's civil_from_days).
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).take(3).collect::<Vec<_>>().join("-")
}

/// Versions of the crates that decide GPU behaviour, read from Cargo.lock.
fn locked_versions() -> serde_json::Value {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut out = serde_json::Map::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name)
            && ["wgpu", "wgpu-core", "wgpu-hal", "naga"].contains(&n.as_str())
        {
            out.insert(n.clone(), v.trim_matches('"').into());
        }
    }
    out.into()
}

fn save(root: &Path, r: &suite::Report) -> std::io::Result<()> {
    let dir = root.join(format!("{}-{}", today(), slug(&r.adapter)));
    std::fs::create_dir_all(&dir)?;
    let rustc = std::process::Command::new("rustc").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let command = format!("cargo xtask {}", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    let json = serde_json::json!({
        "command": command,
        "date": today(),
        "wring": env!("CARGO_PKG_VERSION"),
        "versions": locked_versions(),
        "rustc": rustc,
        "host": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH,
                  "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "report": r,
    });
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    let mut md = format!(
        "# wring bench, {}\n\nCommand: `{command}`  \nAdapter: {} ({}, {}), driver {} {}  \nTimer: {}  \n\n\
         Copy bandwidth (copy kernel, read + write): **{:.2} GB/s**; DMA buffer copy (peer): {:.2} GB/s \
         (kernel/DMA = {:.2}).  \nBest matmul: **{:.1} GFLOP/s**.  \nDispatch overhead: {:.1} us per launch.\n\n\
         | kernel | variant | shape | median us | GB/s | GFLOP/s | of copy BW |\n|---|---|---|---:|---:|---:|---:|\n",
        today(), r.adapter, r.backend, r.device_type, r.driver, r.driver_info, r.timer, r.copy_gb_per_s, r.dma_copy_gb_per_s,
        r.copy_gb_per_s / r.dma_copy_gb_per_s, r.matmul_gflop_per_s, r.dispatch_overhead_us,
    );
    for row in &r.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {} | {:.0}% |\n",
            row.kernel,
            row.variant,
            row.shape,
            row.seconds * 1e6,
            row.gb_per_s,
            if row.flops > 0.0 { format!("{:.1}", row.gflop_per_s) } else { "-".into() },
            row.fraction_of_copy * 100.0
        ));
    }
    std::fs::write(dir.join("summary.md"), md)?;
    println!("results written to {}", dir.display());
    Ok(())
}
