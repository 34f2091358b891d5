// wring's trellis layout (wring_quant::trellis) as tmatvec and tmatmul bind it, and its decoding: tiles of
// 16 x 16 weights, each a tail-biting stream of 256 BITS-bit symbols in TILE_WORDS words, stored row tile
// by row tile, then column tile by column tile; the weight at position p = 16 i + t of a tile is QTIP's
// 3INST code of the `state`-bit window of its stream starting at bit p BITS, wrapping past the end. The
// including kernel binds its activations at binding 4 and its output at binding 5.

struct Params {
    rows: u32,
    cols: u32,
    // Bits of each state (QTIP's L).
    state: u32,
    batch: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> stats: array<u32>;
@group(0) @binding(3) var<storage, read> outliers: array<u32>;

const TILE_WORDS: u32 = 8u * BITS;

// QTIP's 3INST code of a state.
fn code3(s: u32) -> f32 {
    let h = ((s * 89226354u + 64248484u) & 0x8FFF8FFFu) ^ 0x3B603B60u;
    let v = unpack2x16float(h);
    return v.x + v.y;
}

// The 32 bits starting at bit s (0 to 63) of the 96-bit window w.
fn window(w: vec3<u32>, s: u32) -> u32 {
    let lo = select(w.x, w.y, s >= 32u);
    let hi = select(w.y, w.z, s >= 32u);
    let k = s & 31u;
    // Two shifts for the high word, so that k = 0 shifts it out entirely (a shift by 32 is not one).
    return (lo >> k) | ((hi << 1u) << (31u - k));
}

// Tile row i's 96-bit window in the tile starting at word `base`, and the bit it starts at.
fn row_words(base: u32, i: u32) -> vec4<u32> {
    let s0 = i * 16u * BITS;
    let w = s0 / 32u;
    return vec4<u32>(
        codes[base + w % TILE_WORDS],
        codes[base + (w + 1u) % TILE_WORDS],
        codes[base + (w + 2u) % TILE_WORDS],
        s0 % 32u,
    );
}

// The 16 weights of tile row i (codes, unscaled) in four vec4s.
fn decode16(base: u32, i: u32, mask: u32) -> array<vec4<f32>, 4> {
    let rw = row_words(base, i);
    let w = rw.xyz;
    var out: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
        let t = rw.w + 4u * q * BITS;
        out[q] = vec4<f32>(
            code3(window(w, t) & mask),
            code3(window(w, t + BITS) & mask),
            code3(window(w, t + 2u * BITS) & mask),
            code3(window(w, t + 3u * BITS) & mask),
        );
    }
    return out;
}

// The code of position p of the tile starting at word `base` (one weight alone: tmatmul's lanes decode a
// tile between them).
fn decode_at(base: u32, p: u32, mask: u32) -> f32 {
    let s = p * BITS;
    let w = s / 32u;
    let v = vec3<u32>(codes[base + w % TILE_WORDS], codes[base + (w + 1u) % TILE_WORDS], 0u);
    return code3(window(v, s % 32u) & mask);
}

