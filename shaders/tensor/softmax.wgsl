// y = softmax(x * scale) over each row of length n, numerically stable: the row maximum is subtracted
// before exponentiation, so no finite input overflows. One workgroup per row.
#import reduce

struct Params {
    n: u32,
    rows: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = linear_workgroup(inv);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.n;
    var m = NEG_MAX_F32;
    for (var i = inv.lid; i < params.n; i += WG) {
        m = max(m, x[base + i] * params.scale);
    }
    let row_max = reduce_max(m, inv);
    var s = 0.0;
    for (var i = inv.lid; i < params.n; i += WG) {
        s += exp(x[base + i] * params.scale - row_max);
    }
    let inv_sum = 1.0 / reduce_sum(s, inv);
    for (var i = inv.lid; i < params.n; i += WG) {
        y[base + i] = exp(x[base + i] * params.scale - row_max) * inv_sum;
    }
}
