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
    return scaled(wu, acc, ds);
}

// A unit's exact integer dot product scaled as the format needs.
fn scaled(wu: WUnit, acc: i32, ds: vec2<f32>) -> f32 {
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
#ifdef FMT_Q8_0
// Two consecutive Q8_0 blocks (68 bytes) that start on a word boundary, from 17 aligned words: a lone
// 34-byte block sits at an offset of 2 mod 4 every other unit, where each of its code words would need two
// loads. Whether a block is aligned depends only on the unit index (a row is k / 32 * 34 bytes, a multiple
// of 4 when the unit count is even), which is the same for every invocation, so the choice costs no
// divergence.
fn load_pair(bb: u32) -> array<WUnit, 2> {
    let w0 = bb >> 2u;
    var words: array<u32, 17>;
    for (var i = 0u; i < 17u; i++) {
        words[i] = w[w0 + i];
    }
    var p: array<WUnit, 2>;
    p[0].d = unpack2x16float(words[0] & 0xFFFFu).x;
    for (var i = 0u; i < 8u; i++) {
        p[0].q[i] = (words[i] >> 16u) | (words[i + 1u] << 16u);
    }
    p[1].d = unpack2x16float(words[8] >> 16u).x;
    for (var i = 0u; i < 8u; i++) {
        p[1].q[i] = words[9u + i];
    }
    return p;
}
#endif

// A tile's activation unit u: codes and (d, s) for each of its BATCH rows.
struct ActUnit {
    a: array<vec4<u32>, BATCH>,
    b: array<vec4<u32>, BATCH>,
    ds: array<vec2<f32>, BATCH>,
}

fn act_unit(b0: u32, u: u32, units: u32) -> ActUnit {
    var r: ActUnit;
    for (var i = 0u; i < BATCH; i++) {
        // Activation rows past the batch are clamped to the last one; their sums are not stored.
        let at = 3u * (min(b0 + i, params.batch - 1u) * units + u);
        r.a[i] = x[at];
        r.b[i] = x[at + 1u];
        r.ds[i] = bitcast<vec2<f32>>(x[at + 2u].xy);
    }
    return r;
}

#ifdef PAIRS
// Two activation rows' products in one 32-bit multiply (the PAIRS variants, over tiles of 8 rows): an
// 8-bit code pair packed as c0 + c1 * 65536 (i32), times a 4-bit weight w, accumulated over 16
// values of a unit, is S0 + S1 * 65536 with |S0|, |S1| <= 16 * 15 * 127 = 30480 < 32768 and the whole
// within i32, so both sums come back exactly: S0 as the low 16 bits sign-extended, S1 as the rest shifted
// down. Q8_0's 8-bit weights would overflow that bound, so they are split into two 4-bit halves, each
// packed product summed apart. That halves the multiplies of the tile's 8 rows, which bound this product
// on CPU adapters, where the lanes of one invocation hold different rows and no packed dot-product
// instruction applies.
//
// The unit's pairs, once per tile: pc[j][p] packs value j of activation rows 2p and 2p + 1.
fn pair_codes(xu: ActUnit) -> array<vec4<i32>, 32> {
    var pc: array<vec4<i32>, 32>;
    for (var word = 0u; word < 4u; word++) {
        for (var byte = 0u; byte < 4u; byte++) {
            let shift = 24u - 8u * byte;
            var lo: vec4<i32>;
            var hi: vec4<i32>;
            for (var p = 0u; p < 4u; p++) {
                let a0 = bitcast<i32>(xu.a[2u * p][word] << shift) >> 24u;
                let a1 = bitcast<i32>(xu.a[2u * p + 1u][word] << shift) >> 24u;
                lo[p] = a0 + (a1 << 16u);
                let b0 = bitcast<i32>(xu.b[2u * p][word] << shift) >> 24u;
                let b1 = bitcast<i32>(xu.b[2u * p + 1u][word] << shift) >> 24u;
                hi[p] = b0 + (b1 << 16u);
            }
            pc[4u * word + byte] = lo;
            pc[16u + 4u * word + byte] = hi;
        }
    }
    return pc;
}

// The tile's 8 exact integer dot products with one weight unit: out[0][p] for activation row 2p,
// out[1][p] for row 2p + 1.
fn pair_dots(wu: WUnit, pc: ptr<function, array<vec4<i32>, 32>>) -> array<vec4<i32>, 2> {
    var acc0 = vec4<i32>(0);
    var acc1 = vec4<i32>(0);
#ifdef FMT_Q8_0
    // 8-bit weights split as w = 16 wh + wl (wl in 0..15, wh in -8..7), each half within the packing's
    // bound (16 * 8 * 127 = 16256 for wh), summed apart and joined after the split.
    var high0 = vec4<i32>(0);
    var high1 = vec4<i32>(0);
#endif
    for (var word = 0u; word < 4u; word++) {
        let q0 = wu.q[word];
        let q1 = wu.q[word + 4u];
        for (var byte = 0u; byte < 4u; byte++) {
            let j = 4u * word + byte;
#ifdef FMT_Q8_0
            let w0 = bitcast<i32>(q0 << (24u - 8u * byte)) >> 24u;
            let w1 = bitcast<i32>(q1 << (24u - 8u * byte)) >> 24u;
            acc0 += (w0 & 15) * (*pc)[j];
            acc1 += (w1 & 15) * (*pc)[16u + j];
            high0 += (w0 >> 4u) * (*pc)[j];
            high1 += (w1 >> 4u) * (*pc)[16u + j];
#else
            acc0 += bitcast<i32>((q0 >> (8u * byte)) & 0xFFu) * (*pc)[j];
            acc1 += bitcast<i32>((q1 >> (8u * byte)) & 0xFFu) * (*pc)[16u + j];
#endif
        }
    }
    var out = split_pairs(acc0, acc1);
#ifdef FMT_Q8_0
    let high = split_pairs(high0, high1);
    out[0] += 16 * high[0];
    out[1] += 16 * high[1];
#endif
    return out;
}

// Two packed sums over a unit's halves, each S0 + S1 * 65536, back to (S0 of both, S1 of both).
fn split_pairs(acc0: vec4<i32>, acc1: vec4<i32>) -> array<vec4<i32>, 2> {
    let s = vec4<u32>(16u);
    let lo0 = (acc0 << s) >> s;
    let lo1 = (acc1 << s) >> s;
    var out: array<vec4<i32>, 2>;
    out[0] = lo0 + lo1;
    out[1] = ((acc0 - lo0) >> s) + ((acc1 - lo1) >> s);
    return out;
}
#endif

// The grid's y dimension walks tiles of BATCH activation rows (1 for decode, 8 for prefill on CPU
// adapters, where each weight unit is read once for the tile's 8 rows).
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = (inv.wid.x * WG + inv.lid) * ROWS;
    let b0 = inv.wid.y * BATCH;
    let units = params.k / 32u;
    var sums: array<array<f32, BATCH>, ROWS>;
#ifdef ROW_OUTER
    // One row at a time, all of its units before the next row: each invocation streams one row through
    // memory at a time, so a workgroup has WG streams in flight rather than WG * ROWS (more than a CPU's
    // prefetchers follow when the weights come from DRAM). The activation units are reloaded per row; they
    // are the same for every invocation and small enough to stay in the nearest cache.
    for (var r = 0u; r < ROWS; r++) {
        let row = min(row0 + r, params.n - 1u);
        var u = 0u;
#ifdef FMT_Q8_0
        if (units % 2u == 0u) {
            for (; u < units; u += 2u) {
                let x0 = act_unit(b0, u, units);
                let x1 = act_unit(b0, u + 1u, units);
                let p = load_pair(row * params.row_bytes + u * BLOCK_BYTES);
                for (var i = 0u; i < BATCH; i++) {
                    sums[r][i] += unit_dot(p[0], x0.a[i], x0.b[i], x0.ds[i]);
                    sums[r][i] += unit_dot(p[1], x1.a[i], x1.b[i], x1.ds[i]);
                }
            }
        }
#endif
        for (; u < units; u++) {
            let xu = act_unit(b0, u, units);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            for (var i = 0u; i < BATCH; i++) {
                sums[r][i] += unit_dot(wu, xu.a[i], xu.b[i], xu.ds[i]);
            }
        }
    }
#else
#ifdef PAIRS
    for (var u = 0u; u < units; u++) {
        let xu = act_unit(b0, u, units);
        var pc = pair_codes(xu);
        for (var r = 0u; r < ROWS; r++) {
            let row = min(row0 + r, params.n - 1u);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            let dots = pair_dots(wu, &pc);
            for (var p = 0u; p < 4u; p++) {
                sums[r][2u * p] += scaled(wu, dots[0][p], xu.ds[2u * p]);
                sums[r][2u * p + 1u] += scaled(wu, dots[1][p], xu.ds[2u * p + 1u]);
            }
        }
    }
#else
    for (var u = 0u; u < units; u++) {
        let xu = act_unit(b0, u, units);
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the end are clamped to the last one; their sums are not stored.
            let row = min(row0 + r, params.n - 1u);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            for (var i = 0u; i < BATCH; i++) {
                sums[r][i] += unit_dot(wu, xu.a[i], xu.b[i], xu.ds[i]);
            }
        }
    }
#endif
#endif
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
