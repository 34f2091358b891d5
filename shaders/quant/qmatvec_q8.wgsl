// y[b][row] = sum_k W[row][k] * x[b][k] for activation rows already quantized by quantize_q8 (8-bit codes,
// an f32 scale d and s = d * sum(codes) per 32-value unit) and W in Q4_0, Q4_1 or Q8_0 blocks: the decode
// product of llama.cpp's CPU back end, with packed integer dot products (dot4I8Packed) in place of
// dequantized floats. A unit's 32 products are summed exactly in i32, and only then scaled:
//   Q8_0: dw * d * acc;  Q4_0: dw * (d * acc - 8 s);  Q4_1: dw * d * acc + mw * s.
// Its error against the f32-activation qmatvec is the activations' 8-bit rounding (NMSE about 5e-5 on
// unit-scale inputs), stated and tested with the twins.
//
// The `lanes` variants (CPU adapters) give each of 8 invocations ROWS whole rows, as qmatvec's do, so the
// activation unit is loaded once for ROWS rows (and, in the b8 variants, each weight unit once for 8
// activation rows); the GPU variants give a 64-invocation workgroup one row,
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

// One weight unit, read once: 8 words of 4 signed bytes (values 0-15 in q[0..3], 16-31 in q[4..7]) and
// the block's scale d and minimum m (Q4_1).
struct WUnit {
    q: array<u32, 8>,
    d: f32,
    m: f32,
}

fn load_unit(bb: u32) -> WUnit {
    var wu: WUnit;
    wu.d = f16_at(bb);
#ifdef FMT_Q8_0
    // d f16, then 32 signed bytes.
    for (var i = 0u; i < 8u; i++) {
        wu.q[i] = u32_at(bb + 2u + 4u * i);
    }
#else
    // Q4_0 (d f16) and Q4_1 (d, m f16): 16 bytes whose low nibbles are values 0-15 and high nibbles values
    // 16-31; masked to bytes, each word's nibbles are 4 non-negative signed bytes.
    let q0 = unit_head(bb, 0u).base;
    for (var i = 0u; i < 4u; i++) {
        let word = u32_at(q0 + 4u * i);
        wu.q[i] = word & 0x0F0F0F0Fu;
        wu.q[i + 4u] = (word >> 4u) & 0x0F0F0F0Fu;
    }
#endif
#ifdef FMT_Q4_1
    wu.m = f16_at(bb + 2u);
#endif
    return wu;
}

// A weight unit against an activation unit (codes a, b; d and s): the 32 products summed exactly in i32,
// then scaled as the format needs.
fn unit_dot(wu: WUnit, a: vec4<u32>, b: vec4<u32>, ds: vec2<f32>) -> f32 {
    var acc = 0;
    for (var i = 0u; i < 4u; i++) {
        acc += dot4I8Packed(wu.q[i], a[i]);
        acc += dot4I8Packed(wu.q[i + 4u], b[i]);
    }
#ifdef FMT_Q8_0
    return wu.d * ds.x * f32(acc);
#endif
#ifdef FMT_Q4_0
    return wu.d * (ds.x * f32(acc) - 8.0 * ds.y);
#endif
#ifdef FMT_Q4_1
    return wu.d * ds.x * f32(acc) + wu.m * ds.y;
#endif
}

#ifdef ROW_PER_LANE
// The grid's y dimension walks tiles of BATCH activation rows (1 for decode, 8 for prefill on CPU
// adapters, where each weight unit is read once for the tile's 8 rows).
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = (inv.wid.x * WG + inv.lid) * ROWS;
    let b0 = inv.wid.y * BATCH;
    let units = params.k / 32u;
    var sums: array<array<f32, BATCH>, ROWS>;
    for (var u = 0u; u < units; u++) {
        var a: array<vec4<u32>, BATCH>;
        var b: array<vec4<u32>, BATCH>;
        var ds: array<vec2<f32>, BATCH>;
        for (var i = 0u; i < BATCH; i++) {
            // Activation rows past the batch are clamped to the last one; their sums are not stored.
            let at = 3u * (min(b0 + i, params.batch - 1u) * units + u);
            a[i] = x[at];
            b[i] = x[at + 1u];
            ds[i] = bitcast<vec2<f32>>(x[at + 2u].xy);
        }
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the end are clamped to the last one; their sums are not stored.
            let row = min(row0 + r, params.n - 1u);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            for (var i = 0u; i < BATCH; i++) {
                sums[r][i] += unit_dot(wu, a[i], b[i], ds[i]);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        for (var i = 0u; i < BATCH; i++) {
            if (row0 + r < params.n && b0 + i < params.batch) {
                y[(b0 + i) * params.n + row0 + r] = sums[r][i];
            }
        }
    }
}
#else
// One workgroup per row and activation row (the grid's y dimension); the model sends batches on GPUs to
// the tiled qmatmul instead.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x;
    let bi = inv.wid.y;
    if (row >= params.n || bi >= params.batch) {
        return;
    }
    let units = params.k / 32u;
    var sum = 0.0;
    for (var u = inv.lid; u < units; u += WG) {
        let at = 3u * (bi * units + u);
        let ds = bitcast<vec2<f32>>(x[at + 2u].xy);
        sum += unit_dot(load_unit(row * params.row_bytes + u * BLOCK_BYTES), x[at], x[at + 1u], ds);
    }
    let total = reduce_sum(sum, inv);
    if (inv.lid == 0u) {
        y[bi * params.n + row] = total;
    }
}
#endif
