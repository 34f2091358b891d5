// The builtins every wring kernel receives, gathered in one struct so that helpers can take them whole.
// Variants built with SUBGROUP also receive the subgroup builtins (naga accepts them without
// `enable subgroups;`; the runtime requests the SUBGROUP feature for these variants).
struct Invocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
#endif
}

// The workgroup's index in a grid that spills into y (and z) once x reaches the 65,535 workgroup limit.
// The runtime lays large 1D dispatches out that way; this folds them back into one linear index.
fn linear_workgroup(inv: Invocation) -> u32 {
    return inv.wid.x + inv.wid.y * inv.nwg.x + inv.wid.z * inv.nwg.x * inv.nwg.y;
}

// The column (output row) group of a 2D product grid whose x dimension spills into z once it reaches the
// workgroup limit (`plan::grid_rows`: a head of 151,936 vocabulary rows at one row per workgroup); y stays
// the batch tile.
fn col_workgroup(inv: Invocation) -> u32 {
    return inv.wid.x + inv.wid.z * inv.nwg.x;
}
