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
