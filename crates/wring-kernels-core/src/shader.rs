//! The shader preprocessor, the permutation table parser and the naga validator.
//!
//! Family build scripts run these through [`crate::codegen`] so that a bad shader fails the build, and the
//! runtime runs them again to specialise a kernel from source (test fixtures, user kernels) through
//! exactly the same path.

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
    /// The layout of the uniform's struct, when the kernel has one.
    pub uniform: Option<UniformLayout>,
}

/// The layout of a kernel's uniform struct as naga computes it: what its Rust `Params` must equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniformLayout {
    /// The struct's size in bytes.
    pub size: u32,
    /// Each member: its name, its byte offset and the Rust type with the same layout (`u32`, `[f32; 4]`).
    pub members: Vec<(String, u32, String)>,
}

/// The Rust type laid out as a WGSL type in a uniform, or `None` for types wring's uniforms never use.
fn rust_type(module: &naga::Module, ty: naga::Handle<naga::Type>) -> Option<String> {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => Some("u32"),
        (naga::ScalarKind::Sint, 4) => Some("i32"),
        (naga::ScalarKind::Float, 4) => Some("f32"),
        _ => None,
    };
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(s) => scalar(*s).map(str::to_string),
        naga::TypeInner::Vector { size, scalar: s } => {
            Some(format!("[{}; {}]", scalar(*s)?, *size as u32))
        }
        naga::TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => Some(format!("[{}; {n}]", rust_type(module, *base)?)),
        _ => None,
    }
}

/// One kernel variant declared in a family's `permutations` file, after axis expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permutation {
    /// The kernel, which is also the file stem under `shaders/<family>/`.
    pub kernel: String,
    /// The variant name, unique within the kernel.
    pub variant: String,
    /// Adapter features the variant needs.
    pub requires: Requires,
    /// Defines as `(NAME, value)`; a flag has an empty value.
    pub defines: Vec<(String, String)>,
}

/// A family's `permutations` file: its variants, and the Rust struct each kernel's uniform is laid out as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permutations {
    /// Every variant, sorted by kernel then variant name.
    pub variants: Vec<Permutation>,
    /// `(kernel, Rust path of its Params struct)` from the `params` lines.
    pub params: Vec<(String, String)>,
}

/// One value of an axis: its name (possibly empty), its defines and what it requires.
#[derive(Debug, Clone)]
struct AxisValue {
    name: String,
    defines: Vec<(String, String)>,
    requires: Requires,
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

/// Splits defines into `(NAME, value)` pairs and requirement markers (`+f16`, `+subgroup`), expanding
/// `BLOCK=<format>` from wring-quant's [`BlockFormat`](wring_quant::BlockFormat) so that block sizes are
/// never retyped in a permutations file.
fn parse_defines<'a>(
    words: impl Iterator<Item = &'a str>,
    requires: &mut Requires,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for w in words {
        if let Some(feature) = w.strip_prefix('+') {
            match feature {
                "f16" => requires.f16 = true,
                "subgroup" => requires.subgroup = true,
                other => {
                    return Err(format!(
                        "unknown requirement `+{other}` (expected +f16 or +subgroup)"
                    ));
                }
            }
            continue;
        }
        match w.split_once('=') {
            Some(("BLOCK", name)) => {
                let format: wring_quant::BlockFormat = name
                    .parse()
                    .map_err(|_| format!("BLOCK={name} is not a block format wring-quant knows"))?;
                out.push((format!("FMT_{}", name.to_ascii_uppercase()), String::new()));
                out.push(("BLOCK_LEN".into(), format.block_len().to_string()));
                out.push(("BLOCK_BYTES".into(), format.block_bytes().to_string()));
                // Blocks that are a whole number of words let the shader read them with aligned u32 loads.
                if format.block_bytes().is_multiple_of(4) {
                    out.push(("ALIGNED".into(), String::new()));
                }
            }
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => out.push((w.to_string(), String::new())),
        }
    }
    Ok(out)
}

fn parse_requires(text: &str) -> Result<Requires, String> {
    let mut req = Requires::default();
    if text != "-" {
        for r in text.split(',') {
            match r {
                "f16" => req.f16 = true,
                "subgroup" => req.subgroup = true,
                other => {
                    return Err(format!(
                        "unknown requirement `{other}` (expected f16 or subgroup)"
                    ));
                }
            }
        }
    }
    Ok(req)
}

