// Codebook lookup: row r of `out` (columns offset..offset+d of a row of out_stride) becomes, gains or loses
// codeword ids[r]. SET decodes, ADD accumulates the stages of a residual VQ, SUB is the residual update
// between stages. A codebook above the binding limit is looked up chunk by chunk: each launch applies only
// the ids in [code_base, code_base + n_codes) and leaves the other rows alone.
#import invocation

struct Params {
    n: u32,
    d: u32,
    out_stride: u32,
    out_offset: u32,
    code_base: u32,
    n_codes: u32,
    op: u32,
    _pad0: u32,
}

const SET: u32 = 0u;
const ADD: u32 = 1u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> codes: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let e = linear_workgroup(inv) * WG + inv.lid;
    if (e >= params.n * params.d) {
        return;
    }
    let r = e / params.d;
    let i = e % params.d;
    let id = ids[r];
    if (id < params.code_base || id - params.code_base >= params.n_codes) {
        return;
    }
    let v = f32(codes[(id - params.code_base) * params.d + i]);
    let at = r * params.out_stride + params.out_offset + i;
    if (params.op == SET) {
        out[at] = v;
    } else if (params.op == ADD) {
        out[at] = out[at] + v;
    } else {
        out[at] = out[at] - v;
    }
}
