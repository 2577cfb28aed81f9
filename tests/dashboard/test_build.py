"""build(): the site's files and data, bad input, show(), W&B logging offline."""

import json
from pathlib import Path

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from gba_lens.adapters import UnknownHookNameError
from gba_lens.dashboard import build, bundle_html, show
from gba_lens.dashboard.logits import logit_effects, nearest_features
from gba_lens.dashboard.wandb_log import log_dashboard_to_wandb

HOOK = "blocks.0.hook_resid_post"


def _data_of(page: Path) -> dict:
    text = page.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    return json.loads(text[start : text.index("</script>", start)])


@pytest.fixture()
def built(tiny_model, tiny_sae, tiny_tokens, tmp_path):
    return build(tiny_sae, tiny_model, HOOK, tiny_tokens, tmp_path / "dash", batch_size=4, exclude_tokens=(), progress=False)


def test_site_files_and_data(built, tiny_sae):
    out = built.out_dir
    assert built.index_path == out / "index.html"
    index = _data_of(out / "index.html")
    assert index["kind"] == "index" and len(index["index"]) == tiny_sae.cfg.d_sae
    alive = [r["id"] for r in index["index"] if not r["dead"]]
    assert alive and sorted(built.pages) == alive
    page = _data_of(out / f"feature_{alive[0]:05d}.html")["feature"]
    assert page["id"] == alive[0] and page["top"] and len(page["hist"]["counts"]) == 64
    first = page["top"][0]
    assert first["a"][first["at"]] == pytest.approx(page["max"], rel=1e-2)  # the max token is marked
    assert page["group"] is None and index["meta"]["gba"] is None  # a plain SAE: no GBA columns
    assert "<script src" not in (out / "index.html").read_text()  # nothing loaded from elsewhere
    assert "http://" not in (out / "index.html").read_text().replace("http://www.w3.org/2000/svg", "")


def test_sae_directory_and_feature_subset(tiny_model, tiny_sae, tiny_tokens, tmp_path):
    tiny_sae.save_model(str(tmp_path / "sae"))
    result = build(tmp_path / "sae", tiny_model, HOOK, tiny_tokens, tmp_path / "d", features=[3, 1], progress=False)
    assert sorted(result.pages) == [1, 3]
    assert sorted(p.name for p in result.out_dir.glob("feature_*.html")) == ["feature_00001.html", "feature_00003.html"]


def test_errors(tiny_model, tiny_sae, tiny_tokens, tmp_path):
    with pytest.raises(UnknownHookNameError, match="Close matches"):
        build(tiny_sae, tiny_model, "blocks.0.hook_resid_pots", tiny_tokens, tmp_path, progress=False)
    wide = StandardSAE(StandardSAEConfig(d_in=17, d_sae=8))
    with pytest.raises(ValueError, match="d_in=17 does not match hook"):
        build(wide, tiny_model, HOOK, tiny_tokens, tmp_path, progress=False)
    with pytest.raises(ValueError, match="dataset is empty"):
        build(tiny_sae, tiny_model, HOOK, torch.zeros(0, 12, dtype=torch.long), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"out of range for d_sae=24: \[24, -1\]"):
        build(tiny_sae, tiny_model, HOOK, tiny_tokens, tmp_path, features=[0, 24, -1], progress=False)
    with pytest.raises(FileNotFoundError, match="no cfg.json"):
        build(tmp_path, tiny_model, HOOK, tiny_tokens, tmp_path / "x", progress=False)


