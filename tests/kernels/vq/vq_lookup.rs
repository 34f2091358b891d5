//! `vq_lookup`: set, add or subtract codeword `ids[r]` on row r of a strided output, for the ids that lie
//! in one codebook tensor (others leave their row alone), f32 or f16 codebooks. The output starts from
//! random values, so columns outside the codeword and skipped rows must survive. Budget: exact bits (one
//! f32 add per value, in both).

use wring::kernels::check::Tolerance;
use wring::kernels::vq::{Lookup, LookupOp, vq};
use wring::kernels::{Choice, DType};

use crate::harness::{Case, Rng, copy_into};
use crate::kernels::{Planned, planned, variants};

/// (rows, codeword length, output row stride, first column, first code, codewords in the tensor).
const SHAPES: [(usize, usize, usize, usize, usize, usize); 4] = [
    (1, 1, 1, 0, 0, 1),
    (9, 3, 5, 1, 0, 17),
    (200, 16, 48, 32, 100, 64),
    (77, 37, 37, 0, 10, 300),
];

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("vq_lookup") {
        let f16 = v.define("ELEM") == Some("f16");
        for (i, (n, d, out_stride, out_offset, code_base, n_codes)) in
            SHAPES.into_iter().enumerate()
        {
            for op in [LookupOp::Set, LookupOp::Add, LookupOp::Sub] {
                out.push(planned(v, move || {
                    let mut rng = Rng::new(i as u64);
                    let mut codes = rng.vec(n_codes * d, -1.0, 1.0);
                    if f16 {
                        codes
                            .iter_mut()
                            .for_each(|c| *c = half::f16::from_f32(*c).to_f32());
                    }
                    // Ids below, inside and above this tensor's range of global codeword indices.
                    let span = (code_base + n_codes + 5) as u64;
                    let ids: Vec<u32> = (0..n).map(|_| (rng.next_u64() % span) as u32).collect();
                    let init = rng.vec(n * out_stride, -4.0, 4.0);
                    let dtype = if f16 { DType::F16 } else { DType::F32 };
                    let l = Lookup {
                        n,
                        d,
                        out_stride,
                        out_offset,
                        code_base,
                        n_codes,
                        op,
                        dtype,
                    };
                    let mut want = init.clone();
                    vq::cpu_lookup(&l, &ids, &codes, &mut want);
                    Case {
                        name: format!("vq_lookup variant={} {l:?}", v.name),
                        tol: Tolerance::Exact,
                        out_dtype: DType::F32,
                        out_shape: vec![n * out_stride],
                        expected: want,
                        record: Box::new(move |ctx, step, out| {
                            let t = if f16 {
                                let h: Vec<half::f16> =
                                    codes.iter().map(|&v| half::f16::from_f32(v)).collect();
                                ctx.upload(&[n_codes, d], &h)?
                            } else {
                                ctx.upload(&[n_codes, d], &codes)?
                            };
                            let (ti, t0) =
                                (ctx.upload(&[n], &ids)?, ctx.upload(&[init.len()], &init)?);
                            copy_into(step, &t0, out, 0)?;
                            let operands = [("ids", &ti), ("codes", &t), ("out", out)];
                            step.run_with(&l, Choice::Force(&v.name), &operands)
                        }),
                        needs_f16: f16,
                        needs_subgroup: false,
                    }
                }));
            }
        }
    }
    out
}
