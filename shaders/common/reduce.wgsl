// Workgroup-wide sum and max of one f32 per invocation. Every invocation of the workgroup must call them
// from uniform control flow, and every invocation receives the result. WG must be a power of two.
#import invocation

var<workgroup> reduce_scratch: array<f32, WG>;

// The most negative finite f32, the identity of max for finite inputs (WGSL has no infinity literal).
const NEG_MAX_F32: f32 = -3.40282347e+38;

#ifdef SUBGROUP
// Subgroup variant: each subgroup reduces in registers, then one value per subgroup goes through shared
// memory. Every invocation sums the per-subgroup values in the same order, so all get the same bits.
fn reduce_sum(v: f32, inv: Invocation) -> f32 {
    let s = subgroupAdd(v);
    if (inv.sg_lane == 0u) {
        reduce_scratch[inv.sg_id] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < inv.n_sg; i++) {
        total += reduce_scratch[i];
    }
    workgroupBarrier();
    return total;
}

fn reduce_max(v: f32, inv: Invocation) -> f32 {
    let s = subgroupMax(v);
    if (inv.sg_lane == 0u) {
        reduce_scratch[inv.sg_id] = s;
    }
    workgroupBarrier();
    var total = NEG_MAX_F32;
    for (var i = 0u; i < inv.n_sg; i++) {
        total = max(total, reduce_scratch[i]);
    }
    workgroupBarrier();
    return total;
}
#else
// Shared-memory variant: a tree over WG slots, halving the active invocations at each step.
fn reduce_sum(v: f32, inv: Invocation) -> f32 {
    reduce_scratch[inv.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (inv.lid < s) {
            reduce_scratch[inv.lid] += reduce_scratch[inv.lid + s];
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}

fn reduce_max(v: f32, inv: Invocation) -> f32 {
    reduce_scratch[inv.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (inv.lid < s) {
            reduce_scratch[inv.lid] = max(reduce_scratch[inv.lid], reduce_scratch[inv.lid + s]);
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}
#endif
