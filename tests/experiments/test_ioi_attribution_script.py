"""``scripts/ioi_attribution.py``: the IOI attribution check per SAE seed and GBA setting."""

import json
import runpy
from pathlib import Path

import pytest

from gba_lens.experiments.ioi_attribution import HOOKS, STEPS, WIDTH

SCRIPT = Path(__file__).parents[2] / "scripts" / "ioi_attribution.py"


def _run(capsys, *args: str) -> list[dict]:
    main = runpy.run_path(str(SCRIPT))["main"]
    main(list(args))
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_the_script_reads_each_seed_and_passes_the_gba_settings_on(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    steps = STEPS // 5  # the script's plumbing, not its figures: a fifth of the budget
    random_starts = _run(capsys, "--seeds", "0", "1", "--gba", "encoder_init=random", "--steps", str(steps))
    data_starts = _run(capsys, "--seeds", "0", "--steps", str(steps))  # GBA's defaults
    assert [line["seed"] for line in random_starts] == [0, 1]
    assert random_starts[0]["gba"] == {"encoder_init": "random"} and data_starts[0]["steps"] == steps
    for line in random_starts + data_starts:
        assert -1 <= line["spearman"] <= 1
        for hook in HOOKS:
            reading = line[hook]
            assert reading["top"] < 0 and reading["random"] < 0  # ablating features lowers the logit difference
            assert reading["ratio"] == pytest.approx(reading["top"] / reading["random"], abs=0.01)
            assert 0 < reading["l0"] < WIDTH
            # the ten features exact ablation ranks first cost at least what AtP's ten do
            assert reading["exact_top"] <= reading["top"] + 1e-3
            assert reading["atp_share"] == pytest.approx(reading["top"] / reading["exact_top"], abs=0.01)
    # other seeds and other settings train other SAEs
    assert random_starts[0][HOOKS[0]] != random_starts[1][HOOKS[0]]
    assert random_starts[0][HOOKS[0]] != data_starts[0][HOOKS[0]]


def test_the_script_refuses_a_budget_under_one_step(capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    with pytest.raises(SystemExit):
        main(["--steps", "0"])
    assert "--steps must be at least 1, got 0" in capsys.readouterr().err