/// Parses a family's permutation table (the grammar is documented at the top of
/// `shaders/tensor/permutations`): `axis` lines, `params` lines, and variant lines whose names may name
/// axes as `{axis}`, expanded to one variant per combination of their values.
pub fn parse_permutations(text: &str) -> Result<Permutations, ShaderError> {
    let mut out = Permutations::default();
    let mut axes: Vec<(String, Vec<AxisValue>)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| ShaderError {
            file: format!("permutations:{}", lineno + 1),
            message,
        };
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first == "axis" {
            let name = words
                .next()
                .ok_or_else(|| err("expected `axis NAME value: DEFINES | ...`".into()))?;
            let rest = line[line.find(name).unwrap_or(0) + name.len()..].trim();
            let mut values = Vec::new();
            for part in rest.split('|') {
                let (value, defines) = part
                    .split_once(':')
                    .ok_or_else(|| err(format!("axis {name}: `{}` lacks `value:`", part.trim())))?;
                let mut requires = Requires::default();
                let defines =
                    parse_defines(defines.split_whitespace(), &mut requires).map_err(&err)?;
                values.push(AxisValue {
                    name: value.trim().to_string(),
                    defines,
                    requires,
                });
            }
            if axes.iter().any(|(n, _)| n == name) {
                return Err(err(format!("axis {name} is declared twice")));
            }
            axes.push((name.to_string(), values));
            continue;
        }
        if first == "params" {
            let (Some(kernel), Some(path), None) = (words.next(), words.next(), words.next())
            else {
                return Err(err("expected `params KERNEL RUST_PATH`".into()));
            };
            out.params.push((kernel.to_string(), path.to_string()));
            continue;
        }
        let (kernel, Some(template), Some(requires)) = (first, words.next(), words.next()) else {
            return Err(err("expected `kernel variant requires DEFINES...`".into()));
        };
        let mut base_req = parse_requires(requires).map_err(&err)?;
        let base_defines = parse_defines(words, &mut base_req).map_err(&err)?;
        // The axes this line names, in the order they appear in its variant name.
        let mut used: Vec<&(String, Vec<AxisValue>)> = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| err(format!("unclosed `{{` in `{template}`")))?;
            let name = &rest[open + 1..open + close];
            let axis = axes.iter().find(|(n, _)| n == name).ok_or_else(|| {
                err(format!(
                    "`{template}` names axis `{name}`, which is not declared above it"
                ))
            })?;
            used.push(axis);
            rest = &rest[open + close + 1..];
        }
        // Every combination of the used axes' values: an odometer over their indices.
        let mut idx = vec![0usize; used.len()];
        loop {
            let mut name = template.to_string();
            let mut defines = base_defines.clone();
            let mut req = base_req;
            for ((axis, values), &i) in used.iter().map(|a| (&a.0, &a.1)).zip(&idx) {
                let v = &values[i];
                name = name.replace(&format!("{{{axis}}}"), &v.name);
                defines.extend(v.defines.iter().cloned());
                req.f16 |= v.requires.f16;
                req.subgroup |= v.requires.subgroup;
            }
            // An empty axis value leaves its separator behind: collapse and trim underscores.
            let name = name
                .split('_')
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            if name.is_empty() {
                return Err(err(format!(
                    "`{template}` expands to an empty variant name"
                )));
            }
            if !seen.insert((kernel.to_string(), name.clone())) {
                return Err(err(format!("variant {kernel}/{name} is declared twice")));
            }
            out.variants.push(Permutation {
                kernel: kernel.into(),
                variant: name,
                requires: req,
                defines,
            });
            // Advance the odometer; stop after the last combination.
            let mut d = used.len();
            loop {
                if d == 0 {
                    break;
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < used[d].1.len() {
                    break;
                }
                idx[d] = 0;
                if d == 0 {
                    d = usize::MAX;
                    break;
                }
            }
            if used.is_empty() || d == usize::MAX {
                break;
            }
        }
    }
    out.variants
        .sort_by(|a, b| (&a.kernel, &a.variant).cmp(&(&b.kernel, &b.variant)));
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
    let mut uniform = None;
    for (_, var) in module.global_variables.iter() {
        if var.space == naga::AddressSpace::Uniform {
            let naga::TypeInner::Struct { members, span } = &module.types[var.ty].inner else {
                return Err(ShaderError {
                    file: label.into(),
                    message: "the uniform must be a struct (the kernel's Params)".into(),
                });
            };
            let mut out = Vec::new();
            for m in members {
                let name = m.name.clone().unwrap_or_default();
                let ty = rust_type(&module, m.ty).ok_or_else(|| ShaderError {
                    file: label.into(),
                    message: format!("uniform member `{name}` has a type with no Rust twin; use u32, i32, f32 or vectors and arrays of them"),
                })?;
                out.push((name, m.offset, ty));
            }
            uniform = Some(UniformLayout {
                size: *span,
                members: out,
            });
        }
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
        uniform,
    })
}
