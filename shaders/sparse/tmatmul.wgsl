// c[t][row] = scale[row] * sum_j code(state(row, j)) a[t][j] + outliers, for W in wring's trellis layout
// (trellis.wgsl), tiled for many activation rows: the prefill product for GPUs. A workgroup of 64 lanes
// takes one row tile (16 weight rows) and 64 activation rows; for each column tile its lanes decode the
// tile's 256 weights between them (4 each) into shared memory, once per 64 activation rows, and each lane
// then multiplies its own activation row's 16 values (read straight into registers) by all 16 rows of the
// tile, reading the decoded weights as broadcasts. CPU adapters use tmatvec's 8-row tiles, which need no
// shared memory and no barriers.
#import invocation
#import trellis

@group(0) @binding(4) var<storage, read> a: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

var<workgroup> tile: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn main(inv: Invocation) {
    let row0 = inv.wid.x * 16u;
    let m = inv.wid.y * 64u + inv.lid;
    let col_tiles = params.cols / 16u;
    let mask = (1u << params.state) - 1u;
    // Rows past the batch read the last row; their sums are not stored.
    let arow = min(m, params.batch - 1u) * params.cols;
    var acc: array<f32, 16>;
    for (var ct = 0u; ct < col_tiles; ct++) {
        let base = (inv.wid.x * col_tiles + ct) * TILE_WORDS;
        let p = 4u * inv.lid;
        tile[inv.lid] = vec4<f32>(
            decode_at(base, p, mask),
            decode_at(base, p + 1u, mask),
            decode_at(base, p + 2u, mask),
            decode_at(base, p + 3u, mask),
        );
        workgroupBarrier();
        let j = arow + ct * 16u;
        let x0 = vec4<f32>(a[j], a[j + 1u], a[j + 2u], a[j + 3u]);
        let x1 = vec4<f32>(a[j + 4u], a[j + 5u], a[j + 6u], a[j + 7u]);
        let x2 = vec4<f32>(a[j + 8u], a[j + 9u], a[j + 10u], a[j + 11u]);
        let x3 = vec4<f32>(a[j + 12u], a[j + 13u], a[j + 14u], a[j + 15u]);
        for (var i = 0u; i < 16u; i++) {
            acc[i] += dot(tile[4u * i], x0) + dot(tile[4u * i + 1u], x1) + dot(tile[4u * i + 2u], x2) + dot(tile[4u * i + 3u], x3);
        }
        workgroupBarrier();
    }
    if (m >= params.batch) {
        return;
    }
    for (var i = 0u; i < 16u; i++) {
        let row = row0 + i;
        var s = bitcast<f32>(stats[row]) * acc[i];
        for (var e = outliers[row]; e < outliers[row + 1u]; e++) {
            let word = outliers[e];
            s += unpack2x16float(word).y * a[m * params.cols + (word & 0xFFFFu)];
        }
        c[m * params.rows + row] = s;
    }
}
