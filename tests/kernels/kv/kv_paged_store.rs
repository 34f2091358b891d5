//! `kv_paged_store`: a step's keys and values written at their tokens' slots of a paged cache's pools.
//! Output: both whole pools (slots the step does not name must keep what they held), as words. Budget:
//! exact. The f32 pool is a copy, the f16 rounding is integer arithmetic in both the shader and the twin,
//! and a code is floor((x - min) / scale + 0.5) in f32 in both, with the scale and minimum rounded to f16
//! by integer arithmetic: exact wherever the adapter's division is correctly rounded (lavapipe's and
//! llvmpipe's are; Vulkan allows 2.5 ulp, which could move a code at a rounding boundary by one and would
//! show here). Shapes: SmolLM2's channels for a decode batch of 5 tokens scattered over the pool and a
//! 13-token chunk, two small heads, and values past f16's range (clamped to its largest finite value,
//! never stored as infinities). In the 13-token chunk one token's slot is NO_SLOT (a KIVI step's
//! position in a block it seals), which must write nothing.

use wring::kernels::kv::paged::{self, KvPagedStore};
use wring::kernels::{Choice, DType, Variant, check::Tolerance};

use crate::harness::{Case, Rng, copy_into, guarded_upload};
use crate::kernels::{Planned, planned, variants};

fn case(
    v: &'static Variant,
    (kv, head_dim, tokens, slots, range): (usize, usize, usize, usize, f32),
    seed: u64,
) -> Case<'static> {
    let pool = paged::variant_pool(v);
    let mut rng = Rng::new(seed);
    let (k, vals) = (
        rng.vec(tokens * kv, -range, range),
        rng.vec(tokens * kv, -range, range),
    );
    // Distinct slots in a shuffled order.
    let mut all: Vec<u32> = (0..slots as u32).collect();
    for i in (1..all.len()).rev() {
        all.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut at: Vec<u32> = all[..tokens].to_vec();
    if tokens == 13 {
        at[4] = paged::NO_SLOT;
    }
    let kw0 = pool.pack(&rng.vec(slots * kv, -1.0, 1.0), kv, head_dim);
    let vw0 = pool.pack(&rng.vec(slots * kv, -1.0, 1.0), kv, head_dim);
    let u = KvPagedStore {
        kv,
        head_dim,
        tokens,
        slots,
        pool,
    };
    let (mut kp, mut vp) = (kw0.clone(), vw0.clone());
    paged::cpu_store(&u, &k, &vals, &at, &mut kp, &mut vp);
    let expected: Vec<f32> = [kp, vp].concat().into_iter().map(f32::from_bits).collect();
    Case {
        name: format!(
            "kv_paged_store variant={} {u:?} range={range} seed={seed}",
            v.name
        ),
        tol: Tolerance::Exact,
        out_dtype: DType::U32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let (tkp, tvp) = (
                guarded_upload(ctx, &[kw0.len()], &kw0)?,
                guarded_upload(ctx, &[vw0.len()], &vw0)?,
            );
            let ops = [
                ("k", &ctx.upload(&[k.len()], &k)?),
                ("v", &ctx.upload(&[vals.len()], &vals)?),
                ("slots", &ctx.upload(&[at.len()], &at)?),
                ("kp", &tkp),
                ("vp", &tvp),
            ];
            step.run_with(&u, Choice::Force(&v.name), &ops)?;
            copy_into(step, &tkp, out, 0)?;
            copy_into(step, &tvp, out, kw0.len())
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_paged_store") {
        for (i, &shape) in [
            (192, 64, 5, 64, 3.0),
            (192, 64, 13, 48, 3.0),
            (16, 8, 3, 16, 3.0),
            (16, 8, 4, 8, 1e6),
        ]
        .iter()
        .enumerate()
        {
            out.push(planned(v, move || case(v, shape, i as u64)));
        }
    }
    out
}
