//! `kv_paged_seal`: full blocks of a paged code pool quantized (keys per channel over the block, values
//! per position and head) from the step's keys and values and what earlier steps left in the sequence's
//! f16 tail. Output: both whole pools (blocks no job names must keep what they held), as words. Budget:
//! exact: a code is floor((x - min) / scale + 0.5) in f32 on both sides, with the scale and minimum rounded
//! to f16 by integer arithmetic and every input rounded to f16 first, exact wherever the adapter's division
//! is correctly rounded (lavapipe's and llvmpipe's are; Vulkan allows 2.5 ulp, which could move a code at
//! a rounding boundary by one and would show here). Every code width (q8, q4, q2) runs every job list. Jobs: a decode step sealing a block whose first 15 positions are staged in a tail,
//! a prompt chunk sealing two blocks of its own and a third begun in a tail, blocks of 8 and 32, small
//! heads of 16 channels, and values past f16's range (clamped to its largest finite value). A test below
//! checks that a block's codes do not depend on how its positions were split between steps.

use wring::kernels::kv::paged::{self, KvPagedSeal, Pool};
use wring::kernels::{Choice, DType, Variant, check::Tolerance};

use crate::harness::{Case, Rng, copy_into, guarded_upload};
use crate::kernels::{Planned, planned, variants};

/// A scenario: channels, head_dim, block, blocks, tails, step tokens, jobs and the value range.
type Shape = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    &'static [[u32; 4]],
    f32,
);

const SHAPES: &[Shape] = &[
    // Decode: block 5's first 15 positions are in tail 2's ring (two blocks of 16 from slot 64; block 5
    // is odd, so its positions start at ring slot 80), the step's token 3 is its last.
    (192, 64, 16, 8, 4, 6, &[[5, 80, 15, 3]], 3.0),
    // A chunk of 40 tokens from position 24 of a sequence in blocks of 16: block 1 takes its 8 positions
    // staged in tail 0's ring (from slot 16) and tokens 0-7, block 6 tokens 8-23; tokens 24-39 seal
    // block 3.
    (
        192,
        64,
        16,
        8,
        2,
        40,
        &[[1, 16, 8, 0], [6, 0, 0, 8], [3, 16, 0, 24]],
        3.0,
    ),
    (32, 16, 8, 4, 3, 9, &[[0, 16, 0, 1], [3, 40, 7, 0]], 3.0),
    (32, 16, 32, 2, 1, 32, &[[1, 32, 0, 0]], 1e6),
];

fn inputs(
    pool: Pool,
    shape: Shape,
    seed: u64,
) -> (KvPagedSeal, Vec<f32>, Vec<f32>, Vec<u32>, Vec<u32>) {
    let (kv, head_dim, block, blocks, tails, tokens, jobs, range) = shape;
    let mut rng = Rng::new(seed);
    let u = KvPagedSeal {
        pool,
        kv,
        head_dim,
        block,
        blocks,
        tails,
        tokens,
        jobs: jobs.len(),
    };
    let (k, v) = (
        rng.vec(tokens * kv, -range, range),
        rng.vec(tokens * kv, -range, range),
    );
    let tail =
        |rng: &mut Rng| Pool::F16.pack(&rng.vec(tails * 2 * block * kv, -2.0, 2.0), kv, head_dim);
    let (tk, tv) = (tail(&mut rng), tail(&mut rng));
    (u, k, v, tk, tv)
}

