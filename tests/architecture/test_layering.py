"""The package's import rules, checked on the source: imports run one way.

saes/ and adapters/ sit at the bottom; models import neither circuits nor training; training and
circuits never import each other; inference (adapters, circuits) never imports training. A
violation names the module and the import that breaks the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gba_lens

PACKAGE_ROOT = Path(gba_lens.__file__).parent
MAX_MODULE_LINES = 450

# sub-package -> sub-packages of gba_lens it must never import (directly or in a function body)
FORBIDDEN: dict[str, set[str]] = {
    "saes": {"adapters", "circuits", "training", "models", "tasks", "data", "experiments", "cli", "dashboard"},
    "adapters": {"circuits", "training", "models", "tasks", "experiments", "cli", "dashboard"},
    "data": {"circuits", "training", "models", "adapters", "experiments", "cli", "dashboard"},
    "tasks": {"circuits", "training", "adapters", "experiments", "cli", "dashboard"},
    "models": {"circuits", "training", "experiments", "cli", "dashboard"},
    "circuits": {"training", "experiments", "cli", "dashboard"},
    "training": {"circuits", "experiments", "cli", "dashboard"},
    "synthetic": {"circuits", "experiments", "cli", "dashboard"},
    "dashboard": {"training", "experiments", "cli"},
}


# Old import paths kept for one release: pure re-exports of the module's new home, which may sit
# in a higher layer. Nothing else is exempt.
DEPRECATED_SHIMS = {"synthetic/experiments.py"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE_ROOT.rglob("*.py") if "assets" not in p.parts)


def _gba_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``gba_lens.<sub>`` module this file imports, absolute or relative, with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("gba_lens", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("gba_lens")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("gba_lens"):
                found.append((node.lineno, name))
    return found


def _subpackage(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE_ROOT).parts
    return parts[0] if len(parts) > 1 else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_imports_run_one_way(path: Path) -> None:
    layer = _subpackage(path)
    if layer not in FORBIDDEN or str(path.relative_to(PACKAGE_ROOT)) in DEPRECATED_SHIMS:
        return
    bad = [
        f"line {line}: imports {name}"
        for line, name in _gba_imports(path)
        if len(name.split(".")) > 1 and name.split(".")[1] in FORBIDDEN[layer]
    ]
    assert not bad, f"gba_lens/{path.relative_to(PACKAGE_ROOT)} ({layer}/) breaks the import rules: " + "; ".join(bad)


def test_the_rule_checker_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    (tmp_path / "circuits").mkdir()
    module = tmp_path / "circuits" / "probe.py"
    module.write_text("from ..training import train\n\ndef f():\n    import gba_lens.training.trainer\n")
    globals()["PACKAGE_ROOT"], saved = tmp_path, PACKAGE_ROOT
    try:
        names = [name for _, name in _gba_imports(module)]
        with pytest.raises(AssertionError, match="circuits/probe.py"):
            test_imports_run_one_way(module)
    finally:
        globals()["PACKAGE_ROOT"] = saved
    assert names == ["gba_lens.training", "gba_lens.training.trainer"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_no_module_is_too_long(path: Path) -> None:
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_MODULE_LINES, (
        f"gba_lens/{path.relative_to(PACKAGE_ROOT)} has {n_lines} lines (> {MAX_MODULE_LINES}): split it by concern"
    )


# The development machine's reference folder next to the checkout, which is not part of the
# repository. Spelled from its parts so that this test does not itself refer to it.
OUTSIDE_FOLDER = "/".join(("..", "shared"))
OUTSIDE_PATHS = (OUTSIDE_FOLDER, "/".join(("shared", "reference")))


def test_nothing_refers_outside_the_repository() -> None:
    repo = PACKAGE_ROOT.parent
    offenders = []
    for path in [*PACKAGE_ROOT.rglob("*.py"), *repo.glob("*.md"), *(repo / "docs").rglob("*.md"),
                 *(repo / "tutorials").glob("*.ipynb")]:
        text = path.read_text(errors="replace")
        if any(outside in text for outside in OUTSIDE_PATHS):
            offenders.append(str(path.relative_to(repo)))
    assert not offenders, f"files refer to {OUTSIDE_FOLDER}, which is not part of the repository: {offenders}"
