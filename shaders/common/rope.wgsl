// The rotation of rotary position embeddings as llama.cpp applies it, shared by `rope` and `rope_qkv`.
// Pair p of a head turns by theta = pos * freq_scale * theta_scale^p. The default ("normal") mode pairs
// adjacent dimensions (2p, 2p+1), as llama.cpp does for llama-family GGUFs; NEOX pairs (p, p + n_dims/2).
// Pairs at and past n_dims pass through unchanged.

// The two dimensions of a head that pair p reads and writes.
fn rope_dims(p: u32, n_dims: u32) -> vec2<u32> {
    if (2u * p >= n_dims) {
        return vec2<u32>(2u * p, 2u * p + 1u);
    }
#ifdef NEOX
    return vec2<u32>(p, p + n_dims / 2u);
#else
    return vec2<u32>(2u * p, 2u * p + 1u);
#endif
}

// The pair's values after rotation by its angle at position `pos`.
fn rope_values(x: vec2<f32>, pos: i32, p: u32, n_dims: u32, theta_scale: f32, freq_scale: f32) -> vec2<f32> {
    if (2u * p >= n_dims) {
        return x;
    }
    let theta = f32(pos) * freq_scale * pow(theta_scale, f32(p));
    let c = cos(theta);
    let s = sin(theta);
    return vec2<f32>(x.x * c - x.y * s, x.x * s + x.y * c);
}

// rope_values with ggml's extensions: the pair's frequency divided by `factor` (freq_factors) and the
// rotation scaled by `mscale` (the attention factor), as ggml's rope_yarn with no extrapolation ramp.
fn rope_values_ext(x: vec2<f32>, pos: i32, p: u32, n_dims: u32, theta_scale: f32, freq_scale: f32, factor: f32, mscale: f32) -> vec2<f32> {
    if (2u * p >= n_dims) {
        return x;
    }
    let theta = f32(pos) * freq_scale * pow(theta_scale, f32(p)) / factor;
    let c = cos(theta) * mscale;
    let s = sin(theta) * mscale;
    return vec2<f32>(x.x * c - x.y * s, x.x * s + x.y * c);
}
