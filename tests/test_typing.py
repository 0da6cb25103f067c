"""Every public function is fully typed: each parameter and the return carry an annotation.

Checked on the live objects (inspect), independent of mypy's flags: a public function or method
is one whose own name and whose module path have no leading underscore; the first parameter of a
method (self, cls) needs none. Constructors count (`__init__` is how a public class is called);
their return is None by definition (PEP 484: implied once a parameter is annotated).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import fusion
import sramsim

PACKAGES = (sramsim, fusion)


def public_modules() -> list[ModuleType]:
    out = []
    for package in PACKAGES:
        out.append(package)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            out.append(importlib.import_module(info.name))
    return out


def plain(obj: Any) -> Callable | None:
    """The Python function behind `obj` (numba dispatchers and wrappers unwrapped), or None."""
    obj = getattr(obj, "py_func", obj)
    obj = inspect.unwrap(obj) if callable(obj) else obj
    return obj if inspect.isfunction(obj) else None


def class_functions(cls: type) -> Iterator[tuple[str, Callable, bool]]:
    """(name, function, is_method) for the public functions `cls` itself defines."""
    for name, attr in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        bound = not isinstance(attr, staticmethod)
        if isinstance(attr, property):
            for accessor in (attr.fget, attr.fset):
                if plain(accessor) is not None:
                    yield name, plain(accessor), True
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        function = plain(attr)
        if function is not None and function.__qualname__.startswith(cls.__qualname__ + "."):
            yield name, function, bound


def public_functions() -> dict[str, tuple[Callable, bool]]:
    """qualified name -> (function, is_method) for every public function and method."""
    found: dict[str, tuple[Callable, bool]] = {}
    for module in public_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj):
                for method_name, function, bound in class_functions(obj):
                    found[f"{module.__name__}.{obj.__qualname__}.{method_name}"] = (function,
                                                                                  bound)
            elif plain(obj) is not None:
                found[f"{module.__name__}.{name}"] = (plain(obj), False)
    return found


def missing_annotations(function: Callable, is_method: bool) -> list[str]:
    """The parameters (and 'return') of `function` that carry no annotation."""
    annotations = getattr(function, "__annotations__", {})
    params = list(inspect.signature(function).parameters)
    if is_method and params:
        params = params[1:]
    missing = [p for p in params if p not in annotations]
    if "return" not in annotations and function.__name__ != "__init__":
        missing.append("return")
    return missing


FUNCTIONS = public_functions()


def test_public_surface_is_found():
    """The walk reaches every layer (a broken walk would pass the check below vacuously)."""
    assert len(FUNCTIONS) > 400
    for prefix in ("sramsim.memory.", "sramsim.inject.", "sramsim.nn.", "sramsim.analysis.",
                   "sramsim.commands.", "fusion."):
        assert any(name.startswith(prefix) for name in FUNCTIONS), prefix
    assert "sramsim.inject.mapping.apply_faults" in FUNCTIONS


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_public_function_is_fully_annotated(name):
    function, is_method = FUNCTIONS[name]
    missing = missing_annotations(function, is_method)
    assert not missing, f"{name}: no annotation for {', '.join(missing)}"


def test_check_catches_a_missing_annotation():
    def typed(a: int, *rest: str, flag: bool = False, **extra: float) -> None: ...

    def untyped_return(a: int): ...

    def untyped_param(a, b: int) -> int: ...

    class Holder:
        def __init__(self, x: int): ...

        def method(self, x: int) -> int: ...

        @staticmethod
        def static(x) -> int: ...

    assert missing_annotations(typed, False) == []
    assert missing_annotations(untyped_return, False) == ["return"]
    assert missing_annotations(untyped_param, False) == ["a"]
    assert missing_annotations(Holder.method, True) == []
    assert missing_annotations(Holder.method, False) == ["self"]
    assert missing_annotations(Holder.__init__, True) == []
    found = dict((name, (f, bound)) for name, f, bound in class_functions(Holder))
    assert set(found) == {"__init__", "method", "static"}
    assert missing_annotations(*found["static"]) == ["x"]
