//! `wring generate --prompts` reads a JSONL file of requests and, when resuming, its own earlier output:
//! both from a stranger here. The bytes split into lines under a small length cap (so the over-long path
//! runs): every kept line is within the cap and has no newline, and the lines and skipped bytes account
//! for the input; each line is parsed as the batch mode parses a request. The same bytes as an earlier
//! output keep only whole answer lines, each once, which parse again as answers.
#![no_main]

use std::io::BufRead as _;

use libfuzzer_sys::fuzz_target;
use wring_server::api::{ChatRequest, CompletionRequest, from_slice};
use wring_server::jsonl::{Line, kept_answers, read_line};

const CAP: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut r = std::io::Cursor::new(data);
    let mut seen = 0usize;
    while let Some(line) = read_line(&mut r, CAP).unwrap() {
        match line {
            Line::Text(bytes) => {
                assert!(bytes.len() <= CAP && !bytes.contains(&b'\n'));
                seen += bytes.len();
                if let Ok(req) = from_slice::<ChatRequest>(&bytes) {
                    let _ = req.params.check(4096);
                }
                if let Ok(req) = from_slice::<CompletionRequest>(&bytes) {
                    let _ = req.params.check(4096);
                }
            }
            Line::TooLong(len) => {
                assert!(len > CAP);
                seen += len;
            }
        }
    }
    assert!(seen <= data.len());
    assert!(r.fill_buf().unwrap().is_empty());
    let mut kept = Vec::new();
    let done = kept_answers(&mut std::io::Cursor::new(data), &mut kept).unwrap();
    let again = kept_answers(&mut std::io::Cursor::new(&kept), &mut Vec::new()).unwrap();
    assert_eq!(done, again);
    assert_eq!(kept.iter().filter(|&&b| b == b'\n').count(), done.len());
});
