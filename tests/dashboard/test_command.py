"""run_dashboard and `gba-lens dashboard`: the offline default and an SAE directory."""

import json

import pytest
import simple_parsing
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from gba_lens.cli.dashboard import dashboard_with_default_sae
from gba_lens.dashboard import DashboardConfig, run_dashboard


def test_default_trains_once_then_reuses_the_sae(tmp_path, capsys):
    cfg = DashboardConfig(out=str(tmp_path), train_tokens=4096, width=32, tokens=2048, device="cpu")
    with pytest.raises(ValueError, match="no --sae given"):
        run_dashboard(cfg)  # the library alone never trains
    index = dashboard_with_default_sae(cfg)
    assert index == tmp_path / "index.html" and (tmp_path / "_sae" / "blocks.1.hook_resid_pre" / "cfg.json").is_file()
    meta = json.loads((tmp_path / "dashboard.json").read_text())["meta"]
    assert meta["model"] == "gba-lens/stdlib-lm" and meta["hook"] == "blocks.1.hook_resid_pre"
    assert len(meta["gba"]["targets"]) == 10  # GBA groups read from the trained SAE's metadata
    assert "training a 32-wide GBA SAE" in capsys.readouterr().out
    dashboard_with_default_sae(cfg)
    assert "training" not in capsys.readouterr().out  # the cached SAE is reused


def test_sae_directory_and_options(tmp_path):
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=128, d_sae=16, metadata=SAEMetadata(hook_name="blocks.0.hook_resid_post")))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.2)
    sae.save_model(str(tmp_path / "sae"))
    parser = simple_parsing.ArgumentParser()
    parser.add_arguments(DashboardConfig, dest="cfg")
    cfg = parser.parse_args(["--sae", str(tmp_path / "sae"), "--out", str(tmp_path / "d"), "--tokens", "1024",
                             "--features", "0", "5", "--device", "cpu"]).cfg
    run_dashboard(cfg)
    assert sorted(p.name for p in (tmp_path / "d").glob("feature_*.html")) == ["feature_00000.html", "feature_00005.html"]
    with pytest.raises(ValueError, match="--model needs --sae"):
        run_dashboard(DashboardConfig(model="gpt2", out=str(tmp_path / "e")))
