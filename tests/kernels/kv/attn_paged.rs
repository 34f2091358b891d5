//! `attn_paged`: attn_fused over block tables, for a step whose rows belong to several sequences. Budget
//! against its twin: NMSE 1e-9, attn_fused's (the row-per-lane form keeps the twin's order of operations;
//! the tiled form steps the online softmax by blocks of 8 keys and sums across lanes, a reordering near
//! 1e-14). Each scenario is a pool whose blocks are handed out in a shuffled order (so no sequence's
//! positions are contiguous), with random values in every slot (slots no table names must not be read:
//! they would change the result), and a step of sequences, each (positions before the step, tokens in it):
//! a decode batch at depths from 0 to 100, a decode batch beside a 13-token prompt chunk, two prompts
//! sharing their first two blocks (the prefix a prompt cache shares), the largest head, and a head size
//! that is not a power of two (row-per-lane form only). Every variant runs at its own tile size, the
//! row-per-lane forms also at tiles of 3 rows. The f16 pool holds what kv_paged_store's twin stores; a
//! code pool (KIVI's q8, q4 and q2) holds per-channel key blocks and per-position value codes as
//! kv_paged_seal's twin writes them, and each sequence's last full block and unfinished one are read from
//! its f16 ring instead (random rings, so a position read from the wrong place shows). The twin reads the
//! values the words stand for, so the budget covers attention's arithmetic with the dequantization in
//! registers: a code's value is one multiply-add (which an adapter may fuse). A test below checks the twin
//! against attn_fused's on one contiguous sequence (plain, and as a Gemma 2 sliding-window layer), and the
//! planner's choices. Every variant also runs the first two scenarios at its own tile size as a Gemma 2
//! sliding-window layer: scores soft-capped at 2 and a window of 11 positions, which starts inside a
//! block and, for the deeper sequences, blocks after their first; same budget.

use wring::kernels::check::{Tolerance, compare};
use wring::kernels::kv::paged::{self, AttnPaged, Pool};
use wring::kernels::tensor::Attention;
use wring::kernels::{Choice, DType, Kernel as _, Variant};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, variants};

/// A scenario: heads, kv heads, head_dim, block, sequences (past positions, step tokens), and how many
/// leading blocks the second sequence shares with the first.
pub struct Scenario {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block: usize,
    pub seqs: &'static [(usize, usize)],
    pub shared: usize,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        block: 16,
        seqs: &[(0, 1), (7, 1), (16, 1), (40, 1), (100, 1)],
        shared: 0,
    },
    Scenario {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        block: 16,
        seqs: &[(5, 1), (33, 1), (20, 13), (2, 1)],
        shared: 0,
    },
    Scenario {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        block: 8,
        seqs: &[(16, 5), (16, 3)],
        shared: 2,
    },
    Scenario {
        heads: 8,
        kv_heads: 2,
        head_dim: 128,
        block: 8,
        seqs: &[(9, 4), (0, 9), (30, 1)],
        shared: 0,
    },
    Scenario {
        heads: 4,
        kv_heads: 4,
        head_dim: 48,
        block: 32,
        seqs: &[(3, 6), (50, 1)],
        shared: 0,
    },
];

/// A scenario's inputs: the attention (with `rows` rows a tile), q, the pools' words and values, the
/// block tables, the tokens' (table offset, position) and the tiles.
pub struct Inputs {
    pub a: AttnPaged,
    pub q: Vec<f32>,
    pub kw: Vec<u32>,
    pub vw: Vec<u32>,
    pub kp: Vec<f32>,
    pub vp: Vec<f32>,
    pub table: Vec<u32>,
    pub seqs: Vec<[u32; 2]>,
    pub tiles: Vec<[u32; 2]>,
    /// A KIVI pool's tails: words (f16 pairs) and values of keys and values, and each token's (first
    /// tail slot, sealed positions).
    pub tails: Option<Tails>,
}

pub struct Tails {
    pub kw: Vec<u32>,
    pub vw: Vec<u32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub info: Vec<[u32; 2]>,
}

impl Inputs {
    pub fn tail_view(&self) -> Option<paged::TailView<'_>> {
        self.tails.as_ref().map(|t| paged::TailView {
            info: &t.info,
            k: &t.k,
            v: &t.v,
        })
    }
}

/// A code pool's key words for `values` ([slot][kv]) block by block, and the values they stand for.
fn kivi_key_pool(values: &[f32], kv: usize, block: usize, bits: u32) -> (Vec<u32>, Vec<f32>) {
    let (mut words, mut back) = (Vec::new(), Vec::new());
    for b in values.chunks(block * kv) {
        let rounded: Vec<f32> = b.iter().map(|&x| paged::store_f16(x)).collect();
        let w = paged::kivi_keys(&rounded, kv, block, bits);
        back.extend(paged::kivi_load_keys(&w, kv, block, bits));
        words.extend(w);
    }
    (words, back)
}

