// y[b][row] = scale[row] * sum_j code(state(row, j)) x[b][j] + outliers, for W in wring's trellis layout
// (wring_quant::trellis): tiles of 16 x 16 weights, each a tail-biting stream of 256 BITS-bit symbols in
// TILE_WORDS words; the weight at position p = 16 i + t of a tile (tile row i, column t) is QTIP's 3INST
// code of the `state`-bit window of its stream starting at bit p * BITS, wrapping past the end. Tiles are
// stored row tile by row tile, then column tile by column tile. Activation rows are taken BATCH at a time
// (the grid's y dimension), so each weight is decoded once per tile of BATCH rows.
//
// A row's 16 weights in one tile are 16 BITS + state - BITS <= 76 bits of its stream starting at bit
// 16 i BITS: three words (circularly), loaded once, from which each weight's window is a funnel shift.
// The code is arithmetic (an LCG step, two masks, two f16 halves summed), so decoding needs no table and
// no f16 support from the adapter (`unpack2x16float` is core WGSL).
#import reduce
#import trellis

@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// The activations of tile row b at columns c0 .. c0 + 15. Rows past the batch are clamped; their sums are
// not stored.
fn acts16(b0: u32, b: u32, c0: u32) -> array<vec4<f32>, 4> {
    let at = min(b0 + b, params.batch - 1u) * params.cols + c0;
    var out: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
        let j = at + 4u * q;
        out[q] = vec4<f32>(x[j], x[j + 1u], x[j + 2u], x[j + 3u]);
    }
    return out;
}

// Adds row `row`'s outliers e0, e0 + step, ... (below its end) to sums.
fn add_outliers(sums: ptr<function, array<f32, BATCH>>, row: u32, b0: u32, e0: u32, step: u32) {
    let end = outliers[row + 1u];
    for (var e = outliers[row] + e0; e < end; e += step) {
        let word = outliers[e];
        let v = unpack2x16float(word).y;
        let at = word & 0xFFFFu;
        for (var b = 0u; b < BATCH; b++) {
            (*sums)[b] += v * x[min(b0 + b, params.batch - 1u) * params.cols + at];
        }
    }
}

#ifdef ROW_PER_LANE
// CPU adapters: each invocation owns ROWS consecutive rows (inside one row tile) and walks the column
// tiles, so each tile's 16 activations are gathered once for ROWS rows.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = (col_workgroup(inv) * WG + inv.lid) * ROWS;
    let b0 = inv.wid.y * BATCH;
    if (row0 >= params.rows) {
        return;
    }
    let col_tiles = params.cols / 16u;
    let mask = (1u << params.state) - 1u;
    let tile_row = row0 / 16u;
    var sums: array<array<f32, BATCH>, ROWS>;
    for (var c = 0u; c < col_tiles; c++) {
        let base = (tile_row * col_tiles + c) * TILE_WORDS;
        var xs: array<array<vec4<f32>, 4>, BATCH>;
        for (var b = 0u; b < BATCH; b++) {
            xs[b] = acts16(b0, b, c * 16u);
        }
        for (var r = 0u; r < ROWS; r++) {
            let w = decode16(base, (row0 + r) % 16u, mask);
            for (var b = 0u; b < BATCH; b++) {
                sums[r][b] += dot(w[0], xs[b][0]) + dot(w[1], xs[b][1]) + dot(w[2], xs[b][2]) + dot(w[3], xs[b][3]);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let row = row0 + r;
        if (row >= params.rows) {
            break;
        }
        let scale = bitcast<f32>(stats[row]);
        var s: array<f32, BATCH>;
        for (var b = 0u; b < BATCH; b++) {
            s[b] = scale * sums[r][b];
        }
        add_outliers(&s, row, b0, 0u, 1u);
        for (var b = 0u; b < BATCH; b++) {
            if (b0 + b < params.batch) {
                y[(b0 + b) * params.rows + row] = s[b];
            }
        }
    }
}
#else
// GPUs: one workgroup per row; its lanes take the column tiles lane, lane + WG, ... and then the row's
// outliers, reduced. Each lane decodes its 16 weights from three words.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = col_workgroup(inv);
    let b0 = inv.wid.y * BATCH;
    if (row >= params.rows) {
        return;
    }
    let col_tiles = params.cols / 16u;
    let mask = (1u << params.state) - 1u;
    let scale = bitcast<f32>(stats[row]);
    var sums: array<f32, BATCH>;
    for (var c = inv.lid; c < col_tiles; c += WG) {
        let w = decode16(((row / 16u) * col_tiles + c) * TILE_WORDS, row % 16u, mask);
        for (var b = 0u; b < BATCH; b++) {
            let xs = acts16(b0, b, c * 16u);
            sums[b] += scale * (dot(w[0], xs[0]) + dot(w[1], xs[1]) + dot(w[2], xs[2]) + dot(w[3], xs[3]));
        }
    }
    add_outliers(&sums, row, b0, inv.lid, WG);
    for (var b = 0u; b < BATCH; b++) {
        let total = reduce_sum(sums[b], inv);
        if (inv.lid == 0u && b0 + b < params.batch) {
            y[(b0 + b) * params.rows + row] = total;
        }
    }
}
#endif
