//! The .npy reader on arbitrary bytes: a typed error or data of exactly the length the shape implies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, bytes)) = wring_io::npy::parse(data) {
        let count: usize = h.shape.iter().product();
        let item = if h.descr == "<i8" { 8 } else { 4 };
        assert_eq!(bytes.len(), count * item);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wring_io::npy::parse_header(text);
    }
});
