//! The chat template renderer on a stranger's template: the input up to the first NUL is the template,
//! the rest the user's message. Rendering ends in output or a typed error within the fuel and output caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wring_llm::chat::{ChatMessage, render};

fuzz_target!(|data: &[u8]| {
    let (template, content) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"Hi"[..]),
    };
    let (Ok(template), Ok(content)) = (std::str::from_utf8(template), std::str::from_utf8(content))
    else {
        return;
    };
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", content),
    ];
    if let Ok(out) = render(template, &messages, true, "<s>", "</s>") {
        assert!(out.len() <= wring_llm::chat::MAX_OUTPUT);
    }
});
