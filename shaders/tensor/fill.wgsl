// dst[i] = value for `n` u32 words (the bits of any 32-bit value, f32 included).
#import invocation

struct Params {
    n: u32,
    value: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let base = linear_workgroup(inv) * (WG * ITEMS) + inv.lid;
    for (var item = 0u; item < ITEMS; item++) {
        let i = base + item * WG;
        if (i < params.n) {
            dst[i] = params.value;
        }
    }
}
