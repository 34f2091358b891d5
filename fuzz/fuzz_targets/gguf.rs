//! The GGUF reader on arbitrary bytes: a typed error or a file whose every tensor's data can be borrowed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = wring_gguf::Gguf::from_vec(data.to_vec()) {
        for t in &g.tensors {
            let bytes = g.tensor_data(t);
            assert_eq!(bytes.len() as u64, t.bytes);
        }
        let _ = g.get("general.architecture");
    }
});
