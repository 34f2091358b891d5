// y = x / sqrt(mean(x^2) + eps) * w over each row of length n, as llama.cpp's RMS_NORM followed by its
// weight multiply. One workgroup per row.
//
// The RESIDUAL variants first add a residual r and also write the sum s = x + r: the transformer's
// residual add fused with the norm that follows it, one launch instead of two. The sum is recomputed in the
// second loop rather than read back from s, which would need a storage barrier.
//
// The Q8OUT variants write y as 8-bit activation units (q8_unit) instead of floats, for a product that
// takes them (qmatvec_q8): the quantize_q8 launch folded into the norm. Each invocation then takes whole
// 32-value units of the row (n a multiple of 32); the values quantized are the f32 variants' y, operation
// for operation.
#import reduce
#ifdef Q8OUT
#import q8
#endif

struct Params {
    n: u32,
    rows: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
#ifdef Q8OUT
@group(0) @binding(3) var<storage, read_write> q: array<vec4<u32>>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif
#ifdef RESIDUAL
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
#endif

fn input(i: u32) -> f32 {
#ifdef RESIDUAL
    return x[i] + r[i];
#else
    return x[i];
#endif
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    // The row is the same for the whole workgroup, so this early return keeps control flow uniform.
    let row = linear_workgroup(inv);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.n;
    var ss = 0.0;
    for (var i = inv.lid; i < params.n; i += WG) {
        let v = input(base + i);
#ifdef RESIDUAL
        s[base + i] = v;
#endif
        ss += v * v;
    }
    let total = reduce_sum(ss, inv);
    let scale = 1.0 / sqrt(total / f32(params.n) + params.eps);
#ifdef Q8OUT
    let units = params.n / 32u;
    for (var u = inv.lid; u < units; u += WG) {
        var v: array<vec4<f32>, 8>;
        for (var j = 0u; j < 8u; j++) {
            let i = 32u * u + 4u * j;
            v[j] = vec4<f32>(
                input(base + i) * scale * w[i],
                input(base + i + 1u) * scale * w[i + 1u],
                input(base + i + 2u) * scale * w[i + 2u],
                input(base + i + 3u) * scale * w[i + 3u],
            );
        }
        let unit = q8_unit(v);
        let at = 3u * (row * units + u);
        for (var j = 0u; j < 3u; j++) {
            q[at + j] = unit[j];
        }
    }
#else
    for (var i = inv.lid; i < params.n; i += WG) {
        y[base + i] = input(base + i) * scale * w[i];
    }
#endif
}
