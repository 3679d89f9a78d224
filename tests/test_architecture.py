"""The package's own imports, read with ``ast``: the layering of DESIGN.md holds.

Asserted over every module of ``lipxai``: (a) no import cycle among lipxai modules, (b) no
import from a higher layer, (c) no ``_name`` imported from another lipxai module (``_core``'s
names are public), (d) no function-level import of a lipxai module except the documented lazy
ones in ``lipxai/cli.py`` and ``lipxai/__init__.py``.  Module-level imports are those outside
any function (``if``/``try`` blocks included); ``from pkg import mod`` imports ``pkg.mod``.
"""

from __future__ import annotations

import ast
import pathlib


PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lipxai"

#: The layer of each top-level part of the package (imports only go down, or stay level).
LAYERS = {
    "_core": 0,
    "nn": 1, "bounds": 1, "data": 1, "losses": 1,
    "certify": 2, "explain": 2, "boundary": 2, "metrics": 2,
    "train": 3,
    "apps": 4,
    "cli": 5, "__main__": 5,
}

#: Modules allowed to import lipxai modules inside functions (documented lazy imports).
LAZY_IMPORTERS = {"lipxai.cli", "lipxai"}

def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, tuple[pathlib.Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str):
    """``(target module, imported name or None, module-level?)`` for each lipxai import."""
    path, tree = MODULES[module]
    is_package = path.name == "__init__.py"
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "lipxai":
                        found.append((alias.name, None, not in_function))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child)
                if target.split(".")[0] != "lipxai":
                    continue
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    if sub in MODULES:
                        found.append((sub, None, not in_function))
                    else:
                        found.append((target, alias.name, not in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, top in _imports(m) if top and t in MODULES and t != m}
            for m in MODULES}


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if m != "lipxai" and _part(m) not in LAYERS)
    assert not missing, f"modules with no layer in LAYERS: {missing}"


def test_no_import_cycle():
    cycles = _cycles(_graph())
    offenders = sorted({m for c in _cycles(_graph()) for m in c})
    assert not offenders, f"import cycles among lipxai modules: {cycles} (offenders {offenders})"


def _layer_offenders():
    offenders = []
    for module in MODULES:
        if module == "lipxai":
            continue
        for target, _, _ in _imports(module):
            if target != "lipxai" and LAYERS[_part(target)] > LAYERS[_part(module)]:
                offenders.append(f"{module} -> {target}")
    return offenders


def test_imports_only_go_down():
    offenders = sorted(set(_layer_offenders()))
    assert not offenders, f"imports from a higher layer: {offenders}"


def _private_to(target: str) -> str | None:
    """The package a private module is private to (``lipxai.nn._common`` -> ``lipxai.nn``)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _private_offenders():
    offenders = []
    for module in MODULES:
        for target, name, _ in _imports(module):
            owner = _private_to(target)
            hidden_module = owner is not None and not (module + ".").startswith(owner + ".")
            both_core = module.startswith("lipxai._core") and target.startswith("lipxai._core")
            hidden_name = (bool(name) and name.startswith("_") and not name.startswith("__")
                           and not both_core)
            if target != module and (hidden_module or hidden_name):
                offenders.append(f"{module} -> {target}" + (f".{name}" if name else ""))
    return offenders


def test_no_private_name_crosses_modules():
    """A ``_name`` stays in its module; a private module (``_core``, ``nn._common``) is open to
    the package that holds it, and ``_core``'s modules may share their private names."""
    offenders = sorted(set(_private_offenders()))
    assert not offenders, f"private names imported from another lipxai module: {offenders}"


def _function_level_offenders():
    return [f"{module} -> {target}" for module in MODULES if module not in LAZY_IMPORTERS
            for target, _, top in _imports(module) if not top]


def test_no_function_level_lipxai_import():
    offenders = sorted(set(_function_level_offenders()))
    assert not offenders, f"function-level imports of lipxai modules: {offenders}"
