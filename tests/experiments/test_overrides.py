"""``set_constants``: the scripts' ``--set MODULE.NAME=VALUE`` for studies of the rule's constants."""

import pytest

from gba_lens.experiments.overrides import set_constants
from gba_lens.saes import target_adaptation, valley_thresholds


def test_sets_constants_of_the_rule_with_their_types(monkeypatch):
    monkeypatch.setattr(target_adaptation, "MIN_VALLEY_NEURONS", target_adaptation.MIN_VALLEY_NEURONS)
    monkeypatch.setattr(valley_thresholds, "PROMINENCE", valley_thresholds.PROMINENCE)
    done = set_constants(["target_adaptation.MIN_VALLEY_NEURONS=3", "valley_thresholds.PROMINENCE=1.15"])
    assert done == {"target_adaptation.MIN_VALLEY_NEURONS": 3, "valley_thresholds.PROMINENCE": 1.15}
    assert target_adaptation.MIN_VALLEY_NEURONS == 3 and type(target_adaptation.MIN_VALLEY_NEURONS) is int
    assert valley_thresholds.PROMINENCE == 1.15


@pytest.mark.parametrize(("text", "message"), [
    ("PROMINENCE=1", "expected MODULE.NAME=VALUE"),
    ("valley_thresholds.PROMINENCE", "expected MODULE.NAME=VALUE"),
    ("gba.PROMINENCE=1", "module must be one of"),
    ("valley_thresholds.NO_SUCH=1", "no int or float constant NO_SUCH"),
    ("valley_thresholds.find_valleys=1", "no int or float constant find_valleys"),
    ("target_adaptation.MIN_VALLEY_NEURONS=2.5", "MIN_VALLEY_NEURONS is int, got '2.5'"),
])
def test_refuses_what_it_cannot_set_exactly_and_sets_nothing(text, message, monkeypatch):
    monkeypatch.setattr(valley_thresholds, "PROMINENCE", valley_thresholds.PROMINENCE)
    before = valley_thresholds.PROMINENCE
    with pytest.raises(ValueError, match=message):
        set_constants(["valley_thresholds.PROMINENCE=3.0", text])
    assert valley_thresholds.PROMINENCE == before  # the valid first assignment was not applied either


def test_gba_settings_take_the_config_fields_types():
    from gba_lens.experiments.overrides import gba_settings

    assert gba_settings(["gamma_minus=0.03", "update_interval=8"]) == {"gamma_minus": 0.03, "update_interval": 8}
    assert type(gba_settings(["update_interval=8"])["update_interval"]) is int
    assert gba_settings(["encoder_init=data", "gating=relu"]) == {"encoder_init": "data", "gating": "relu"}


@pytest.mark.parametrize(("text", "message"), [
    ("gamma_minus", "expected NAME=VALUE"),
    ("no_such_setting=1", "expected NAME=VALUE with NAME one of"),
    ("update_interval=1.5", "update_interval is int, got '1.5'"),
    ("gamma_minus=fast", "gamma_minus is float"),
    ("encoder_init=kmeans", r"encoder_init must be one of \('random', 'data'\)"),
])
def test_gba_settings_refuse_what_is_not_a_setting_of_its_type(text, message):
    from gba_lens.experiments.overrides import gba_settings

    with pytest.raises(ValueError, match=message):
        gba_settings([text])


def test_no_module_binds_a_studied_constant_by_name():
    """``--set`` rebinds the constant in its module: a ``from MODULE import NAME`` elsewhere would keep
    the old value and the study would silently change nothing."""
    import re
    from pathlib import Path

    import gba_lens
    from gba_lens.experiments.overrides import STUDIED_MODULES

    studied = "|".join(STUDIED_MODULES)
    by_name = re.compile(rf"from gba_lens\.saes\.({studied}) import ([^\n(]*(?:\([^)]*\))?)")
    found = []
    for path in Path(gba_lens.__file__).parent.rglob("*.py"):
        for module, names in by_name.findall(path.read_text()):
            found += [f"{path.name}: {module}.{name}" for name in re.findall(r"\b[A-Z][A-Z0-9_]*\b", names)]
    assert found == []


def test_no_studied_constant_is_a_default_argument():
    """A default argument is bound when its function is defined: ``--set`` would not reach it (read
    the module's constant at the call instead, e.g. with a None default)."""
    import ast
    import importlib
    import inspect

    from gba_lens.experiments.overrides import STUDIED_MODULES

    found = []
    for name in STUDIED_MODULES:
        module = importlib.import_module(f"gba_lens.saes.{name}")
        constants = {key for key, value in vars(module).items() if key.isupper() and type(value) in (int, float)}
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
                found += [f"{name}.{node.name}: {d.id}" for d in defaults if isinstance(d, ast.Name) and d.id in constants]
    assert found == []
