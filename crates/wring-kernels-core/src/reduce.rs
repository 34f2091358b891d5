//! CPU twin of `shaders/common/reduce.wgsl`'s shared-memory tree, so the twins of reducing kernels add
//! in the same order as the shader's shared-memory variant.

/// Sums `slots` (one partial per invocation, `slots.len()` a power of two) by halving, as the shader does.
pub fn tree_sum(slots: &mut [f32]) -> f32 {
    tree(slots, |a, b| a + b)
}

/// The maximum of `slots` by the same tree.
pub fn tree_max(slots: &mut [f32]) -> f32 {
    tree(slots, f32::max)
}

fn tree(slots: &mut [f32], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut s = slots.len() / 2;
    while s > 0 {
        for lid in 0..s {
            slots[lid] = op(slots[lid], slots[lid + s]);
        }
        s /= 2;
    }
    slots[0]
}

/// The most negative finite f32, the shader's `NEG_MAX_F32`.
pub const NEG_MAX_F32: f32 = f32::MIN;

/// `c[m][n] = sum_k a[m][k] b[n][k]` with one running f32 sum per output in increasing k: the order in
/// which every tiled matmul shader adds its products (each BK-deep tile in increasing k, tiles in order).
/// The matmul and quantized matmul twins share it.
pub fn matmul_k_order<T: crate::Float>(
    a: &[T],
    b: &[T],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0f32;
            for kk in 0..k {
                acc += a[mi * k + kk].to_f32() * b[ni * k + kk].to_f32();
            }
            c[mi * n + ni] = acc;
        }
    }
}

/// `q . k` as the attention shaders sum it: four products at a time (a vec4 `dot`), the groups added in
/// order. The attention twins call it so that their scores round as the shaders' do.
pub fn dot4(q: &[f32], k: &[f32]) -> f32 {
    let mut s = 0f32;
    for i in 0..q.len() / 4 {
        s += q[4 * i] * k[4 * i]
            + q[4 * i + 1] * k[4 * i + 1]
            + q[4 * i + 2] * k[4 * i + 2]
            + q[4 * i + 3] * k[4 * i + 3];
    }
    s
}

/// How a query-key dot product becomes a score: scaled, then soft-capped where `softcap` is positive
/// (Gemma 2: `softcap * tanh(s / softcap)`), as the attention shaders' `score` does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Multiplies the dot product first (1 / sqrt(head_dim) for llama).
    pub scale: f32,
    /// 0 for none.
    pub softcap: f32,
}

impl Score {
    /// The score of a dot product.
    pub fn of(&self, dot: f32) -> f32 {
        let s = dot * self.scale;
        if self.softcap > 0.0 {
            self.softcap * (s / self.softcap).tanh()
        } else {
            s
        }
    }
}

/// The first key position a query at `pos` sees: all of them, or its last `window` (Gemma's sliding-window
/// layers mask a key when `pos - key >= window`, as llama.cpp's `LLAMA_SWA_TYPE_STANDARD`); 0 for none.
pub fn window_start(pos: usize, window: usize) -> usize {
    if window == 0 {
        0
    } else {
        (pos + 1).saturating_sub(window)
    }
}

/// One query row's attention over `keys` (each a key row and its value row, in order) with an online
/// softmax, into `out`: the order of operations of the per-row attention shaders (attn_fused's and
/// attn_paged's row forms): the score summed four products at a time, then scaled; the running maximum,
/// the rescaled running sum and the rescaled accumulator; the accumulator over the sum at the end. The
/// twins of both kernels call it, so they agree bit for bit wherever they read the same keys.
pub fn attend_row<'a>(
    q: &[f32],
    keys: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    score: Score,
    out: &mut [f32],
) {
    let d = q.len();
    let mut acc = vec![0f32; d];
    let (mut m, mut l) = (NEG_MAX_F32, 0f32);
    for (kr, vr) in keys {
        let s = score.of(dot4(q, kr));
        let m_new = m.max(s);
        let (c, p) = ((m - m_new).exp(), (s - m_new).exp());
        l = l * c + p;
        for (a, x) in acc.iter_mut().zip(vr) {
            *a = *a * c + p * x;
        }
        m = m_new;
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a / l;
    }
}
