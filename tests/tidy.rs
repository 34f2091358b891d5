//! The house rules, as tests (after rust-analyzer's `xtask/src/tidy.rs`): the dependency arrows, the CLI
//! that only parses and prints, a unit, a twin and a case for every shader, a layout check for every
//! `Params`, every crate in ARCHITECTURE.md, and a reason on every `#[allow]`.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n != "target" && n != "fixtures")
            {
                out.extend(rust_files(&p));
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The code of a Rust file without its comments (line comments and doc comments), so rules apply to
/// code, not to prose about it.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const MODEL_CRATES: [&str; 7] = [
    "wring-llm",
    "wring-codec",
    "wring-vq",
    "wring-cli",
    "wring-server",
    "wring-capi",
    "wring-py",
];

/// **Architecture Invariant:** model crates and the CLI never touch wgpu or a kernel crate: they go
/// through the runtime, which re-exports the kernel families and not wgpu.
#[test]
fn arrows_only_go_down() {
    let mut bad = Vec::new();
    for c in MODEL_CRATES {
        let dir = root().join("crates").join(c);
        let manifest = read(&dir.join("Cargo.toml"));
        for line in manifest.lines() {
            let dep = line.split(['.', '=', ' ']).next().unwrap_or("");
            if dep == "wgpu" || dep.starts_with("wring-kernels") {
                bad.push(format!("{c}/Cargo.toml depends on {dep}"));
            }
        }
        for f in rust_files(&dir.join("src")) {
            let text = code(&read(&f));
            for needle in ["wgpu", "wring_kernels"] {
                if text.contains(needle) {
                    bad.push(format!("{} names {needle}", f.display()));
                }
            }
        }
    }
    let runtime = code(&read(&root().join("crates/wring-runtime/src/lib.rs")));
    if runtime.contains("pub use wgpu") {
        bad.push("wring-runtime re-exports wgpu".into());
    }
    // wring-vq reads arrays through wring-io, not sideways through the codec.
    if read(&root().join("crates/wring-vq/Cargo.toml")).contains("wring-codec") {
        bad.push("wring-vq depends on wring-codec".into());
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// **Architecture Invariant:** the CLI only parses arguments, calls library functions and prints: it
/// records no launches and holds no device tensors.
#[test]
fn the_cli_only_parses_and_prints() {
    let mut bad = Vec::new();
    for f in rust_files(&root().join("crates/wring-cli/src")) {
        let text = code(&read(&f));
        for needle in [
            "Step",
            "Tensor",
            ".step(",
            ".upload(",
            ".upload_blocks(",
            ".run(",
            ".launch(",
        ] {
            if text.contains(needle) {
                bad.push(format!("{} uses {needle}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The kernel families: (family, its crate's source directory, its shader directory).
fn families() -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("shaders")).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if e.path().is_dir() && name != "common" {
            let src = root().join(format!("crates/wring-kernels-{name}/src"));
            assert!(
                src.is_dir(),
                "shaders/{name} has no crate wring-kernels-{name}"
            );
            out.push((name, src, e.path()));
        }
    }
    out.sort();
    out
}

/// **Architecture Invariant:** every `.wgsl` outside `shaders/common/` has a kernel unit (a type whose
/// `Kernel::kernel` names it), a CPU twin in the unit's file, and a case generator in the test catalogue.
#[test]
fn every_shader_has_a_unit_a_twin_and_a_case() {
    let catalogue = read(&root().join("tests/kernels/mod.rs"));
    let mut bad = Vec::new();
    for (family, src, shaders) in families() {
        // Whitespace is dropped so that formatting cannot hide a unit.
        let units: Vec<(PathBuf, String)> = rust_files(&src)
            .into_iter()
            .map(|f| {
                let t: String = read(&f).chars().filter(|c| !c.is_whitespace()).collect();
                (f, t)
            })
            .collect();
        for e in std::fs::read_dir(&shaders).unwrap().flatten() {
            let Some(kernel) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".wgsl"))
                .map(str::to_string)
            else {
                continue;
            };
            let needle = format!("fnkernel(&self)->&'staticstr{{\"{kernel}\"}}");
            match units.iter().find(|(_, t)| t.contains(&needle)) {
                None => bad.push(format!("shaders/{family}/{kernel}.wgsl has no kernel unit")),
                Some((f, t)) => {
                    if !t.contains("pubfncpu") {
                        bad.push(format!(
                            "{kernel}: its unit's file {} has no CPU twin",
                            f.display()
                        ));
                    }
                }
            }
            let case = root().join(format!("tests/kernels/{family}/{kernel}.rs"));
            if !case.is_file() || !catalogue.contains(&format!("{family}::{kernel},")) {
                bad.push(format!("{kernel}: no case generator tests/kernels/{family}/{kernel}.rs in the catalogue"));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// **Architecture Invariant:** every `Params` struct a family declares is named by a `params` line of its
/// permutations file, so the build checks its size, offsets and field types against the WGSL uniform.
#[test]
fn every_params_struct_is_layout_checked() {
    let mut bad = Vec::new();
    let mut count = 0;
    for (family, src, shaders) in families() {
        let perms = read(&shaders.join("permutations"));
        for f in rust_files(&src) {
            let module = f.file_stem().unwrap().to_str().unwrap().to_string();
            for line in read(&f).lines() {
                // A uniform's mirror may be public or kept to its crate (its fields are the WGSL's).
                let line = line.trim();
                let Some(rest) = line
                    .strip_prefix("pub struct ")
                    .or_else(|| line.strip_prefix("pub(crate) struct "))
                else {
                    continue;
                };
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.ends_with("Params") {
                    continue;
                }
                count += 1;
                let path = format!("crate::{module}::{name}");
                if !perms
                    .lines()
                    .any(|l| l.starts_with("params ") && l.trim_end().ends_with(&path))
                {
                    bad.push(format!("{path} ({family}) is not named by a params line"));
                }
            }
        }
    }
    assert!(count >= 20, "found only {count} Params structs");
    assert!(bad.is_empty(), "{bad:#?}");
}

/// ARCHITECTURE.md has a heading for every crate.
#[test]
fn architecture_names_every_crate() {
    let arch = read(&root().join("ARCHITECTURE.md"));
    let mut bad = Vec::new();
    for e in std::fs::read_dir(root().join("crates")).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if !arch.contains(&format!("`crates/{name}`")) {
            bad.push(name);
        }
    }
    assert!(bad.is_empty(), "ARCHITECTURE.md does not name: {bad:?}");
}

/// Every `#[allow(...)]` says why (the workspace lint warns; this makes it an error).
#[test]
fn every_allow_has_a_reason() {
    let mut bad = Vec::new();
    for dir in ["crates", "tests", "benches", "xtask", "src", "examples"] {
        for f in rust_files(&root().join(dir)) {
            let text = code(&read(&f));
            // The needle is assembled so that this file's own code does not match it.
            let needle = ["#[", "allow("].concat();
            let mut rest = text.as_str();
            while let Some(i) = rest.find(&needle) {
                let end = rest[i..].find(")]").map_or(rest.len(), |e| i + e);
                if !rest[i..end].contains("reason") {
                    bad.push(format!("{}: {}", f.display(), &rest[i..end.min(i + 60)]));
                }
                rest = &rest[end..];
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The functions that read an adapter trait the planners decide by (`caps.software`, `caps.subgroup`,
/// `caps.subgroup_min_size`, `caps.f16`) or call `row_reduction`, as (path, function), in the crates'
/// sources. The CLI, which only prints the traits, and `Context::sibling`, which builds a sibling's
/// traits from its own, branch on nothing.
fn adapter_branches() -> Vec<(String, String)> {
    let needles = [
        "caps.software",
        "caps().software",
        "caps.subgroup",
        "caps().subgroup",
        "caps.f16",
        "caps().f16",
        "row_reduction(",
    ];
    let mut out: Vec<(String, String)> = Vec::new();
    for f in rust_files(&root().join("crates")) {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("crates/wring-cli/") {
            continue;
        }
        let mut function = String::new();
        for line in code(&read(&f)).lines() {
            let t = line.trim_start();
            let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
            let t = t.strip_prefix("pub ").unwrap_or(t);
            let t = t.strip_prefix("const ").unwrap_or(t);
            if let Some(rest) = t.strip_prefix("fn ") {
                function = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if function == "row_reduction" {
                    // The definition: its own branches are found below by their `caps.` reads.
                    continue;
                }
            }
            if needles.iter().any(|n| line.contains(n))
                && !(rel == "crates/wring-runtime/src/context.rs" && function == "sibling")
                && !out.contains(&(rel.clone(), function.clone()))
            {
                out.push((rel.clone(), function.clone()));
            }
        }
    }
    out
}

/// **Architecture Invariant:** every planner branch on the adapter's traits is in ARCHITECTURE.md's table
/// "Planner branches by adapter", and every test the table names exists, so the GPU path and the
/// CPU-adapter path of each branch have a named end-to-end test.
#[test]
fn every_adapter_branch_is_in_the_architecture_table() {
    let arch = read(&root().join("ARCHITECTURE.md"));
    let start = arch
        .find("**Planner branches by adapter.**")
        .expect("ARCHITECTURE.md has the planner branch table");
    let rows: Vec<&str> = arch[start..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("| where"))
        .take_while(|l| l.trim_start().starts_with('|'))
        .filter(|l| l.contains("`crates/"))
        .collect();
    let branches = adapter_branches();
    assert!(
        branches.len() >= 15,
        "found only {} branches: {branches:?}",
        branches.len()
    );
    let mut bad = Vec::new();
    for (path, function) in &branches {
        let named = |r: &&str| r.contains(&format!("`{path}` `{function}`"));
        if !rows.iter().any(named) {
            bad.push(format!(
                "{path} {function} branches on the adapter but is not in the table"
            ));
        }
    }
    for row in &rows {
        let cells: Vec<&str> = row.split('|').collect();
        let place = cells.get(1).copied().unwrap_or("");
        if !branches
            .iter()
            .any(|(p, f)| place.contains(&format!("`{p}` `{f}`")))
        {
            bad.push(format!(
                "the table names a branch that is not there: {place}"
            ));
        }
        let tests = cells
            .get(cells.len().saturating_sub(2))
            .copied()
            .unwrap_or("");
        let names: Vec<&str> = tests
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.contains("::"))
            .collect();
        if names.is_empty() {
            bad.push(format!("no test named for {place}"));
        }
        for name in names {
            let parts: Vec<&str> = name.split("::").collect();
            let (function, module) = parts.split_last().unwrap();
            let ok = if module.last() == Some(&"every_case") {
                read(&root().join("tests/kernels/mod.rs")).contains(&format!("::{function},"))
                    || function.ends_with('*')
            } else {
                let file = root().join("tests").join(module.join("/") + ".rs");
                file.is_file() && read(&file).contains(&format!("fn {function}("))
            };
            if !ok {
                bad.push(format!("{place}: no test {name}"));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
