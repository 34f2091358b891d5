//! The code generator every kernel family's `build.rs` calls: it preprocesses every variant declared in
//! `shaders/<family>/permutations`, validates it with naga (all validation flags), reflects its bindings,
//! workgroup size and uniform layout, and writes `catalogue.rs`: one typed static per variant (the handle
//! planners and tests name), the family's table of them, and compile-time assertions that each kernel's
//! Rust `Params` struct has the size, field offsets and field types of the WGSL uniform (members named
//! with a leading underscore are padding, covered by the size alone). Any error fails
//! the build: a shader that only breaks on a user's machine, or a uniform whose Rust mirror drifted, is the
//! failure this exists to prevent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::shader::{self, ShaderError};

fn io_err(file: &Path, e: std::io::Error) -> ShaderError {
    ShaderError {
        file: file.display().to_string(),
        message: e.to_string(),
    }
}

/// Builds the catalogue of the family whose shaders live in `shaders/<family>/`, for a crate two levels
/// below the workspace root. Panics (failing the build) with every error found.
pub fn build_family(family: &str) {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let shaders = manifest.join("../../shaders");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-changed={}", shaders.join(family).display());
    println!(
        "cargo::rerun-if-changed={}",
        shaders.join("common").display()
    );
    match generate(&shaders, family) {
        Ok(files) => {
            for (name, text) in files {
                let path = out.join(&name);
                if let Err(e) = std::fs::write(&path, text) {
                    panic!("shader build failed: {}", io_err(&path, e));
                }
            }
        }
        // A multi-line message reads best as one panic: cargo prints it whole.
        Err(e) => panic!("shader build failed:\n{e}"),
    }
}

/// The identifier of a variant's static: its name in upper case.
pub fn handle_name(variant: &str) -> String {
    variant.to_ascii_uppercase()
}

