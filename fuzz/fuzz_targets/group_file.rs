//! A file of compressed weights (`wring quantize`'s output) on arbitrary bytes: the safetensors container,
//! the schema, every layout and every matrix's contents. A file that parses must decode to finite weights,
//! and serialize back to a file that parses to the same matrices.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wring_io::group_file::{parse, to_bytes};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = parse(data) {
        for m in file.matrices.values() {
            assert!(m.check().is_ok());
            assert!(m.dequantize().iter().all(|v| v.is_finite()));
        }
        let again = parse(&to_bytes(&file).expect("a parsed file serializes")).expect("and parses");
        assert_eq!(again, file);
    }
});
