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
