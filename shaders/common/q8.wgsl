// One 8-bit activation unit (wring_kernels_core::q8) from 32 values, as llama.cpp's quantize_row_q8_1:
// d = amax / 127, codes q = round(x * 127 / amax) (WGSL's round, ties to even) and s = d * sum(q), the
// term the weight formats with an offset or a minimum need. A unit is three vec4s: the 32 codes as 8
// words of 4 signed bytes (values 0-15, then 16-31), then d and s as f32 bits and two zero words, so that
// qmatvec_q8 reads it in three aligned 16-byte loads. An all-zero unit gets d = 0 and codes 0 (no division
// by zero).
//
// q8_scale and q8_codes are the rule itself, shared by every kernel that builds units from values spread
// over lanes (the tiled attention, qmatvec_q8's epilogues), so that all of them write the same bits.

// A unit's scale d and inverse id = 127 / amax (0 for an all-zero unit) from its largest magnitude.
fn q8_scale(amax: f32) -> vec2<f32> {
    return vec2<f32>(amax / 127.0, select(0.0, 127.0 / amax, amax > 0.0));
}

// Four values' codes under the inverse scale id.
fn q8_codes(v: vec4<f32>, id: f32) -> vec4<i32> {
    return vec4<i32>(round(v * id));
}

fn q8_unit(v: array<vec4<f32>, 8>) -> array<vec4<u32>, 3> {
    var amax = vec4<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
        amax = max(amax, abs(v[j]));
    }
    let m = max(max(amax.x, amax.y), max(amax.z, amax.w));
    let d = q8_scale(m);
    var codes: array<u32, 8>;
    var total = vec4<i32>(0);
    for (var j = 0u; j < 8u; j++) {
        let c = q8_codes(v[j], d.y);
        total += c;
        codes[j] = pack4xI8(c);
    }
    let s = d.x * f32(total.x + total.y + total.z + total.w);
    return array<vec4<u32>, 3>(
        vec4<u32>(codes[0], codes[1], codes[2], codes[3]),
        vec4<u32>(codes[4], codes[5], codes[6], codes[7]),
        vec4<u32>(bitcast<u32>(d.x), bitcast<u32>(s), 0u, 0u),
    );
}
