//! The f32 safetensors reader (codebooks) on arbitrary bytes: a typed error or values matching the shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((shape, values)) = wring_io::safetensors_f32::parse(data, "codebooks") {
        assert_eq!(values.len(), shape.iter().product::<usize>());
    }
});