fn case(v: &'static Variant, shape: Shape, seed: u64) -> Case<'static> {
    let (u, k, vals, tk, tv) = inputs(paged::variant_pool(v), shape, seed);
    let jobs = shape.6;
    let mut rng = Rng::new(seed + 100);
    let [kw, vw] = u.pool.pool_words(u.kv, u.head_dim, u.block, u.blocks);
    // Pools start as arbitrary words: a block no job names must keep them.
    let kp0: Vec<u32> = (0..kw).map(|_| rng.next_u64() as u32).collect();
    let vp0: Vec<u32> = (0..vw).map(|_| rng.next_u64() as u32).collect();
    let (mut kp, mut vp) = (kp0.clone(), vp0.clone());
    paged::cpu_seal(&u, &k, &vals, &tk, &tv, jobs, &mut kp, &mut vp);
    let expected: Vec<f32> = [kp, vp].concat().into_iter().map(f32::from_bits).collect();
    Case {
        name: format!("kv_paged_seal variant={} {u:?} seed={seed}", v.name),
        tol: Tolerance::Exact,
        out_dtype: DType::U32,
        out_shape: vec![expected.len()],
        expected,
        record: Box::new(move |ctx, step, out| {
            let u32s = |w: &[u32]| ctx.upload(&[w.len()], w);
            let flat: Vec<u32> = jobs.iter().flatten().copied().collect();
            let (tkp, tvp) = (
                guarded_upload(ctx, &[kp0.len()], &kp0)?,
                guarded_upload(ctx, &[vp0.len()], &vp0)?,
            );
            let ops = [
                ("k", &ctx.upload(&[k.len()], &k)?),
                ("v", &ctx.upload(&[vals.len()], &vals)?),
                ("tk", &u32s(&tk)?),
                ("tv", &u32s(&tv)?),
                ("jobs", &u32s(&flat)?),
                ("kp", &tkp),
                ("vp", &tvp),
            ];
            step.run_with(&u, Choice::Force(&v.name), &ops)?;
            copy_into(step, &tkp, out, 0)?;
            copy_into(step, &tvp, out, kp0.len())
        }),
        needs_f16: false,
        needs_subgroup: false,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("kv_paged_seal") {
        for (i, &shape) in SHAPES.iter().enumerate() {
            out.push(planned(v, move || case(v, shape, i as u64)));
        }
    }
    out
}

/// A block sealed from a tail holding its first positions equals the block sealed from the same values
/// all in the step (f16 rounding happens before the quantizer either way); the twin's 2-bit keys decode
/// within half a code step of each channel's range.
#[test]
fn seal_does_not_depend_on_how_positions_arrived() {
    let (kv, hd, b, pool) = (32, 16, 8, Pool::Q2);
    let mut rng = Rng::new(9);
    let (k, v) = (rng.vec(b * kv, -2.0, 2.0), rng.vec(b * kv, -2.0, 2.0));
    let seal = |tokens, tails, jobs: &[[u32; 4]], tk: &[u32], tv: &[u32], k: &[f32], v: &[f32]| {
        let u = KvPagedSeal {
            pool,
            kv,
            head_dim: hd,
            block: b,
            blocks: 1,
            tails,
            tokens,
            jobs: 1,
        };
        let [kw, vw] = pool.pool_words(kv, hd, b, 1);
        let (mut kp, mut vp) = (vec![0; kw], vec![0; vw]);
        paged::cpu_seal(&u, k, v, tk, tv, jobs, &mut kp, &mut vp);
        (kp, vp)
    };
    let ring = 2 * b * kv / 2;
    let whole = seal(
        b,
        1,
        &[[0, 0, 0, 0]],
        &vec![0; ring],
        &vec![0; ring],
        &k,
        &v,
    );
    // Five positions staged in the ring, three in the step.
    let tk = Pool::F16.pack(&k[..5 * kv], kv, hd);
    let tv = Pool::F16.pack(&v[..5 * kv], kv, hd);
    let (mut tk8, mut tv8) = (vec![0; ring], vec![0; ring]);
    tk8[..tk.len()].copy_from_slice(&tk);
    tv8[..tv.len()].copy_from_slice(&tv);
    let split = seal(
        3,
        1,
        &[[0, 0, 5, 0]],
        &tk8,
        &tv8,
        &k[5 * kv..],
        &v[5 * kv..],
    );
    assert_eq!(whole, split);
    let back = paged::kivi_load_keys(&whole.0, kv, b, 2);
    for c in 0..kv {
        let column: Vec<f32> = (0..b).map(|o| k[o * kv + c]).collect();
        let (lo, hi) = column
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let step = (hi - lo) / 3.0;
        for o in 0..b {
            let err = (back[o * kv + c] - column[o]).abs();
            assert!(
                err <= step / 2.0 + 1e-2,
                "channel {c} position {o}: off by {err}, step {step}"
            );
        }
    }
}
