//! `tviterbi`: the trellis encoder on the device. Budget: exact (costs are integer sums of squares on the
//! encoder's fixed-point grid, ties go to the lowest index in both, so the stream must be the CPU
//! encoder's bit for bit). Tiles of random values over the code's spread with a few clamped to the grid's
//! ends; 2, 3 and 4 bits; states of 8 and 10 bits (the search is the same loop at every width; wider states
//! only cost the software adapters time); one tile and several in one launch.

use wring::kernels::check::Tolerance;
use wring::kernels::sparse::{Tviterbi, tviterbi};
use wring::kernels::{Choice, DType};
use wring::quant::trellis;
use wring::runtime::dispatch::TviterbiScratch;

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("tviterbi") {
        let bits = v.define_u32("BITS");
        for (i, &(state, tiles)) in [(8u32, 3usize), (10, 1)].iter().enumerate() {
            out.push(planned(v, move || {
                let seed = 500 + i as u64 + u64::from(bits) * 10;
                let mut rng = Rng::new(seed);
                let mut x: Vec<i32> = rng
                    .vec(tiles * trellis::SEQ, -2.5, 2.5)
                    .into_iter()
                    .map(trellis::to_fixed)
                    .collect();
                x[5] = trellis::FIXED_MAX;
                x[77] = -trellis::FIXED_MAX;
                let unit = Tviterbi { bits, state, tiles };
                let expected = tviterbi::cpu(bits, state, &x);
                let words = expected.len();
                Case {
                    name: format!(
                        "tviterbi variant={} bits={bits} state={state} tiles={tiles}",
                        v.name
                    ),
                    tol: Tolerance::Exact,
                    out_dtype: DType::U32,
                    out_shape: vec![words],
                    expected: expected.iter().map(|&w| f32::from_bits(w)).collect(),
                    record: Box::new(move |ctx, step, out| {
                        let tx = ctx.upload(&[x.len()], &x)?;
                        let scratch = TviterbiScratch::new(ctx, &unit)?;
                        scratch.run_with(step, &unit, Choice::Force(&v.name), &tx, out)
                    }),
                    needs_f16: false,
                    needs_subgroup: false,
                }
            }));
        }
    }
    out
}
