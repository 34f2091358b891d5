// The compressed KV cache's layout (kv_load.wgsl, kv_store.wgsl; `wring_kernels_kv::cache` on the host).
// One u32 buffer per layer holds, at the word offsets below: key codes and value codes, [position][channel]
// at BITS bits each (32 / BITS to a word, the first channel in the low bits); key statistics
// [key group][channel] and value statistics [position][channel / value_group], each one word packing the
// f16 scale (low half) and f16 minimum (high half); and the ring, [slot][channel] f16 pairs for keys and
// for values, where position p lives at slot p % ring until it is compressed. A GEAR layout adds, per block
// of `group` positions, head and tensor (keys, then values): the outlier list, `2 x outliers` words each
// packing an f16 value (low half) and its index t x value_group + c in the block (high half); and the
// low-rank factors, f16 pairs of the token factor [group][rank] followed by the channel factor
// [value_group][rank].
#import f16
#import kvquant

struct Params {
    kv: u32,
    group: u32,
    value_group: u32,
    ring: u32,
    k_codes: u32,
    v_codes: u32,
    k_stats: u32,
    v_stats: u32,
    ring_k: u32,
    ring_v: u32,
    // Positions [0, compressed) are codes.
    compressed: u32,
    // kv_load: positions [0, upto) are written. kv_store: positions [compressed, upto) become codes.
    upto: u32,
    // kv_store: the step's first position and the positions filled after it.
    pos0: u32,
    pos: u32,
    // kv_store: invocations for key groups and for value groups, before those for the ring.
    items_k: u32,
    items_v: u32,
    // GEAR (kv_gear, kv_gear_load): outliers per side and rank per block, the word offsets of the outlier
    // lists and of the factors, and the blocks (of `group` positions) this launch covers.
    outliers: u32,
    rank: u32,
    out_off: u32,
    fac_off: u32,
    block0: u32,
    blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

// The order of an f16-exact value (normal or zero, within f16's range) as a 16-bit unsigned integer:
// larger values give larger integers, and both zeros the same.
fn f16_order(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let a = bits & 0x7fffffffu;
    if (a == 0u) {
        return 0x8000u;
    }
    let mag = (((a >> 23u) - 112u) << 10u) | ((a >> 13u) & 0x3ffu);
    return select(0x8000u + mag, 0x7fffu - mag, (bits >> 31u) == 1u);
}
