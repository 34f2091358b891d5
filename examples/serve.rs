//! The OpenAI-compatible server inside a program: load a model on the server's engine thread, serve it on
//! a port of the program's choosing, and stop it when the program is done. Run with
//! `cargo run --release --example serve -- [MODEL] [ADDRESS]`, then send requests to
//! `http://ADDRESS/v1/chat/completions`.

use wring::gguf::Gguf;
use wring::llm::{GgufTokenizer, KvMode, Llama};
use wring::runtime::{Context, ContextOptions};
use wring::server::{Engine, Loaded, ServeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let addr: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;

    // The device context is created on the engine thread that uses it, so loading happens in the closure.
    let path = model.clone();
    let engine = Engine::start(8, move || {
        let gguf = Gguf::open(&path)?;
        let ctx = Context::new(ContextOptions::default())?;
        let mut model = Llama::load(&ctx, &gguf, 2048, |_, _| {})?;
        // A paged f16 cache of 4,096 positions in blocks of 16: up to 4 requests decode in each step.
        model.set_paged(&ctx, KvMode::F16, 4096 / 16, 16)?;
        Ok(Loaded {
            ctx,
            model,
            tokenizer: GgufTokenizer::from_gguf(&gguf)?,
            parallel: 4,
        })
    })?;

    let running = wring::server::spawn(addr, engine, ServeOptions::new("smollm2"))?;
    eprintln!("serving on http://{}/v1; press Enter to stop", running.addr);
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    // Stopping lets responses in flight finish.
    running.stop()?;
    Ok(())
}
