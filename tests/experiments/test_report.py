"""Result tables, files and the W&B upload of an experiment."""

import json
from pathlib import Path

import pytest

from gba_lens.experiments.report import log_to_wandb, markdown_table, write_results
from gba_lens.experiments.results import MeanStd, MethodSummary


def _summary(method="GBA", seeds=2, role="gba"):
    m = MeanStd(0.5, 0.1)
    return MethodSummary(method, seeds, frr_08=MeanStd(0.9, 0.01), frr_09=m, mcc=m, f1=m, l0=m,
                         explained_variance=m, dead_fraction=m, true_l0=2.0, seconds=1.0, paper=(1.0, 0.9),
                         role=role, consistency={1.0: 0.2})


def test_typed_rows_write_the_flat_table_and_json(tmp_path):
    row = _summary()
    flat = row.as_row()
    assert list(flat)[:4] == ["method", "seeds", "frr_08", "frr_08_std"]
    assert flat["paper_frr_09"] == 0.9 and flat["consistency_1"] == 0.2 and "role" not in flat
    table = markdown_table([row], [("method", "method"), ("frr_08", "FRR"), ("mcc", "MCC")])
    assert table.splitlines()[-1] == "| GBA | 90.0% ± 1.0 | 0.500 ± 0.100 |"
    write_results(tmp_path, "t", [row], table, {"seeds": 2})
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == [flat]


def test_results_go_to_an_offline_wandb_run(tmp_path, monkeypatch):
    import wandb

    import gba_lens.wandb_run as wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    seen = {}
    real_finish = wandb_run.finish_run

    def finish_and_record():  # where the run wrote to (wandb may keep an earlier test's WANDB_DIR)
        seen["dir"], seen["offline"] = wandb.run.dir, wandb.run.offline
        seen["summary"] = wandb.run.summary.get("table_markdown")
        real_finish()

    monkeypatch.setattr(wandb_run, "finish_run", finish_and_record)
    log_to_wandb("gba-lens-test", "recover-test", "| GBA |", [_summary()], [])
    assert seen["offline"] and seen["summary"] == "| GBA |"
    run_dir = Path(seen["dir"]).parent
    assert run_dir.name.startswith("offline-run-") and list(run_dir.glob("run-*.wandb"))


def test_a_failing_wandb_log_warns_once_and_the_experiment_goes_on(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "Table", broken)  # (wandb.init rebinds wandb.log)
    with pytest.warns(UserWarning, match="no W&B today") as caught:
        log_to_wandb("gba-lens-test", "recover-test", "| GBA |", [_summary()], [])
    assert len([w for w in caught if "no W&B today" in str(w.message)]) == 1
    assert wandb.run is None  # the run was finished


def test_a_log_l0_axis_labels_plain_numbers_at_1_2_5_and_leaves_minor_ticks_unlabelled():
    from gba_lens.experiments.report import log_l0_axis, pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1.6, 7.25, 30.0], [0.5, 0.6, 0.7])
    log_l0_axis(ax)
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.xaxis.get_ticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert shown and set(shown) <= {"1", "2", "5", "10", "20", "50"}, shown
    assert {"2", "5", "10", "20"} <= set(shown) and not minor
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "L0"
