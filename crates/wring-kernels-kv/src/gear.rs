//! GEAR (Kang, Zhang et al., 2024, "GEAR: An Efficient KV Cache Compression Recipe"): each block of
//! `group` positions x one head's channels, keys and values alike, is kept as Q + L + S. `kv_gear`
//! (`shaders/kv/kv_gear.wgsl`) writes a block's KIVI codes Q (statistics over what is not an outlier), its
//! outliers S and the low-rank factors L of its quantization error; `kv_gear_load`
//! (`shaders/kv/kv_gear_load.wgsl`) completes what `kv_load` decoded from Q by adding L and putting S back.
//!
//! Deviations from the reference (`GEARLM/Simulated/compress_function.py`), each for a fixed-size,
//! exact GPU form: outliers are the `outliers` largest and smallest entries of the whole block (the
//! reference takes them per channel or per token over the whole sequence), left out of the quantizer's
//! statistics (the reference replaces them by the vector's mean before quantizing); the power iteration
//! starts from a fixed hash instead of `torch.rand`, and each block gets its own factors at one rank (the
//! reference factors the prefill at rank 4 and each 64-token chunk at rank 2).

use crate::cache::{GEAR_ROUNDS, KvLayout, Params, f16_round, pack, unpack};
use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// `kv_gear`: the complete blocks of positions [compressed, upto) become GEAR blocks, from the f32 keys
/// and values \[position\]\[channel\] of at least `upto` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGear {
    /// The layer's cache layout.
    pub layout: KvLayout,
    /// Positions already compressed (a whole number of blocks).
    pub compressed: usize,
    /// Positions compressed after this launch (a whole number of blocks).
    pub upto: usize,
}

/// `kv_gear_load`: L and S of the blocks of positions [0, compressed) added to what `kv_load` decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGearLoad {
    /// The layer's cache layout.
    pub layout: KvLayout,
    /// Positions held as GEAR blocks.
    pub compressed: usize,
}

fn checked(
    kernel: &'static str,
    l: &KvLayout,
    first: usize,
    upto: usize,
) -> Result<Params, KernelError> {
    l.check(kernel)?;
    plan::ensure(l.gear(), kernel, || {
        "the layout keeps no outliers and no low-rank factors".into()
    })?;
    plan::ensure(
        first <= upto
            && upto <= l.capacity
            && first.is_multiple_of(l.group)
            && upto.is_multiple_of(l.group),
        kernel,
        || {
            format!(
                "blocks of positions [{first}, {upto}) are not whole groups of {} within {} positions",
                l.group, l.capacity
            )
        },
    )?;
    plan::index_u32(kernel, "values", upto.saturating_mul(l.kv))?;
    Ok(Params {
        block0: (first / l.group) as u32,
        blocks: ((upto - first) / l.group) as u32,
        ..l.params()
    })
}

impl KvGear {
    fn checked(&self) -> Result<Params, KernelError> {
        checked("kv_gear", &self.layout, self.compressed, self.upto)
    }
}

impl KvGearLoad {
    fn checked(&self) -> Result<Params, KernelError> {
        checked("kv_gear_load", &self.layout, 0, self.compressed)
    }
}

impl Kernel for KvGear {
    fn kernel(&self) -> &'static str {
        "kv_gear"
    }

    fn operands(&self) -> Vec<Operand> {
        let n = self.upto.saturating_mul(self.layout.kv);
        vec![
            Operand::read("k", DType::F32, n),
            Operand::read("v", DType::F32, n),
            Operand::write("store", DType::U32, self.layout.words()),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = self.layout.variant("kv_gear", caps, choice)?;
        let groups = u64::from(p.blocks) * 2 * self.layout.heads() as u64;
        plan::linear("kv_gear", v, groups, bytemuck::bytes_of(&p), caps)
    }
}

