//! `fill`: every word set to one value. Budget: exact bits.

use wring::kernels::check::Tolerance;
use wring::kernels::tensor::Fill;
use wring::kernels::tensor::fill;
use wring::kernels::{Choice, DType};

use crate::harness::Case;
use crate::kernels::{Planned, planned, variants};

/// Lengths around the workgroup's reach and past one grid dimension.
pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("fill") {
        for n in [1usize, 255, 1024, 1025, 70_001] {
            let value = 0x3F80_0000 + n as u32;
            out.push(planned(v, move || {
                let mut expected = vec![0u32; n];
                fill::cpu(&mut expected, value);
                Case {
                    name: format!("fill variant={} words={n} value={value:#x}", v.name),
                    tol: Tolerance::Exact,
                    out_dtype: DType::U32,
                    out_shape: vec![n],
                    expected: expected.into_iter().map(f32::from_bits).collect(),
                    record: Box::new(move |_, step, out| {
                        step.run_with(
                            &Fill { words: n, value },
                            Choice::Force(&v.name),
                            &[("dst", out)],
                        )
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
