// How a query-key dot product becomes a score and which keys a query sees, shared by the attention
// kernels (attn_fused, attn_paged), whose `params` carry `scale`, `softcap` and `window`.

// A query-key dot product as a score: scaled, then soft-capped where asked (Gemma 2: softcap *
// tanh(s / softcap)); reduce::Score's twin.
fn score(dot: f32) -> f32 {
    let s = dot * params.scale;
    if (params.softcap > 0.0) {
        return params.softcap * tanh(s / params.softcap);
    }
    return s;
}

// The first key a query at position `pos` sees: all of them, or the last `window` (a sliding-window
// layer); reduce::window_start's twin.
fn window_start(pos: u32) -> u32 {
    if (params.window == 0u || pos + 1u <= params.window) {
        return 0u;
    }
    return pos + 1u - params.window;
}
