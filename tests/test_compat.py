"""Every non-public SAELens / TransformerLens name gba_lens relies on still exists.

One test per name, so an upgrade that removes or renames one fails with that exact name and its
module (see :mod:`gba_lens.compat`).
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from gba_lens import compat


def _gone(where: str) -> str:
    return f"{where} is gone: gba_lens.compat needs updating"


@pytest.mark.parametrize(("name", "module"), sorted(compat.IMPORTED_NAMES.items()))
def test_imported_name_exists(name: str, module: str) -> None:
    try:
        source = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(_gone(f"module {module} (needed for {name})") + f" ({exc})")
    if not hasattr(source, name):
        pytest.fail(_gone(f"{module}.{name}"))
    assert getattr(compat, name) is getattr(source, name), f"gba_lens.compat.{name} is not {module}.{name}"


@pytest.mark.parametrize("name, module_name", [("sae_trainer_module", "sae_lens.training.sae_trainer"),
                                               ("multi_sae_trainer_module", "sae_lens.training.multi_sae_trainer")])
def test_trainer_modules_are_saelens_modules_with_a_tqdm(name: str, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(_gone(f"module {module_name}") + f" ({exc})")
    assert getattr(compat, name) is module
    assert callable(getattr(module, "tqdm", None)), f"{module_name} no longer draws its bar with its own tqdm"


@pytest.mark.parametrize(
    ("module", "owner", "member"),
    [(p.module, p.owner, p.member) for p in compat.PRIVATE_MEMBERS],
    ids=[f"{p.module}.{p.owner + '.' if p.owner else ''}{p.member}" for p in compat.PRIVATE_MEMBERS],
)
def test_private_member_exists(module: str, owner: str, member: str) -> None:
    where = f"{module}.{owner + '.' if owner else ''}{member}"
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(_gone(f"module {module}") + f" ({exc})")
    if owner:
        if not hasattr(obj, owner):
            pytest.fail(_gone(f"{module}.{owner}"))
        obj = getattr(obj, owner)
    if hasattr(obj, member):
        return
    # An attribute set in __init__ (e.g. TransformerBridge._hook_registry) is not on the class.
    if inspect.isclass(obj) and f"self.{member}" in inspect.getsource(obj):
        return
    pytest.fail(_gone(where))


def test_compat_lists_every_name_it_imports() -> None:
    """The table the tests read covers every library name the module binds."""
    bound = {
        name
        for name, value in vars(compat).items()
        if not name.startswith("__")
        and getattr(value, "__module__", "").split(".")[0] in {"sae_lens", "transformer_lens"}
    }
    missing = sorted(bound - set(compat.IMPORTED_NAMES))
    assert not missing, f"gba_lens.compat binds library names missing from IMPORTED_NAMES: {missing}"