impl Kernel for KvGearLoad {
    fn kernel(&self) -> &'static str {
        "kv_gear_load"
    }

    fn operands(&self) -> Vec<Operand> {
        let n = self.compressed.saturating_mul(self.layout.kv);
        vec![
            Operand::read("store", DType::U32, self.layout.words()),
            Operand::write("k", DType::F32, n),
            Operand::write("v", DType::F32, n),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let p = self.checked()?;
        let v = crate::choose(
            &crate::catalogue::kv_gear_load::F32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let groups = u64::from(p.blocks) * 2 * self.layout.heads() as u64;
        plan::linear("kv_gear_load", v, groups, bytemuck::bytes_of(&p), caps)
    }
}

/// `shaders/common/kv.wgsl`'s `f16_order`.
fn f16_order(x: f32) -> u32 {
    let bits = x.to_bits();
    let a = bits & 0x7fff_ffff;
    if a == 0 {
        return 0x8000;
    }
    let mag = (((a >> 23).wrapping_sub(112)) << 10) | ((a >> 13) & 0x3ff);
    if bits >> 31 == 1 {
        0x7fff - mag
    } else {
        0x8000 + mag
    }
}

/// `kv_gear.wgsl`'s `key_of`.
fn key_of(x: f32, e: usize, side: u32) -> u32 {
    let key = (f16_order(x) << 13) | (8191 - e as u32);
    if side == 1 { 0x1fff_ffff - key } else { key }
}

/// `kv_gear.wgsl`'s `start`.
fn start(c: usize, j: usize) -> f32 {
    let mut h =
        (c as u32).wrapping_mul(0x9e37_79b1) ^ (j as u32).wrapping_mul(0x85eb_ca77) ^ 0x27d4_eb2f;
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    (h >> 8) as f32 / 16_777_216.0
}

/// `kv_gear.wgsl`'s Gram-Schmidt over the columns of an [n][r] factor.
fn orthonormalize(f: &mut [f32], n: usize, r: usize) {
    for j in 0..r {
        for i in 0..j {
            let mut dot = 0.0f32;
            for t in 0..n {
                dot += f[t * r + i] * f[t * r + j];
            }
            for t in 0..n {
                f[t * r + j] -= dot * f[t * r + i];
            }
        }
        let mut nn = 0.0f32;
        for t in 0..n {
            nn += f[t * r + j] * f[t * r + j];
        }
        let inv = if nn > 1e-20 { 1.0 / nn.sqrt() } else { 0.0 };
        for t in 0..n {
            f[t * r + j] *= inv;
        }
    }
}

/// One block's place: (tensor, head, group, unit) of workgroup `w`, as `kv_gear.wgsl`'s `block_of`.
fn block_of(l: &KvLayout, p: &Params, w: usize) -> (usize, usize, usize, usize) {
    let heads = l.heads();
    let b0 = p.block0 as usize;
    (
        w % 2,
        (w / 2) % heads,
        b0 + w / (2 * heads),
        b0 * heads * 2 + w,
    )
}

/// CPU twin of `kv_gear`: the shader's selection, statistics, codes and power iteration, in its order.
pub fn cpu_gear(u: &KvGear, k: &[f32], v: &[f32], store: &mut [u32]) {
    let l = &u.layout;
    let p = u.checked().expect("a checked unit");
    let (nt, nc, kv, r) = (l.group, l.value_group, l.kv, l.rank);
    let n = nt * nc;
    let (bits, out) = (l.bits as usize, l.outliers);
    let cpw = 32 / bits;
    for w in 0..p.blocks as usize * 2 * l.heads() {
        let (tensor, head, g, unit) = block_of(l, &p, w);
        let src = if tensor == 0 { k } else { v };
        let entry = |e: usize| {
            let i = (g * nt + e / nc) * kv + head * nc + e % nc;
            f16_round(src[i].clamp(-65504.0, 65504.0))
        };
        let mut mark = vec![false; n];
        if out > 0 {
            let threshold = |side| {
                let mut keys: Vec<u32> = (0..n).map(|e| key_of(entry(e), e, side)).collect();
                keys.sort_unstable_by(|a, b| b.cmp(a));
                keys[out - 1]
            };
            let (hi, lo) = (threshold(0), threshold(1));
            let mut slot = p.out_off as usize + unit * 2 * out;
            for (e, m) in mark.iter_mut().enumerate() {
                let x = entry(e);
                if key_of(x, e, 0) >= hi || key_of(x, e, 1) >= lo {
                    *m = true;
                    store[slot] = u32::from(half::f16::from_f32(x).to_bits()) | ((e as u32) << 16);
                    slot += 1;
                }
            }
        }
        let (vectors, len) = if tensor == 0 { (nc, nt) } else { (nt, nc) };
        let mut stat = vec![(0.0f32, 0.0f32); vectors];
        for (i, st) in stat.iter_mut().enumerate() {
            let (mut mn, mut mx, mut seen) = (65504.0f32, -65504.0f32, false);
            for j in 0..len {
                let e = if tensor == 0 { j * nc + i } else { i * nc + j };
                if !mark[e] {
                    mn = mn.min(entry(e));
                    mx = mx.max(entry(e));
                    seen = true;
                }
            }
            if !seen {
                (mn, mx) = (0.0, 0.0);
            }
            *st = l.stat_of(mn, mx);
            let at = if tensor == 0 {
                p.k_stats as usize + g * kv + head * nc + i
            } else {
                p.v_stats as usize + (g * nt + i) * l.heads() + head
            };
            store[at] = pack(st.0, st.1);
        }
        let stat_at = |t: usize, c: usize| if tensor == 0 { stat[c] } else { stat[t] };
        for t in 0..nt {
            for c0 in (0..nc).step_by(cpw) {
                let mut word = 0u32;
                for j in 0..cpw {
                    word |= l.code_of(entry(t * nc + c0 + j), stat_at(t, c0 + j)) << (j * bits);
                }
                let at = ((g * nt + t) * kv + head * nc + c0) / cpw;
                let codes = if tensor == 0 { p.k_codes } else { p.v_codes };
                store[codes as usize + at] = word;
            }
        }
        if r == 0 {
            continue;
        }
        let residual = |t: usize, c: usize| {
            let e = t * nc + c;
            if mark[e] {
                return 0.0;
            }
            let x = entry(e);
            let s = stat_at(t, c);
            x - (s.1 + s.0 * l.code_of(x, s) as f32)
        };
        let mut chan: Vec<f32> = (0..nc * r).map(|i| start(i / r, i % r)).collect();
        let mut tok = vec![0.0f32; nt * r];
        for it in 0..GEAR_ROUNDS {
            let last = it == GEAR_ROUNDS - 1;
            if last {
                orthonormalize(&mut chan, nc, r);
            }
            for t in 0..nt {
                for j in 0..r {
                    let mut acc = 0.0f32;
                    for c in 0..nc {
                        acc += residual(t, c) * chan[c * r + j];
                    }
                    tok[t * r + j] = acc;
                }
            }
            if last {
                orthonormalize(&mut tok, nt, r);
            }
            for c in 0..nc {
                for j in 0..r {
                    let mut acc = 0.0f32;
                    for t in 0..nt {
                        acc += residual(t, c) * tok[t * r + j];
                    }
                    chan[c * r + j] = acc;
                }
            }
        }
        let base = p.fac_off as usize + unit * (nt + nc) * r / 2;
        let f: Vec<f32> = tok
            .iter()
            .chain(&chan)
            .map(|x| f16_round(x.clamp(-65504.0, 65504.0)))
            .collect();
        for (i, pair) in f.chunks(2).enumerate() {
            store[base + i] = pack(pair[0], pair[1]);
        }
    }
}

/// CPU twin of `kv_gear_load`.
pub fn cpu_gear_load(u: &KvGearLoad, store: &[u32], k: &mut [f32], v: &mut [f32]) {
    let l = &u.layout;
    let p = u.checked().expect("a checked unit");
    let (nt, nc, kv, r) = (l.group, l.value_group, l.kv, l.rank);
    let half = |f: usize| {
        let (a, b) = unpack(store[f / 2]);
        if f.is_multiple_of(2) { a } else { b }
    };
    for w in 0..p.blocks as usize * 2 * l.heads() {
        let (tensor, head, g, unit) = block_of(l, &p, w);
        let dst = if tensor == 0 { &mut *k } else { &mut *v };
        let outs = p.out_off as usize + unit * 2 * l.outliers;
        let list = &store[outs..outs + 2 * l.outliers];
        let mut mark = vec![false; nt * nc];
        for &word in list {
            mark[(word >> 16) as usize] = true;
        }
        // Factor halves are counted from the start of the buffer, two to a word.
        let fac = 2 * (p.fac_off as usize + unit * (nt + nc) * r / 2);
        for (e, &m) in mark.iter().enumerate() {
            if m {
                continue;
            }
            let (t, c) = (e / nc, e % nc);
            let mut acc = 0.0f32;
            for j in 0..r {
                acc += half(fac + t * r + j) * half(fac + nt * r + c * r + j);
            }
            dst[(g * nt + t) * kv + head * nc + c] += acc;
        }
        for &word in list {
            let e = (word >> 16) as usize;
            dst[(g * nt + e / nc) * kv + head * nc + e % nc] = unpack(word & 0xffff).0;
        }
    }
}

/// Bytes GEAR adds per position beyond the codes and their statistics (outliers and factors).
pub fn side_bytes_per_position(l: &KvLayout) -> f64 {
    let plain = KvLayout {
        outliers: 0,
        rank: 0,
        ..*l
    };
    l.bytes_per_position() - plain.bytes_per_position()
}
