//! The `wring` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wring_runtime::{Context, ContextOptions, Tensor, human_bytes, ops};

#[derive(Parser, Debug)]
#[command(name = "wring", version, about = "Portable GPU compute for compressed inference and neural compression")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the GPU adapters wgpu finds, the one wring chooses and why, and its limits and features.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure the chosen adapter's copy bandwidth with the copy kernel (GPU timestamps where available).
    Probe {
        /// Buffer size in MiB.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Timed repetitions.
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("WRING_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { json } => info(json),
        Command::Probe { mib, reps } => probe(mib, reps),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(json: bool) -> Result<(), wring_runtime::Error> {
    let (reports, chosen, why) = wring_runtime::adapter_reports()?;
    let ctx = Context::new(ContextOptions::default())?;
    let caps = ctx.caps();
    if json {
        let adapters: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "index": r.index,
                    "name": r.info.name,
                    "backend": format!("{:?}", r.info.backend),
                    "device_type": format!("{:?}", r.info.device_type),
                    "driver": r.info.driver,
                    "driver_info": r.info.driver_info,
                    "chosen": r.index == chosen,
                })
            })
            .collect();
        let l = &ctx.info().limits;
        let out = serde_json::json!({
            "adapters": adapters,
            "chosen": chosen,
            "why": why,
            "features": { "shader_f16": caps.f16, "subgroup": caps.subgroup,
                           "timestamp_query": reports[chosen].features.contains(wring_runtime::wgpu::Features::TIMESTAMP_QUERY) },
            "limits": {
                "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
                "max_buffer_size": l.max_buffer_size,
                "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                "min_storage_buffer_offset_alignment": l.min_storage_buffer_offset_alignment,
            }
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!("Adapters found:");
    for r in &reports {
        let mark = if r.index == chosen { "*" } else { " " };
        println!(
            " {mark} [{}] {} ({:?}, {:?}; driver {} {})",
            r.index, r.info.name, r.info.backend, r.info.device_type, r.info.driver, r.info.driver_info
        );
    }
    println!("Chosen: [{chosen}] {} because {why}.", reports[chosen].info.name);
    let l = &ctx.info().limits;
    let f = reports[chosen].features;
    println!("Features used by wring:");
    println!("  SHADER_F16       {}", yes(caps.f16));
    println!("  SUBGROUP         {}", yes(caps.subgroup));
    println!("  TIMESTAMP_QUERY  {}", yes(f.contains(wring_runtime::wgpu::Features::TIMESTAMP_QUERY)));
    println!("Limits:");
    println!("  max storage buffer binding  {}", human_bytes(l.max_storage_buffer_binding_size));
    println!("  max buffer size             {}", human_bytes(l.max_buffer_size));
    println!("  max workgroups per dim      {}", l.max_compute_workgroups_per_dimension);
    println!("  max invocations/workgroup   {}", l.max_compute_invocations_per_workgroup);
    println!("  workgroup storage           {}", human_bytes(u64::from(l.max_compute_workgroup_storage_size)));
    println!("  storage offset alignment    {}", l.min_storage_buffer_offset_alignment);
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no (fallback variants are used)" }
}

fn probe(mib: u64, reps: usize) -> Result<(), wring_runtime::Error> {
    let ctx = Context::new(ContextOptions { profile: true, ..Default::default() })?;
    let words = (mib << 20) as usize / 4;
    let src = ctx.upload(&[words], &vec![0x5a5a_5a5au32; words])?;
    let dst: Tensor = ctx.empty(&[words], wring_kernels::DType::U32)?;
    // One untimed launch compiles the pipeline and touches the memory.
    let mut warm = ctx.step("probe warm-up");
    ops::copy(&mut warm, &src, &dst, wring_kernels::Choice::Auto)?;
    warm.submit()?;
    ctx.wait()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        let mut s = ctx.step("probe");
        ops::copy(&mut s, &src, &dst, wring_kernels::Choice::Auto)?;
        let report = s.submit()?;
        ctx.wait()?;
        let secs = match report.times {
            Some(t) => t.iter().map(|l| l.nanos).sum::<f64>() * 1e-9,
            None => start.elapsed().as_secs_f64(),
        };
        best = best.min(secs);
    }
    let gbs = 2.0 * (mib << 20) as f64 / best / 1e9;
    let check: Vec<u32> = ctx.read(&dst)?;
    let ok = check.iter().all(|&w| w == 0x5a5a_5a5a);
    println!(
        "copy kernel on {}: {mib} MiB in {:.3} ms = {gbs:.2} GB/s (read + write), result {}",
        ctx.label(),
        best * 1e3,
        if ok { "verified" } else { "WRONG" }
    );
    if ok { Ok(()) } else { Err(wring_runtime::Error::Device("the copy probe read back wrong data".into())) }
}
