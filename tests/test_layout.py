"""The folder tree is the architecture: imports point one way (commands -> analysis -> nn ->
inject -> memory), sramsim never imports fusion and no module imports itself in a circle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sramsim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("memory", "inject", "nn", "analysis", "commands")
LEAVES = {"sramsim", "sramsim.errors", "sramsim.progress", "sramsim.stats", "sramsim._version"}
# names re-exported by the package itself, and the layer each comes from
PACKAGE_NAMES = {"BerCurve": "memory", "Chip": "memory", "Faults": "memory", "Geometry": "memory",
                 "DramGeometry": "memory", "RandomBitErrors": "memory", "VoltageError": "memory",
                 "dram_chip": "memory", "QuantizedModel": "inject", "TorchQuantizedModel": "inject",
                 "MemoryLayout": "inject", "Evaluator": "nn", "Reference": "analysis",
                 "InputError": None, "ProfileError": None}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, runtime_only: bool = False) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import statement, lazy ones included; with
    `runtime_only`, not those under `if TYPE_CHECKING:` (annotations only: never executed)."""
    out = []
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for stmt in block.body for n in ast.walk(stmt)} if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use absolute sramsim.* names)"
            out += [(node.module, a.name) for a in node.names]
    return out


def sramsim_modules() -> dict[str, Path]:
    return {module_name(p): p for p in (ROOT / "sramsim").rglob("*.py")}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


def resolve(module: str, name: str | None, known: dict) -> str:
    """`from sramsim.memory import chip` -> sramsim.memory.chip; package re-exports -> their layer."""
    if name and f"{module}.{name}" in known:
        return f"{module}.{name}"
    if module == "sramsim" and PACKAGE_NAMES.get(name):
        return f"sramsim.{PACKAGE_NAMES[name]}"
    return module


def test_imports_point_down_and_never_to_fusion():
    known = sramsim_modules()
    bad = []
    for mod, path in known.items():
        here = layer_of(mod)
        for target, name in imports(path):
            if target.split(".")[0] == "fusion":
                bad.append(f"{mod} imports {target}")
            if target.split(".")[0] != "sramsim":
                continue
            dest = resolve(target, name, known)
            there = layer_of(dest)
            if here is None:
                assert mod in LEAVES, f"{mod}: a module outside the layer folders"
                if there is not None and mod != "sramsim":
                    bad.append(f"leaf {mod} imports {dest}")
            elif there is not None and there > here:
                bad.append(f"{mod} ({LAYERS[here]}) imports {dest} ({LAYERS[there]})")
    assert not bad, "\n".join(bad)


def test_the_package_names_are_the_deliberate_public_surface():
    import sramsim
    assert sorted(sramsim.__all__) == sorted(PACKAGE_NAMES)
    for name in sramsim.__all__:
        obj = getattr(sramsim, name)
        layer = PACKAGE_NAMES[name]
        assert obj.__module__.startswith(f"sramsim.{layer}." if layer else "sramsim.errors"), name


def test_lower_layers_never_import_from_the_package_root():
    """`from sramsim import X` inside a layer would run the package's __init__ (which imports
    every layer) from below: only the package itself, fusion and the tests may use the root."""
    bad = [f"{mod} imports from the sramsim package root"
           for mod, path in sramsim_modules().items()
           if layer_of(mod) is not None
           for target, _ in imports(path) if target == "sramsim"]
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    """No circle of imports that run (a type-only import, under `if TYPE_CHECKING:`, lets two
    modules of one layer name each other's types in annotations; it still points down only)."""
    known = sramsim_modules()
    for p in (ROOT / "fusion").rglob("*.py"):
        known[module_name(p)] = p
    graph = {m: {resolve(t, n, known) for t, n in imports(p, runtime_only=True)} & set(known)
             - {m} for m, p in known.items()}
    # a package's __init__ importing its own modules is how packages work, not a circle
    graph = {m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")
                 or m == "sramsim"} for m, deps in graph.items()}
    graph["sramsim"] = set()   # the package imports memory; everything imports the package
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_type_only_imports_are_told_apart(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nimport a\nif TYPE_CHECKING:\n"
                   "    from b import c\n    import d\nelse:\n    import e\n"
                   "def f():\n    import g\n")
    everything = [("typing", "TYPE_CHECKING"), ("a", None), ("b", "c"), ("d", None),
                  ("e", None), ("g", None)]
    assert sorted(imports(src)) == sorted(everything)
    assert sorted(imports(src, runtime_only=True)) == sorted(
        i for i in everything if i[0] not in ("b", "d"))


def test_no_flat_modules_left():
    flat = sorted(p.name for p in (ROOT / "sramsim").glob("*.py"))
    assert flat == ["__init__.py", "_version.py", "errors.py", "progress.py", "stats.py"]


def test_no_import_finder_installed():
    """sramsim 0.2 dropped the 0.1 flat names: importing it puts nothing on sys.meta_path."""
    import sys
    import sramsim  # noqa: F401
    assert not [f for f in sys.meta_path if type(f).__module__.startswith("sramsim")]


def test_public_entry_point():
    from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors  # noqa: F401
    from sramsim.inject.quantized_model import QuantizedModel as Q
    assert QuantizedModel is Q


def test_fusion_generators_are_registered_addons():
    from fusion import generators
    from sramsim.analysis import addons
    assert addons.names() == sorted(generators.NAMES)
    g = addons.build("ConvS", 3)
    ref = generators.build("ConvS", 3)
    assert type(g) is type(ref) and generators.weight_count(g) == generators.weight_count(ref)
    with pytest.raises(InputError, match="no add-on of that name"):
        addons.build("Nope", 3)
