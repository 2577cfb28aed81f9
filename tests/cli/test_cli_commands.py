"""The ``gba-lens`` commands: recover (paper toy, zipf), train-activations, the parser itself."""

import json

import pytest
import torch
from sae_lens import SAE

from gba_lens import cli
from gba_lens.saes import decoder_refit
from gba_lens.training.data import load_activations


def test_recover_command_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "rec"
    code = cli.main(["recover", "--preset", "paper-toy", "--samples", "10240", "--width", "64",
                     "--seeds", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| GBA, range covers f (0.1 … 0.03) |" in printed and "paper τ=0.9" in printed
    rows = json.loads((out / "paper_toy.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["TopK K=20", "TopK K=30", "TopK K=50", "GBA, range covers f (0.1 … 0.03)",
                                           "GBA, range misses f (0.01 … 1e-4)", "GBA defaults (f not given)"]
    assert all(0.0 <= r["frr_08"] <= 1.0 for r in rows)
    assert (out / "paper_toy_frr.png").stat().st_size > 1000


def test_recover_zipf_command_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "zipf"
    code = cli.main(["recover", "--preset", "zipf", "--quick", "--samples", "4096", "--seeds", "0",
                     "--workers", "1", "--out", str(out)])
    assert code == 0
    assert "| A: 256 feats, d 32, width 256 |" in capsys.readouterr().out
    (row,) = json.loads((out / "zipf.json").read_text())["rows"]
    assert all(0.0 <= row[k] <= 1.0 for k in ("gba_mcc", "gba_low_mcc", "l1_mcc", "btk_mcc"))
    assert row["l1_best"].startswith("L1 coef")
    assert (out / "zipf_mcc.png").stat().st_size > 1000


def test_train_activations_command(tmp_path, capsys, activations_file, monkeypatch):
    path, acts = activations_file
    assert torch.equal(load_activations(path), acts)
    errors, weights = [], decoder_refit.row_weights  # the error the decoder refit lowers

    def recording(scaled, error):
        errors.append(error)
        return weights(scaled, error)

    monkeypatch.setattr(decoder_refit, "row_weights", recording)
    code = cli.main(["train-activations", "--activations", str(path), "--d_sae", "48", "--n_groups", "4",
                     "--batch_size", "256", "--epochs", "2", "--out", str(tmp_path / "run"), "--checkpoint_every", "8"])
    assert code == 0
    out = capsys.readouterr().out
    assert "NMSE" in out and "group  target" in out
    sae = SAE.load_from_disk(tmp_path / "run" / "sae")
    assert sae.cfg.d_sae == 48 and sae.cfg.architecture() == "jumprelu"
    # the file's hook (its metadata: a residual stream) is the SAE's, and its refit lowers the relative error
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
    assert errors and set(errors) == {"relative"}


def test_train_activations_passes_a_requested_l0_to_the_sae(tmp_path, capsys, activations_file):
    path, _ = activations_file
    code = cli.main(["train-activations", "--activations", str(path), "--d-sae", "48", "--n-groups", "4",
                     "--batch-size", "256", "--epochs", "2", "--target-l0", "3", "--out", str(tmp_path / "run")])
    assert code == 0
    details = SAE.load_from_disk(tmp_path / "run" / "sae").cfg.metadata.training_architecture_details
    assert details["target_l0"] == 3.0
    capsys.readouterr()
    for bad in ("0", "49"):  # not > 0, more than d_sae: refused before anything is written
        code = cli.main(["train-activations", "--activations", str(path), "--d-sae", "48", "--target-l0", bad,
                         "--out", str(tmp_path / f"bad{bad}")])
        assert code != 0
        assert "target_l0 must be > 0" in capsys.readouterr().err
        assert not (tmp_path / f"bad{bad}").exists()


def test_load_activations_rejects_bad_files(tmp_path):
    bad = tmp_path / "acts.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_activations(bad)
    with pytest.raises(ValueError, match="safetensors file or a SAELens cache"):
        pickle_like = tmp_path / "acts.pt"
        pickle_like.write_bytes(b"\x80\x04")
        load_activations(pickle_like)
    with pytest.raises(FileNotFoundError):
        load_activations(tmp_path / "missing.safetensors")


def test_every_registered_command_is_a_subcommand_and_old_paths_still_import():
    """COMMANDS is the one registration point; the pre-package module paths keep working."""
    import gba_lens.__main__  # noqa: F401  (python -m gba_lens)
    from gba_lens import lm_cli
    from gba_lens.synthetic import experiments

    names = [c.name for c in cli.COMMANDS]
    assert names == ["recover", "compare", "train-activations", "train", "cache", "dashboard"]
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == names
    assert lm_cli.cmd_train is cli.lm.cmd_train
    assert experiments.run_paper_toy is __import__("gba_lens.experiments", fromlist=["x"]).run_paper_toy