pub fn inputs(s: &Scenario, pool: Pool, rows: usize, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let kv = s.kv_heads * s.head_dim;
    let group = s.heads / s.kv_heads;
    let need: Vec<usize> = s
        .seqs
        .iter()
        .map(|&(past, n)| (past + n).div_ceil(s.block))
        .collect();
    let blocks = need.iter().sum::<usize>() + 3;
    // Blocks handed out in a shuffled order.
    let mut order: Vec<u32> = (0..blocks as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut next = order.into_iter();
    let mut tables: Vec<Vec<u32>> = Vec::new();
    for (i, &n) in need.iter().enumerate() {
        let mut t: Vec<u32> = Vec::new();
        if i == 1 {
            t.extend(&tables[0][..s.shared]);
        }
        while t.len() < n {
            t.push(next.next().expect("enough blocks"));
        }
        tables.push(t);
    }
    let (mut table, mut seqs, mut segments, mut info) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (t, &(past, n))) in tables.iter().zip(s.seqs).enumerate() {
        segments.push((seqs.len(), n));
        // The ring holds the last full block and the unfinished one.
        let recent = ((past + n) / s.block).saturating_sub(1) * s.block;
        for p in past..past + n {
            seqs.push([table.len() as u32, p as u32]);
            info.push([(i * 2 * s.block) as u32, recent as u32]);
        }
        table.extend(t);
    }
    let tokens = seqs.len();
    let slots = blocks * s.block;
    let (kv_values, vv_values) = (
        rng.vec(slots * kv, -2.0, 2.0),
        rng.vec(slots * kv, -1.0, 1.0),
    );
    let (kw, vw) = (
        pool.pack(&kv_values, kv, s.head_dim),
        pool.pack(&vv_values, kv, s.head_dim),
    );
    let (mut kp, vp) = (
        pool.unpack(&kw, kv, s.head_dim),
        pool.unpack(&vw, kv, s.head_dim),
    );
    let mut kw = kw;
    let mut tails = None;
    if let Some(bits) = pool.bits() {
        (kw, kp) = kivi_key_pool(&kv_values, kv, s.block, bits);
        let n = s.seqs.len() * 2 * s.block * kv;
        let (tk, tv) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -1.0, 1.0));
        let (tkw, tvw) = (
            Pool::F16.pack(&tk, kv, s.head_dim),
            Pool::F16.pack(&tv, kv, s.head_dim),
        );
        tails = Some(Tails {
            k: Pool::F16.unpack(&tkw, kv, s.head_dim),
            v: Pool::F16.unpack(&tvw, kv, s.head_dim),
            kw: tkw,
            vw: tvw,
            info,
        });
    }
    let tiles = paged::tiles(&segments, group, rows);
    let a = AttnPaged {
        tokens,
        n_heads: s.heads,
        n_kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        block: s.block,
        slots,
        table_len: table.len(),
        tiles: tiles.len(),
        tile_rows: rows,
        pool,
        tails: if pool.kivi() { s.seqs.len() } else { 0 },
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        softcap: 0.0,
        window: 0,
    };
    Inputs {
        a,
        q: rng.vec(tokens * s.heads * s.head_dim, -2.0, 2.0),
        kp,
        vp,
        kw,
        vw,
        table,
        seqs,
        tiles,
        tails,
    }
}

