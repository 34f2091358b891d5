// The k-means centroid update: centroid c becomes the mean of its points, summed in a fixed order (the
// host's counting sort of the assignments gives `order`, grouped by cluster, and `offsets`, each cluster's
// range in it), so the result is the same on every run and every device. Empty clusters are left as they
// are for the host to reseed. One invocation per (centroid, dimension); neighbours read neighbouring
// columns of the same point.
#import invocation

struct Params {
    k: u32,
    d: u32,
    x_stride: u32,
    x_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> centroids: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let e = linear_workgroup(inv) * WG + inv.lid;
    if (e >= params.k * params.d) {
        return;
    }
    let c = e / params.d;
    let i = e % params.d;
    let first = offsets[c];
    let end = offsets[c + 1u];
    if (end <= first) {
        return;
    }
    var s = 0.0;
    for (var p = first; p < end; p++) {
        s += x[order[p] * params.x_stride + params.x_offset + i];
    }
    centroids[e] = s / f32(end - first);
}