def test_show_and_bundle(built, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    handle = show(built, feature=built.features[0])
    assert shown == [handle] and "<iframe" in handle.data and "srcdoc=" in handle.data
    doc = bundle_html(built.out_dir, max_features=2)  # from the directory alone
    data = json.loads(doc[doc.index('id="dashboard-data">') + 20 : doc.index("</script>")])
    assert data["kind"] == "bundle" and len(data["features"]) == 2


def test_logits_and_nearest_chunked(tiny_model, tiny_sae):
    whole = logit_effects(tiny_model, HOOK, tiny_sae, k=3, chunk=1024)
    chunked = logit_effects(tiny_model, HOOK, tiny_sae, k=3, chunk=5)
    full = tiny_sae.W_dec.detach() @ tiny_model.W_U.detach()
    assert torch.equal(whole.top_ids, chunked.top_ids) and torch.equal(whole.top_ids, full.topk(3).indices)
    ids, sims = nearest_features(tiny_sae.W_dec, k=2, chunk=7)
    unit = torch.nn.functional.normalize(tiny_sae.W_dec.detach(), dim=1)
    cos = unit @ unit.T
    cos.fill_diagonal_(-2)
    assert torch.equal(ids, cos.topk(2).indices)
    torch.testing.assert_close(sims, cos.topk(2).values)


def test_wandb_artifact_offline(built, tmp_path, monkeypatch):
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logged = []
    original = Run.log_artifact

    def spy(self, artifact, *args, **kwargs):
        logged.append((artifact.type, sorted(artifact.manifest.entries)))
        return original(self, artifact, *args, **kwargs)

    monkeypatch.setattr(Run, "log_artifact", spy)
    assert log_dashboard_to_wandb(built, "gba-dashboard-test", run_name="dash")
    assert len(logged) == 1
    kind, files = logged[0]
    assert kind == "dashboard" and "index.html" in files and "dashboard.json" in files
    assert len([f for f in files if f.startswith("feature_")]) == len(built.pages)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    html = list((runs[0] / "files" / "media" / "html").glob("*.html"))
    assert html and "dashboard-data" in html[0].read_text()  # the wandb.Html panel


def test_wandb_failure_does_not_raise(built, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb.Artifact, "add_file", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.warns(UserWarning, match="boom"):
        assert not log_dashboard_to_wandb(built, "gba-dashboard-test")


@pytest.mark.parametrize("arch", ["standard", "topk", "gated", "jumprelu"])
def test_any_saelens_architecture_from_disk(arch, tiny_model, tiny_tokens, tmp_path):
    import sae_lens

    cls, cfg_cls = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
        "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig),
        "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig),
    }[arch]
    torch.manual_seed(3)
    sae = cls(cfg_cls(d_in=16, d_sae=12, **({"k": 3} if arch == "topk" else {})))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    sae.save_model(str(tmp_path / "sae"))
    result = build(tmp_path / "sae", tiny_model, HOOK, tiny_tokens, tmp_path / "d", exclude_tokens=(), progress=False)
    assert result.meta["sae"]["architecture"] == arch
    assert result.meta["summary"]["alive"] > 0 and result.pages
    if arch == "topk":  # exactly k features fire per token
        assert int(result.stats.fire_count.sum()) == 3 * tiny_tokens.numel()


def test_an_attached_sae_is_read_where_it_is_spliced(tmp_path):
    """``build(attachment, ...)``: the SAE already spliced in is used as is (no second splice),
    with the same statistics as building from the bare SAE; the attachment stays in place."""
    import gba_lens
    from gba_lens.dashboard import build
    from gba_lens.models.stdlib_lm import load_stdlib_lm
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    model = load_stdlib_lm()
    hook = "blocks.1.hook_resid_pre"
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=model.cfg.d_model, d_sae=32, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.2)
    tokens = torch.randint(0, model.cfg.d_vocab, (8, 32), generator=torch.Generator().manual_seed(1))
    bare = build(sae, model, hook, tokens, tmp_path / "bare", progress=False, n_nearest=0)
    with gba_lens.attach(model, {hook: sae}, error_term=True) as att:
        attached = build(att, model, None, tokens, tmp_path / "att", progress=False, n_nearest=0)
        assert att.attached
        with pytest.raises(ValueError, match="no SAE at"):
            build(att, model, "blocks.0.hook_resid_pre", tokens, tmp_path / "x", progress=False)
    assert torch.equal(bare.stats.fire_count, attached.stats.fire_count) and bare.stats.fire_count.sum() > 0
    assert bare.pages.keys() == attached.pages.keys()


def test_a_bridge_model_is_collected_and_left_as_it_was(tmp_path):
    """The pass ends early by raising out of the forward; on a TransformerBridge the hooks are
    removed and the model computes exactly what it did before."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from transformer_lens import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    from gba_lens.dashboard import build

    model = TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=64, d_head=16, n_layers=2, n_ctx=32, n_heads=4, d_vocab=100, act_fn="gelu", seed=0))
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=32))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
    tokens = torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    before = model(tokens)
    result = build(sae, model, "blocks.1.hook_resid_pre", tokens, tmp_path, progress=False, n_nearest=0, n_logits=0)
    assert int(result.stats.fire_count.sum()) > 0
    assert sum(len(hp.fwd_hooks) for hp in model.hook_dict.values()) == 0
    assert torch.equal(model(tokens), before)


def test_default_tokens_are_spread_over_the_val_split():
    from types import SimpleNamespace

    from gba_lens.dashboard.sources import load_dashboard_tokens
    from gba_lens.models.stdlib_lm import load_stdlib_tokenizer, stdlib_token_dataset

    tokenizer = load_stdlib_tokenizer()
    rows = load_dashboard_tokens(None, SimpleNamespace(tokenizer=tokenizer), 4 * 32, 32)
    every = stdlib_token_dataset(tokenizer, 32, "val")["tokens"]
    assert rows["tokens"] == [every[i * len(every) // 4] for i in range(4)]  # not one file's rows
