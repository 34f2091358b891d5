//! Embedding wring in a program: load a GGUF model, stream generated tokens through an iterator, and
//! cancel from another thread. Run with `cargo run --release --example generate -- [MODEL] [PROMPT]`
//! (the default model comes from `bash .ci/fetch-model.sh`).

use std::io::Write as _;

use wring::gguf::Gguf;
use wring::llm::{Cancel, GgufTokenizer, Llama, Sampler, TextStream};
use wring::runtime::{Context, ContextOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let prompt = args.next().unwrap_or_else(|| "Once upon a time".into());

    // Everything lives in values the program owns: no global state, several models can coexist.
    let gguf = Gguf::open(&model)?;
    let tokenizer = GgufTokenizer::from_gguf(&gguf)?;
    let ctx = Context::new(ContextOptions::default())?;
    let mut llm = Llama::load(&ctx, &gguf, 2048, |done, total| {
        eprint!("\rloading {done}/{total}")
    })?;
    eprintln!();

    // A UI would keep this handle and call cancel() from its own thread; here a timer does it.
    let cancel = Cancel::new();
    let stopper = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        stopper.cancel();
    });

    let ids = tokenizer.encode(&prompt)?;
    print!("{prompt}");
    // TextStream hands out whole characters only, whatever byte boundaries the tokens have.
    let mut stream = TextStream::new(&tokenizer);
    for token in llm.generate(
        &ctx,
        &ids,
        Sampler::new(0.8, 40, 0.95, 0.05, 1.1, 42)?,
        &tokenizer.stop_tokens,
        64,
        cancel,
    )? {
        print!("{}", stream.push(token?)?);
        std::io::stdout().flush()?;
    }
    println!();
    Ok(())
}
