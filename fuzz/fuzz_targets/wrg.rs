//! A `.wrg` stream through everything decoding does before the inverse transform on the device: the
//! container (magic, version, shape limits, CRC), the subband headers, the entropy decoder with its
//! prediction, and dequantization. The result must be as long as the header's layout says.
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
        if let Ok((h, p, coeffs)) = wring_codec::decode_coefficients(&fixed, &LIMITS) {
            assert_eq!(coeffs.len(), p.coeff_len());
            let _ = h;
            assert!(coeffs.iter().all(|c| c.is_finite()));
        }
    }
});
