//! Kernel variants: what a family's build preprocessed and validated (one typed static per variant in the
//! family's generated `catalogue`), and kernels specialised from source at run time.

use std::borrow::Cow;

pub use crate::shader::{BindingKind, Requires};

/// One resource binding of a variant, reflected by naga at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Bind group index.
    pub group: u32,
    /// Binding index within the group.
    pub binding: u32,
    /// The WGSL variable name; launch arguments are matched to bindings by this name.
    pub name: Cow<'static, str>,
    /// Uniform, read-only storage, or read-write storage.
    pub kind: BindingKind,
}

/// A kernel variant: preprocessed, validated WGSL and what reflection found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Kernel name, the stem of its file under `shaders/`.
    pub kernel: Cow<'static, str>,
    /// Variant name, unique within the kernel.
    pub name: Cow<'static, str>,
    /// The source file, for error messages.
    pub file: Cow<'static, str>,
    /// Adapter features the variant needs.
    pub requires: Requires,
    /// The defines it was preprocessed with.
    pub defines: Cow<'static, [(Cow<'static, str>, Cow<'static, str>)]>,
    /// The preprocessed WGSL.
    pub source: Cow<'static, str>,
    /// The compute entry point.
    pub entry: Cow<'static, str>,
    /// `@workgroup_size` after constant evaluation.
    pub workgroup_size: [u32; 3],
    /// Bindings sorted by (group, binding).
    pub bindings: Cow<'static, [Binding]>,
}

impl Variant {
    /// `kernel/variant`, the name used in logs, errors and test case names.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kernel, self.name)
    }

    /// The value of a define, if the variant was built with it.
    pub fn define(&self, name: &str) -> Option<&str> {
        self.defines
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// An integer define the kernel's host code relies on (workgroup size, rows per workgroup, ...).
    ///
    /// # Panics
    /// If the build table lacks it, which `tests` in this crate rule out for every built-in variant.
    pub fn define_u32(&self, name: &str) -> u32 {
        self.define(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("variant {} has no integer define {name}", self.id()))
    }

    /// Preprocesses and validates a kernel given as source at run time, through the same path as the
    /// build, so a custom kernel gets the same checks and the same reflected layout.
    pub fn from_source(
        kernel: &str,
        name: &str,
        file: &str,
        source: &str,
        defines: &[(&str, &str)],
        requires: Requires,
    ) -> Result<Variant, crate::shader::ShaderError> {
        let defines: Vec<(String, String)> = defines
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let text = crate::shader::preprocess(file, source, &defines, requires, &|n| {
            crate::COMMON
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })?;
        let refl = crate::shader::validate(file, &text, requires)?;
        Ok(Variant {
            kernel: Cow::Owned(kernel.into()),
            name: Cow::Owned(name.into()),
            file: Cow::Owned(file.into()),
            requires,
            defines: Cow::Owned(
                defines
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
                    .collect(),
            ),
            source: Cow::Owned(text),
            entry: Cow::Owned(refl.entry),
            workgroup_size: refl.workgroup_size,
            bindings: Cow::Owned(
                refl.bindings
                    .into_iter()
                    .map(|b| Binding {
                        group: b.group,
                        binding: b.binding,
                        name: Cow::Owned(b.name),
                        kind: b.kind,
                    })
                    .collect(),
            ),
        })
    }
}

/// The variants of one kernel in a family's table.
pub fn of_kernel<'a>(
    table: &'a [&'static Variant],
    kernel: &'a str,
) -> impl Iterator<Item = &'static Variant> + 'a {
    table.iter().copied().filter(move |v| v.kernel == kernel)
}

/// One variant of a family's table by kernel and variant name.
pub fn find(table: &[&'static Variant], kernel: &str, name: &str) -> Option<&'static Variant> {
    table
        .iter()
        .copied()
        .find(|v| v.kernel == kernel && v.name == name)
}
