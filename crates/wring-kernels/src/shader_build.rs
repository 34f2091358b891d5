//! The shader preprocessor, the permutation table parser and the naga validator.
//!
//! This module is compiled twice: by `build.rs`, which preprocesses and validates every declared variant
//! so that a bad shader fails the build, and into the crate itself, so that the runtime can specialise a
//! kernel from source (test fixtures, user kernels) through exactly the same path. It therefore uses only
//! `std` and `naga`.

use std::collections::BTreeSet;
use std::fmt;

/// What a variant needs from the adapter beyond baseline WebGPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Requires {
    /// `SHADER_F16`: the variant declares `f16` values.
    pub f16: bool,
    /// `SUBGROUP`: the variant uses subgroup builtins.
    pub subgroup: bool,
}

/// How a resource is bound, as reflected from the validated module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingKind {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    StorageRead,
    /// `var<storage, read_write>`.
    StorageReadWrite,
}

/// One resource binding, reflected from the validated module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectedBinding {
    /// The bind group index (always 0 in wring's kernels).
    pub group: u32,
    /// The binding index inside its group.
    pub binding: u32,
    /// The WGSL variable name, which is how the runtime matches arguments to bindings.
    pub name: String,
    /// The resource kind.
    pub kind: BindingKind,
}

/// What the build learns about a variant from naga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflection {
    /// The compute entry point's name.
    pub entry: String,
    /// `@workgroup_size`, after constant evaluation.
    pub workgroup_size: [u32; 3],
    /// Bindings sorted by (group, binding).
    pub bindings: Vec<ReflectedBinding>,
}

/// One line of `shaders/permutations`: a kernel variant declared as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permutation {
    /// The kernel, which is also the file stem under `shaders/`.
    pub kernel: String,
    /// The variant name, unique within the kernel.
    pub variant: String,
    /// Adapter features the variant needs.
    pub requires: Requires,
    /// Defines as `(NAME, value)`; a flag has an empty value.
    pub defines: Vec<(String, String)>,
}

/// A shader that could not be preprocessed or did not validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShaderError {
    /// The file (or variant label) the error is about.
    pub file: String,
    /// The preprocessor's or naga's message, with source context.
    pub message: String,
}

impl fmt::Display for ShaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for ShaderError {}

/// Parses the permutation table: `kernel variant requires DEFINE[=value] ...` per line, `#` comments.
///
/// `requires` is `-`, `f16`, `subgroup` or `f16,subgroup`.
pub fn parse_permutations(text: &str) -> Result<Vec<Permutation>, ShaderError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| ShaderError {
            file: format!("shaders/permutations:{}", lineno + 1),
            message,
        };
        let mut words = line.split_whitespace();
        let (Some(kernel), Some(variant), Some(requires)) =
            (words.next(), words.next(), words.next())
        else {
            return Err(err("expected `kernel variant requires DEFINES...`".into()));
        };
        let mut req = Requires::default();
        if requires != "-" {
            for r in requires.split(',') {
                match r {
                    "f16" => req.f16 = true,
                    "subgroup" => req.subgroup = true,
                    other => {
                        return Err(err(format!(
                            "unknown requirement `{other}` (expected f16 or subgroup)"
                        )));
                    }
                }
            }
        }
        let defines = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (w.to_string(), String::new()),
            })
            .collect();
        if !seen.insert((kernel.to_string(), variant.to_string())) {
            return Err(err(format!("variant {kernel}/{variant} is declared twice")));
        }
        out.push(Permutation {
            kernel: kernel.into(),
            variant: variant.into(),
            requires: req,
            defines,
        });
    }
    out.sort_by(|a, b| (&a.kernel, &a.variant).cmp(&(&b.kernel, &b.variant)));
    Ok(out)
}

