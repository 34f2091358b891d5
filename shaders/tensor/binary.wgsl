// c[i] = a[i] OP b[i % nb]: elementwise add or multiply, with `b` broadcast when it is shorter
// (a bias or a per-channel scale repeated over rows). nb must divide n; the host checks.
#import invocation

struct Params {
    n: u32,
    nb: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<ELEM>;
@group(0) @binding(2) var<storage, read> b: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> c: array<ELEM>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let base = linear_workgroup(inv) * (WG * ITEMS) + inv.lid;
    for (var item = 0u; item < ITEMS; item++) {
        let i = base + item * WG;
        if (i < params.n) {
#ifdef OP_ADD
            c[i] = a[i] + b[i % params.nb];
#endif
#ifdef OP_MUL
            c[i] = a[i] * b[i % params.nb];
#endif
        }
    }
}
