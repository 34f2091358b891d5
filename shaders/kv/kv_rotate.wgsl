// The orthonormal Walsh-Hadamard rotation of every head vector of the queries and of the step's keys, in
// place: H / sqrt(head_dim) with H Sylvester's Hadamard matrix. Rotating both leaves every score q.k
// unchanged while spreading a few large key channels over all of them, which is what a per-channel
// quantizer of the keys needs (QuaRot's online rotation). One workgroup per head vector: the fast
// transform's log2(head_dim) butterfly stages in workgroup memory.
#import invocation
#import fwht

struct Params {
    head_dim: u32,
    rows_q: u32,
    k_first: u32,
    rows_k: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;

var<workgroup> fwht_buf: array<f32, MAX_DIM>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = linear_workgroup(inv);
    if (row >= params.rows_q + params.rows_k) {
        return;
    }
    let hd = params.head_dim;
    let is_q = row < params.rows_q;
    var base = row * hd;
    if (!is_q) {
        base = (params.k_first + row - params.rows_q) * hd;
    }
    for (var i = inv.lid; i < hd; i += WG) {
        if (is_q) {
            fwht_buf[i] = q[base + i];
        } else {
            fwht_buf[i] = k[base + i];
        }
    }
    workgroupBarrier();
    fwht_workgroup(hd, inv.lid);
    for (var i = inv.lid; i < hd; i += WG) {
        if (is_q) {
            q[base + i] = fwht_buf[i] * params.scale;
        } else {
            k[base + i] = fwht_buf[i] * params.scale;
        }
    }
}
