//! wring's one bench binary (`cargo bench`): runs the suite that `cargo xtask bench` runs, without
//! writing `bench-results/`. Pass `--quick` for a smoke run and a kernel name to filter.

#[path = "suite.rs"]
mod suite;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let opts = suite::Options {
        quick: args.iter().any(|a| a == "--quick"),
        filter: args.iter().find(|a| !a.starts_with("--")).cloned(),
    };
    if let Err(e) = suite::run(&opts) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
