// y[row] = sum_k W[row][k] * x[k] for one activation row already quantized by quantize_q8 (8-bit codes,
// an f32 scale d and s = d * sum(codes) per 32-value unit) and W in Q4_0, Q4_1 or Q8_0 blocks: the decode
// product of llama.cpp's CPU back end, with packed integer dot products (dot4I8Packed) in place of
// dequantized floats. A unit's 32 products are summed exactly in i32, and only then scaled:
//   Q8_0: dw * d * acc;  Q4_0: dw * (d * acc - 8 s);  Q4_1: dw * d * acc + mw * s.
// Its error against the f32-activation qmatvec is the activations' 8-bit rounding (NMSE about 5e-5 on
// unit-scale inputs), stated and tested with the twins.
//
// The `lanes` variants (CPU adapters) give each of 8 invocations ROWS whole rows, as qmatvec's do, so the
// activation unit is loaded once for ROWS rows; the GPU variants give a 64-invocation workgroup one row,
// invocations taking its units in turn, then reduce.
#import reduce
#import quant

struct Params {
    n: u32,
    k: u32,
    batch: u32,
    row_bytes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Unit u of the row whose block bytes start at `bb`, against the activation unit (codes a, b; d, s).
fn unit_dot(bb: u32, a: vec4<u32>, b: vec4<u32>, ds: vec2<f32>) -> f32 {
    var acc = 0;
#ifdef FMT_Q8_0
    // d f16, then 32 signed bytes: words 0-3 meet a, 4-7 meet b.
    for (var i = 0u; i < 4u; i++) {
        acc += dot4I8Packed(u32_at(bb + 2u + 4u * i), a[i]);
        acc += dot4I8Packed(u32_at(bb + 18u + 4u * i), b[i]);
    }
    return f16_at(bb) * ds.x * f32(acc);
#else
    // Q4_0 (d f16) and Q4_1 (d, m f16): 16 bytes whose low nibbles are values 0-15 and high nibbles values
    // 16-31; masked to bytes, each word's nibbles are 4 non-negative signed bytes.
    let q0 = unit_head(bb, 0u).base;
    for (var i = 0u; i < 4u; i++) {
        let word = u32_at(q0 + 4u * i);
        acc += dot4I8Packed(word & 0x0F0F0F0Fu, a[i]);
        acc += dot4I8Packed((word >> 4u) & 0x0F0F0F0Fu, b[i]);
    }
#ifdef FMT_Q4_0
    return f16_at(bb) * (ds.x * f32(acc) - 8.0 * ds.y);
#endif
#ifdef FMT_Q4_1
    return f16_at(bb) * ds.x * f32(acc) + f16_at(bb + 2u) * ds.y;
#endif
#endif
}

#ifdef ROW_PER_LANE
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = (inv.wid.x * WG + inv.lid) * ROWS;
    let units = params.k / 32u;
    var sums: array<f32, ROWS>;
    for (var u = 0u; u < units; u++) {
        let a = x[3u * u];
        let b = x[3u * u + 1u];
        let ds = bitcast<vec2<f32>>(x[3u * u + 2u].xy);
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the end are clamped to the last one; their sums are not stored.
            let row = min(row0 + r, params.n - 1u);
            sums[r] += unit_dot(row * params.row_bytes + u * BLOCK_BYTES, a, b, ds);
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        if (row0 + r < params.n) {
            y[row0 + r] = sums[r];
        }
    }
}
#else
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x;
    if (row >= params.n) {
        return;
    }
    let units = params.k / 32u;
    var sum = 0.0;
    for (var u = inv.lid; u < units; u += WG) {
        let ds = bitcast<vec2<f32>>(x[3u * u + 2u].xy);
        sum += unit_dot(row * params.row_bytes + u * BLOCK_BYTES, x[3u * u], x[3u * u + 1u], ds);
    }
    let total = reduce_sum(sum, inv);
    if (inv.lid == 0u) {
        y[row] = total;
    }
}
#endif
