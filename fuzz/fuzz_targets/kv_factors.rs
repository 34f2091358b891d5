//! A file of low-rank KV factors (`wring kv-calibrate`'s output) on arbitrary bytes: the safetensors
//! container, the schema, every factor's type and shape. A file that parses must hold finite factors of
//! the shapes it states, and serialize back to a file that parses to the same factors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wring_io::kv_factors::{parse, to_bytes};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = parse(data) {
        assert!(f.rank >= 1 && f.rank <= f.kv);
        for pair in &f.layers {
            for factor in pair {
                assert_eq!(factor.a.len(), f.rank * f.hidden);
                assert_eq!(factor.b.len(), f.kv * f.rank);
                assert!(factor.a.iter().chain(&factor.b).all(|v| v.is_finite()));
            }
        }
        let again = parse(&to_bytes(&f).expect("a parsed file serializes")).expect("and parses");
        assert_eq!(again, f);
    }
});
