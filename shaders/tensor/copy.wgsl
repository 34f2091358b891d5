// dst[dst_offset + i] = src[src_offset + i] over `n` words: the bandwidth probe every other kernel's GB/s is
// compared with, and the way rows are written into a larger buffer (a KV cache) at any word offset.
// WORD is u32 or vec4<u32>; each invocation moves ITEMS words, WG apart, so a workgroup's accesses stay
// contiguous.
#import invocation

struct Params {
    n: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<WORD>;
@group(0) @binding(2) var<storage, read_write> dst: array<WORD>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let base = linear_workgroup(inv) * (WG * ITEMS) + inv.lid;
    for (var item = 0u; item < ITEMS; item++) {
        let i = base + item * WG;
        if (i < params.n) {
            dst[params.dst_offset + i] = src[params.src_offset + i];
        }
    }
}
