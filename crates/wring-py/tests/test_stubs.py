"""The type stubs (crates/wring-py/wring.pyi) describe exactly what the module defines: the same public
functions, classes and methods, with the same parameters and defaults, and everything documented."""

import ast
import inspect
import pathlib

import wring

STUB = pathlib.Path(__file__).resolve().parents[1] / "wring.pyi"
# Helper types the stubs declare for annotations only.
STUB_ONLY = {"ShardReport"}


def stub_tree():
    return ast.parse(STUB.read_text())


def stub_params(fn: ast.FunctionDef):
    args = fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
    out = []
    for a, d in zip(args, defaults):
        if a.arg == "self":
            continue
        out.append((a.arg, None if d is None else ast.unparse(d)))
    return out


def runtime_params(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    out = []
    for p in sig.parameters.values():
        if p.name in ("self", "cls", "$self", "$cls"):
            continue
        d = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, d))
    return out


def same(stub, runtime):
    if runtime is None:
        return True
    if [n for n, _ in stub] != [n for n, _ in runtime]:
        return False
    for (_, a), (_, b) in zip(stub, runtime):
        # A default the stub writes as `...` (a mutable default such as an empty list) is not compared.
        if a == "..." or b == "Ellipsis":
            continue
        if (a is None) != (b is None) or (a is not None and ast.literal_eval(a) != ast.literal_eval(b)):
            return False
    return True


def test_the_stubs_name_what_the_module_defines():
    tree = stub_tree()
    stub_names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} - STUB_ONLY
    # The package's __init__ re-exports the extension module, which is also an attribute of the package.
    module_names = {
        n for n in dir(wring) if not n.startswith("_") and not inspect.ismodule(getattr(wring, n))
    }
    assert stub_names == module_names


def test_the_installed_package_ships_the_stubs():
    package = pathlib.Path(wring.__file__).parent
    assert (package / "__init__.pyi").read_text() == STUB.read_text()
    assert (package / "py.typed").exists()


def test_every_function_and_method_has_the_stubbed_signature_and_a_docstring():
    problems = []
    for node in stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            obj = getattr(wring, node.name)
            if not same(stub_params(node), runtime_params(obj)):
                problems.append(f"{node.name}: stub {stub_params(node)} != module {runtime_params(obj)}")
            if not (obj.__doc__ or "").strip():
                problems.append(f"{node.name} has no docstring")
        elif isinstance(node, ast.ClassDef) and node.name not in STUB_ONLY:
            cls = getattr(wring, node.name)
            if not (cls.__doc__ or "").strip():
                problems.append(f"{node.name} has no docstring")
            stubbed = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
            public = {n for n in vars(cls) if not n.startswith("_")}
            if public - stubbed:
                problems.append(f"{node.name}: not in the stubs: {sorted(public - stubbed)}")
            for m in node.body:
                if not isinstance(m, ast.FunctionDef):
                    continue
                if m.name == "__init__":
                    if not same(stub_params(m), runtime_params(cls)):
                        problems.append(f"{node.name}(): stub {stub_params(m)} != module {runtime_params(cls)}")
                    continue
                attr = getattr(cls, m.name, None)
                if attr is None:
                    problems.append(f"{node.name}.{m.name} is stubbed but not defined")
                    continue
                if not (attr.__doc__ or "").strip():
                    problems.append(f"{node.name}.{m.name} has no docstring")
                if not isinstance(attr, property) and not inspect.isgetsetdescriptor(attr):
                    if not same(stub_params(m), runtime_params(attr)):
                        problems.append(
                            f"{node.name}.{m.name}: stub {stub_params(m)} != module {runtime_params(attr)}"
                        )
    assert wring.__doc__ and wring.__doc__.strip()
    assert not problems, "\n".join(problems)