/// Generates the family's files: each variant's preprocessed WGSL and `catalogue.rs`.
pub fn generate(shaders: &Path, family: &str) -> Result<Vec<(String, String)>, ShaderError> {
    let dir = shaders.join(family);
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| io_err(p, e));
    let perms_path = dir.join("permutations");
    let perms = shader::parse_permutations(&read(&perms_path)?).map_err(|e| ShaderError {
        file: format!("shaders/{family}/{}", e.file),
        message: e.message,
    })?;
    let common = shaders.join("common");
    let import = |name: &str| std::fs::read_to_string(common.join(format!("{name}.wgsl"))).ok();

    // Every kernel file must be used by at least one variant.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| io_err(&dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".wgsl").map(str::to_string))
        .collect();
    files.sort();
    for f in &files {
        if !perms.variants.iter().any(|p| &p.kernel == f) {
            return Err(ShaderError {
                file: format!("shaders/{family}/{f}.wgsl"),
                message: "no variant in this family's permutations uses this kernel".into(),
            });
        }
    }
    for (kernel, _) in &perms.params {
        if !files.contains(kernel) {
            return Err(ShaderError {
                file: format!("shaders/{family}/permutations"),
                message: format!("`params {kernel}` names no kernel of this family"),
            });
        }
    }

    let mut outputs = Vec::new();
    let mut modules = String::new();
    let mut all = String::new();
    let mut checks = String::new();
    let mut checked: Vec<&str> = Vec::new();
    let mut errors = Vec::new();
    let mut current_kernel = String::new();
    for p in &perms.variants {
        let file = format!("shaders/{family}/{}.wgsl", p.kernel);
        let src = read(&dir.join(format!("{}.wgsl", p.kernel)))?;
        let label = format!("{file} [{}]", p.variant);
        let result = shader::preprocess(&file, &src, &p.defines, p.requires, &import)
            .and_then(|text| shader::validate(&label, &text, p.requires).map(|r| (text, r)));
        let (text, refl) = match result {
            Ok(ok) => ok,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let out_name = format!("{}.{}.wgsl", p.kernel, p.variant);
        outputs.push((out_name.clone(), text));

        if p.kernel != current_kernel {
            if !current_kernel.is_empty() {
                modules.push_str("}\n\n");
            }
            writeln!(
                modules,
                "/// The variants of `{file}`.\npub mod {k} {{\n    use super::*;",
                k = p.kernel
            )
            .expect("writing to a String cannot fail");
            current_kernel = p.kernel.clone();
        }
        let defines: String = p
            .defines
            .iter()
            .map(|(k, v)| format!("(Cow::Borrowed({k:?}), Cow::Borrowed({v:?})), "))
            .collect();
        let bindings: String = refl
            .bindings
            .iter()
            .map(|b| {
                format!(
                    "Binding {{ group: {}, binding: {}, name: Cow::Borrowed({:?}), kind: BindingKind::{:?} }}, ",
                    b.group, b.binding, b.name, b.kind
                )
            })
            .collect();
        let handle = handle_name(&p.variant);
        writeln!(
            modules,
            "    /// `{k}/{v}`.\n    pub static {handle}: Variant = Variant {{ kernel: Cow::Borrowed({k:?}), name: Cow::Borrowed({v:?}), \
             file: Cow::Borrowed({file:?}), requires: Requires {{ f16: {f16}, subgroup: {sg} }}, \
             defines: Cow::Borrowed(&[{defines}]), \
             source: Cow::Borrowed(include_str!(concat!(env!(\"OUT_DIR\"), \"/{out_name}\"))), \
             entry: Cow::Borrowed({entry:?}), workgroup_size: {wg:?}, bindings: Cow::Borrowed(&[{bindings}]) }};",
            k = p.kernel,
            v = p.variant,
            f16 = p.requires.f16,
            sg = p.requires.subgroup,
            entry = refl.entry,
            wg = refl.workgroup_size,
        )
        .expect("writing to a String cannot fail");
        writeln!(all, "    &{}::{handle},", p.kernel).expect("writing to a String cannot fail");

        // The uniform's layout is checked once per kernel against the Rust struct its `params` line names.
        if let Some(u) = &refl.uniform
            && !checked.contains(&p.kernel.as_str())
        {
            checked.push(&p.kernel);
            let Some((_, path)) = perms.params.iter().find(|(k, _)| k == &p.kernel) else {
                errors.push(format!(
                    "{file}: the kernel has a uniform but shaders/{family}/permutations has no `params {} PATH` line naming its Rust struct",
                    p.kernel
                ));
                continue;
            };
            let size = u.size.next_multiple_of(16);
            writeln!(
                checks,
                "// `{k}`'s uniform against `{path}`.\nconst _: () = {{\n    type P = {path};\n    assert!(\n        ::core::mem::size_of::<P>() == {size},\n        \"{path} must be {size} bytes, the size of {k}'s uniform rounded up to 16\"\n    );",
                k = p.kernel,
            )
            .expect("writing to a String cannot fail");
            // Members named with a leading underscore are padding: the struct's size covers them, and the
            // Rust side may lay its padding out as it likes (one array, or several words).
            for (name, offset, _) in u.members.iter().filter(|(n, _, _)| !n.starts_with('_')) {
                writeln!(
                    checks,
                    "    assert!(::core::mem::offset_of!(P, {name}) == {offset}, \"{path}::{name} must be at byte {offset}, as in {k}'s uniform\");",
                    k = p.kernel
                )
                .expect("writing to a String cannot fail");
            }
            checks.push_str("};\n");
            let fields: String = u
                .members
                .iter()
                .filter(|(n, _, _)| !n.starts_with('_'))
                .map(|(name, _, ty)| format!("    let _: {ty} = p.{name};\n"))
                .collect();
            writeln!(
                checks,
                "// Each field of `{path}` has the Rust type of the uniform member of the same name.\n\
                 #[allow(dead_code, reason = \"a compile-time type check, never called\")]\n\
                 fn _{k}_params_types(p: &{path}) {{\n{fields}}}",
                k = p.kernel
            )
            .expect("writing to a String cannot fail");
        }
    }
    for (kernel, _) in &perms.params {
        if !checked.contains(&kernel.as_str()) && errors.is_empty() {
            errors.push(format!(
                "shaders/{family}/permutations: `params {kernel}` names a kernel without a uniform"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ShaderError {
            file: format!("shaders/{family}/"),
            message: errors.join("\n\n"),
        });
    }
    if !current_kernel.is_empty() {
        modules.push_str("}\n");
    }
    let catalogue = format!(
        "// Generated by wring-kernels-core's codegen from shaders/{family}/permutations. Do not edit.\n\n\
         {modules}\n\
         /// Every variant of the family, sorted by kernel then variant name.\n\
         pub static ALL: &[&Variant] = &[\n{all}];\n\n{checks}"
    );
    outputs.push(("catalogue.rs".into(), catalogue));
    Ok(outputs)
}