/// Expands `#import NAME`, `#ifdef`, `#ifndef`, `#else` and `#endif`, and prepends the defines.
///
/// A define with a value becomes a WGSL declaration: an integer becomes `const NAME: u32`, a number with a
/// point becomes `const NAME: f32`, anything else a type `alias`. Flags only steer `#ifdef`. `import` is asked
/// for the text of `shaders/common/NAME.wgsl`; each import is expanded once.
pub fn preprocess(
    file: &str,
    source: &str,
    defines: &[(String, String)],
    requires: Requires,
    import: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ShaderError> {
    let mut out = String::new();
    if requires.f16 {
        out.push_str("enable f16;\n");
    }
    for (name, value) in defines {
        if value.is_empty() {
            continue;
        }
        if value.parse::<u32>().is_ok() {
            out.push_str(&format!("const {name}: u32 = {value}u;\n"));
        } else if value.contains('.') && value.parse::<f32>().is_ok() {
            out.push_str(&format!("const {name}: f32 = {value};\n"));
        } else {
            out.push_str(&format!("alias {name} = {value};\n"));
        }
    }
    let mut imported = BTreeSet::new();
    expand(file, source, defines, import, &mut imported, &mut out, 0)?;
    Ok(out)
}

fn expand(
    file: &str,
    source: &str,
    defines: &[(String, String)],
    import: &dyn Fn(&str) -> Option<String>,
    imported: &mut BTreeSet<String>,
    out: &mut String,
    depth: usize,
) -> Result<(), ShaderError> {
    if depth > 16 {
        return Err(ShaderError {
            file: file.into(),
            message: "imports nest deeper than 16 levels".into(),
        });
    }
    let defined = |name: &str| defines.iter().any(|(k, _)| k == name);
    // Each entry says whether the enclosing branch is live, and whether an `#else` was seen.
    let mut stack: Vec<(bool, bool)> = Vec::new();
    for (lineno, line) in source.lines().enumerate() {
        let err = |message: String| ShaderError {
            file: format!("{file}:{}", lineno + 1),
            message,
        };
        let trimmed = line.trim_start();
        let live = stack.iter().all(|&(l, _)| l);
        if let Some(rest) = trimmed.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            let directive = words.next().unwrap_or("");
            let arg = words.next();
            match (directive, arg) {
                ("ifdef", Some(name)) => stack.push((defined(name), false)),
                ("ifndef", Some(name)) => stack.push((!defined(name), false)),
                ("else", None) => match stack.last_mut() {
                    Some((l, seen_else @ false)) => {
                        *l = !*l;
                        *seen_else = true;
                    }
                    _ => return Err(err("`#else` without a matching `#ifdef`".into())),
                },
                ("endif", None) => {
                    if stack.pop().is_none() {
                        return Err(err("`#endif` without a matching `#ifdef`".into()));
                    }
                }
                ("import", Some(name)) => {
                    if live && imported.insert(name.to_string()) {
                        let text = import(name).ok_or_else(|| {
                            err(format!("no shaders/common/{name}.wgsl to import"))
                        })?;
                        expand(
                            &format!("shaders/common/{name}.wgsl"),
                            &text,
                            defines,
                            import,
                            imported,
                            out,
                            depth + 1,
                        )?;
                    }
                }
                _ => {
                    return Err(err(format!(
                        "unknown preprocessor directive `{}`",
                        trimmed.trim_end()
                    )));
                }
            }
            // Keep line numbers of the expanded text close to the file's by leaving an empty line.
            out.push('\n');
            continue;
        }
        if live {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !stack.is_empty() {
        return Err(ShaderError {
            file: file.into(),
            message: "`#ifdef` without a matching `#endif`".into(),
        });
    }
    Ok(())
}

/// Parses and validates preprocessed WGSL with every naga validation flag, and reflects it.
///
/// The capabilities granted are exactly those the variant declares, so an f32 variant that slips an `f16`
/// in, or a shared-memory variant that calls a subgroup builtin, fails here rather than on a user's adapter.
pub fn validate(label: &str, source: &str, requires: Requires) -> Result<Reflection, ShaderError> {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let module = naga::front::wgsl::parse_str(source).map_err(|e| ShaderError {
        file: label.into(),
        message: e.emit_to_string_with_path(source, label),
    })?;
    // pack2x16float/unpack2x16float are core WGSL; naga gates them behind a capability that wgpu grants on
    // every backend with the SHADER_F16_IN_F32 downlevel flag (all but the oldest GL ES).
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if requires.f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if requires.subgroup {
        caps |= Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
    }
    Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| ShaderError {
            file: label.into(),
            message: e.emit_to_string_with_path(source, label),
        })?;
    let compute: Vec<_> = module
        .entry_points
        .iter()
        .filter(|ep| ep.stage == naga::ShaderStage::Compute)
        .collect();
    let [ep] = compute.as_slice() else {
        return Err(ShaderError {
            file: label.into(),
            message: format!(
                "expected exactly one compute entry point, found {}",
                compute.len()
            ),
        });
    };
    if ep.workgroup_size_overrides.is_some() {
        return Err(ShaderError {
            file: label.into(),
            message: "workgroup size must be a constant, not a pipeline override".into(),
        });
    }
    let mut bindings = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        let kind = match var.space {
            naga::AddressSpace::Uniform => BindingKind::Uniform,
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                BindingKind::StorageReadWrite
            }
            naga::AddressSpace::Storage { .. } => BindingKind::StorageRead,
            other => {
                return Err(ShaderError {
                    file: label.into(),
                    message: format!(
                        "binding {} uses address space {other:?}, which wring does not bind",
                        rb.binding
                    ),
                });
            }
        };
        bindings.push(ReflectedBinding {
            group: rb.group,
            binding: rb.binding,
            name: var.name.clone().unwrap_or_default(),
            kind,
        });
    }
    bindings.sort_by_key(|b| (b.group, b.binding));
    Ok(Reflection {
        entry: ep.name.clone(),
        workgroup_size: ep.workgroup_size,
        bindings,
    })
}
