//! The server's request bodies from a stranger: the bytes parsed as a chat and as a text completion
//! request, then checked as the handlers check them. Parsing and checking end in a request or a typed
//! 400, never a panic, and a checked request keeps its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wring_server::api::{ChatRequest, CompletionRequest, from_slice};

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = from_slice::<ChatRequest>(data) {
        for (i, m) in req.messages.iter().enumerate() {
            let _ = m.text(i);
        }
        if let Ok(c) = req.params.check(LIMIT) {
            assert!(c.max_tokens.is_none_or(|m| (1..=LIMIT).contains(&m)));
            assert!(c.stops.len() <= 4);
            assert!((0.0..=2.0).contains(&c.temperature));
        }
    }
    if let Ok(req) = from_slice::<CompletionRequest>(data)
        && let Ok(c) = req.params.check(LIMIT)
    {
        assert!(c.top_p > 0.0 && c.top_p <= 1.0);
    }
});
