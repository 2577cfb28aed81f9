"""Layering of the circuit utilities (AST walk of the imports, nothing is imported):

circuits never reach training code; tasks reach no other gba_lens package; models/ioi_model
reaches neither circuits nor training; plotting imports no other circuit module (no circle with
attribution).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module_path(module: str) -> Path | None:
    for path in (ROOT / (module.replace(".", "/") + ".py"), ROOT / module.replace(".", "/") / "__init__.py"):
        if path.exists():
            return path
    return None


def _direct_imports(module: str) -> set[str]:
    """gba_lens modules imported by ``module`` (every prefix of a dotted name, as Python does)."""
    path = _module_path(module)
    if path is None:
        return set()
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("gba_lens"):
                parts = name.split(".")
                out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _reachable(package: str) -> set[str]:
    """Every gba_lens module reachable by imports from the modules of ``package``.

    The top-level ``gba_lens/__init__.py`` (run by any import, whatever it re-exports) is not
    followed: the question is what the package's own code depends on.
    """
    folder = ROOT / package.replace(".", "/")
    todo = [f"{package}.{p.stem}".replace(".__init__", "") for p in folder.glob("*.py")] if folder.is_dir() else [package]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if module != "gba_lens":
                todo.extend(_direct_imports(module))
    return seen


def test_circuits_never_imports_training_code():
    seen = _reachable("gba_lens.circuits")
    assert not [m for m in seen if m.startswith("gba_lens.training")]
    assert "gba_lens.adapters.splice" in seen and "gba_lens.circuits.ioi" in seen and "gba_lens.tasks.ioi" in seen


def test_tasks_import_no_other_gba_lens_package():
    seen = _reachable("gba_lens.tasks")
    assert {m for m in seen if m != "gba_lens" and not m.startswith("gba_lens.tasks")} == set()


def test_ioi_model_imports_neither_circuits_nor_training():
    seen = _reachable("gba_lens.models.ioi_model")
    assert not [m for m in seen if m.startswith(("gba_lens.circuits", "gba_lens.training"))]
    assert "gba_lens.tasks.ioi" in seen


def test_plotting_imports_no_circuit_module():
    assert not [m for m in _direct_imports("gba_lens.circuits.plotting") if m.startswith("gba_lens.circuits.")]


def test_old_core_module_still_exports_its_names():
    import gba_lens.circuits._core as core
    from gba_lens.circuits import statistics

    assert core.spearman is statistics.spearman
    assert all(hasattr(core, name) for name in core.__all__)
