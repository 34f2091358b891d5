//! A `.wrg` stream through everything decoding does before the inverse transform on the device: the
//! container (magic, version, shape limits, CRC), the packet trees, the band headers, the context model's
//! range decoder with the lowpass prediction, and dequantization. Every level that holds a leaf must be as
//! long as the header's layout says, and finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Small shapes keep each execution quick; the limit itself is checked before any allocation.
const LIMITS: wring_codec::Limits = wring_codec::Limits {
    max_samples: 1 << 16,
};

fuzz_target!(|data: &[u8]| {
    // Most mutations break the CRC and stop at the first check; the second reading repairs it, so the
    // fuzzer also reaches the header checks and the entropy decoder behind them.
    let _ = wring_codec::decode_coefficients(data, &LIMITS);
    if data.len() >= 8 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        if let Ok((h, coeffs)) = wring_codec::decode_coefficients(&fixed, &LIMITS) {
            assert_eq!(coeffs.levels.len(), h.levels + 1);
            for (level, &len) in coeffs.levels.iter().zip(&coeffs.level_lens) {
                assert!(level.is_empty() || level.len() == len);
                assert!(level.iter().all(|c| c.is_finite()));
            }
        }
    }
});
