"""The import arrows point one way: sramsim never imports fusion; energy and systolic no circle."""
import ast
from pathlib import Path

import pytest

import sramsim

ROOT = Path(sramsim.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    """Every module an `import` / `from ... import` in `path` names (lazy ones inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_sramsim_module_imports_fusion():
    offenders = sorted(f"{p.relative_to(ROOT.parent)}: {n}" for p in ROOT.rglob("*.py")
                       for n in _imports(p) if n == "fusion" or n.startswith("fusion."))
    assert offenders == []


def test_energy_and_systolic_do_not_import_each_other_both_ways():
    def uses(module: str, target: str) -> bool:
        return any(n == target or n.startswith(target + ".")
                   for n in _imports(ROOT / "analysis" / f"{module}.py"))
    assert not uses("systolic", "sramsim.analysis.energy")
    assert not uses("accesses", "sramsim.analysis.energy")
    assert not uses("accesses", "sramsim.analysis.systolic")


def test_fusion_generators_are_registered_addons():
    from fusion import generators
    from sramsim.analysis import addons
    assert addons.names() == sorted(generators.NAMES)
    g = addons.build("ConvS", 3)
    ref = generators.build("ConvS", 3)
    assert type(g) is type(ref) and generators.weight_count(g) == generators.weight_count(ref)
    with pytest.raises(sramsim.errors.InputError, match="no add-on of that name"):
        addons.build("Nope", 3)