fn case(v: &'static Variant, si: usize, rows: usize, gemma: bool) -> Case<'static> {
    let pool = paged::variant_pool(v);
    let x = inputs(&SCENARIOS[si], pool, rows, 40 + si as u64);
    let a = if gemma {
        AttnPaged {
            softcap: 2.0,
            window: 11,
            ..x.a
        }
    } else {
        x.a
    };
    let mut o = vec![0.0f32; x.q.len()];
    a.cpu(
        &x.q,
        &x.kp,
        &x.vp,
        &x.table,
        &x.seqs,
        &x.tiles,
        x.tail_view(),
        &mut o,
    );
    Case {
        name: format!("attn_paged variant={} scenario={si} {a:?}", v.name),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![o.len()],
        expected: o,
        record: Box::new(move |ctx, step, out| {
            let u32s = |w: &[u32]| ctx.upload(&[w.len()], w);
            let pairs = |p: &[[u32; 2]]| {
                let flat: Vec<u32> = p.iter().flatten().copied().collect();
                ctx.upload(&[flat.len()], &flat)
            };
            let (tk, tv) = match pool {
                Pool::F32 => (
                    ctx.upload(&[x.kp.len()], &x.kp)?,
                    ctx.upload(&[x.vp.len()], &x.vp)?,
                ),
                _ => (u32s(&x.kw)?, u32s(&x.vw)?),
            };
            let (q, table, seqs, tiles) = (
                ctx.upload(&[x.q.len()], &x.q)?,
                u32s(&x.table)?,
                pairs(&x.seqs)?,
                pairs(&x.tiles)?,
            );
            let mut ops = vec![
                ("q", &q),
                ("k", &tk),
                ("v", &tv),
                ("table", &table),
                ("seqs", &seqs),
                ("tiles", &tiles),
                ("o", out),
            ];
            let tails = match &x.tails {
                Some(t) => Some([u32s(&t.kw)?, u32s(&t.vw)?, pairs(&t.info)?]),
                None => None,
            };
            if let Some([tk, tv, info]) = &tails {
                ops.extend([("tk", tk), ("tv", tv), ("kivi", info)]);
            }
            step.run_with(&a, Choice::Force(&v.name), &ops)
        }),
        needs_f16: false,
        needs_subgroup: v.requires.subgroup,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("attn_paged") {
        let head = v
            .define("HD")
            .map(|hd| hd.parse::<usize>().expect("HD is a number"));
        let qr = v.define_u32("QR") as usize;
        for (si, s) in SCENARIOS.iter().enumerate() {
            if head.is_some_and(|hd| hd != s.head_dim) {
                continue;
            }
            out.push(planned(v, move || case(v, si, qr, false)));
            // The sliding-window layer on the scenarios with the deepest sequences (decode rows at depths
            // to 100, and a prompt chunk beside decode rows).
            if si < 2 {
                out.push(planned(v, move || case(v, si, qr, true)));
            }
            if head.is_none() {
                out.push(planned(v, move || case(v, si, 3, false)));
            }
        }
    }
    out
}

/// On one sequence whose blocks happen to be in order, the paged twin gives attn_fused's twin's result
/// exactly: the block table changes where keys are read, not the arithmetic.
#[test]
fn paged_twin_equals_the_contiguous_attention() {
    for (softcap, window) in [(0.0, 0), (2.0, 9)] {
        paged_twin_equals_contiguous(softcap, window);
    }
}

fn paged_twin_equals_contiguous(softcap: f32, window: usize) {
    let (past, n, heads, kvh, d) = (21, 6, 9, 3, 64);
    let mut rng = Rng::new(3);
    let kv = kvh * d;
    let positions = 32;
    let (k, v) = (
        rng.vec(positions * kv, -2.0, 2.0),
        rng.vec(positions * kv, -1.0, 1.0),
    );
    let q = rng.vec(n * heads * d, -2.0, 2.0);
    let contiguous = Attention {
        tokens: n,
        kv_len: past + n,
        n_heads: heads,
        n_kv_heads: kvh,
        head_dim: d,
        pos0: past,
        scale: 0.125,
        softcap,
        window,
    };
    let mut want = vec![0.0; q.len()];
    contiguous.cpu_fused(&q, &k, &v, &mut want);
    let seqs: Vec<[u32; 2]> = (past..past + n).map(|p| [0, p as u32]).collect();
    let tiles = paged::tiles(&[(0, n)], heads / kvh, 8);
    let a = AttnPaged {
        tokens: n,
        n_heads: heads,
        n_kv_heads: kvh,
        head_dim: d,
        block: 16,
        slots: positions,
        table_len: 2,
        tiles: tiles.len(),
        tile_rows: 8,
        pool: Pool::F32,
        tails: 0,
        scale: 0.125,
        softcap,
        window,
    };
    let mut got = vec![0.0; q.len()];
    a.cpu(&q, &k, &v, &[0, 1], &seqs, &tiles, None, &mut got);
    compare(&got, &want, Tolerance::Exact).unwrap();
}

/// Tiles never span two sequences and cover every row once; the planner takes the tiled form at the
/// tile size `tile_rows` names on a CPU adapter with 8-lane subgroups, the row-per-lane form elsewhere,
/// and refuses tiles larger than a forced variant holds, a block size that is not a power of two, and a
/// pool the variant does not read.
#[test]
fn attn_paged_tiles_and_plans() {
    let t = paged::tiles(&[(0, 1), (1, 1), (2, 5)], 3, 8);
    assert_eq!(t, vec![[0, 3], [3, 3], [6, 8], [14, 7]]);
    let (lavapipe, gpu) = crate::kernels::planner_caps();
    assert_eq!(paged::tile_rows(&lavapipe, 64, 3, true), 3);
    assert_eq!(paged::tile_rows(&lavapipe, 64, 3, false), 8);
    assert_eq!(paged::tile_rows(&lavapipe, 64, 7, true), 8);
    assert_eq!(paged::tile_rows(&gpu, 64, 3, true), paged::LANE_ROWS);
    let x = inputs(&SCENARIOS[0], Pool::F16, 3, 1);
    let name = |a: AttnPaged, caps| {
        a.plan(caps, Choice::Auto)
            .map(|p| p.variant.name.to_string())
    };
    assert_eq!(name(x.a, &lavapipe).unwrap(), "tiled_d64_r3_f16");
    assert_eq!(name(x.a, &gpu).unwrap(), "rows_f16");
    let e = x.a.plan(&lavapipe, Choice::Force("rows_f32")).unwrap_err();
    assert!(e.to_string().contains("does not read a F16 pool"), "{e}");
    let wide = AttnPaged {
        tile_rows: 8,
        ..x.a
    };
    let e = wide
        .plan(&lavapipe, Choice::Force("tiled_d64_r3_f16"))
        .unwrap_err();
    assert!(e.to_string().contains("holds 3 rows a tile"), "{e}");
    let odd = AttnPaged { block: 12, ..x.a };
    let e = odd.plan(&gpu, Choice::Auto).unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");
}
