"""``refit_error``: the decoder refit lowering each row's squared error over its squared norm (``relative``)
instead of the rows' squared error (``absolute``); unset, relative on a residual-stream hook only.

With row weights D = diag(1 / |s x|^2) the decoder is the weighted ridge solution
(Z^T D Z + lambda I) W = Z^T D (s x - b_pre) + lambda W_trained, the sparse and dense sums agree with the
weights too, the reallocation's worths are each row's times its weight, and each error's refit lowers its
own error more than the other's does."""

from __future__ import annotations

import pytest
import torch

from gba_lens.saes import decoder_refit, threshold_reallocation
from gba_lens.saes.decoder_refit import RIDGE, refit_decoder
from gba_lens.saes.gba import GBATrainingSAE, GBATrainingSAEConfig
from gba_lens.saes.gba_options import GBAOptions
from gba_lens.saes.refit_error import resolved_refit_error


def _sae(refit_error: str | None = "relative", hook: str | None = None) -> tuple[GBATrainingSAE, torch.Tensor]:
    """A GBA SAE with about a third of its latents firing, on inputs whose norms span a factor of 30."""
    torch.manual_seed(0)
    sae = GBATrainingSAE(GBATrainingSAEConfig(d_in=8, d_sae=24, n_groups=2, refit_error=refit_error))
    sae.cfg.metadata.hook_name = hook
    x = (torch.relu(torch.randn(600, 8)) + 0.2) * torch.logspace(-0.7, 0.8, 600)[:, None]
    sae.initialize_from_batch(x)
    with torch.no_grad():
        sae.b_enc.uniform_(-0.3, -0.05)
        sae.b_dec.normal_(0, 0.05)
    return sae, x


def _codes_and_targets(sae: GBATrainingSAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes Z, targets s x - b_pre and each row's weight 1 / |s x|^2, written out (float64)."""
    sae.eval()
    with torch.no_grad():
        z = sae.encode(x).double()
    sae.train()
    scaled = x.double() * float(sae.input_scale)
    return z, scaled - sae.b_dec.detach().double(), 1 / scaled.pow(2).sum(1)


def _relative_error(w: torch.Tensor, z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> float:
    return float(((target - z @ w.double()).pow(2).sum(1) * weight).sum() / (target.pow(2).sum(1) * weight).sum())


def _absolute_error(w: torch.Tensor, z: torch.Tensor, target: torch.Tensor) -> float:
    return float((target - z @ w.double()).pow(2).sum() / target.pow(2).sum())


def test_the_relative_refit_is_the_weighted_ridge_least_squares_decoder(monkeypatch):
    monkeypatch.setattr(decoder_refit, "OFFSET_STEPS", 0)  # the decoder alone, on the trained thresholds
    monkeypatch.setattr(decoder_refit, "REALLOCATIONS", 0)
    sae, x = _sae("relative")
    z, target, weight = _codes_and_targets(sae, x)
    trained = sae.W_dec.detach().clone()
    gram = z.T @ (weight[:, None] * z)
    ridge = RIDGE * gram.diagonal().mean()
    expected = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype),
                                  z.T @ (weight[:, None] * target) + ridge * trained.double())
    result = refit_decoder(sae, x, batch_size=128)  # several chunks
    assert torch.allclose(sae.W_dec.double(), expected, atol=1e-4)
    assert result["error_before"] == pytest.approx(_relative_error(trained, z, target, weight), rel=1e-3)
    assert result["error_after"] == pytest.approx(_relative_error(expected, z, target, weight), rel=1e-3)
    relative = sae.W_dec.detach().clone()
    absolute_sae, _ = _sae("absolute")
    refit_decoder(absolute_sae, x, batch_size=128)
    absolute = absolute_sae.W_dec.detach()
    # each lowers its own error below what the other's decoder leaves, and the two differ
    assert _relative_error(relative, z, target, weight) < 0.98 * _relative_error(absolute, z, target, weight)
    assert _absolute_error(absolute, z, target) < 0.98 * _absolute_error(relative, z, target)


def test_weighted_sums_of_each_row_s_active_latents_are_the_dense_weighted_sums(monkeypatch):
    torch.manual_seed(1)
    gates = (torch.rand(200, 64) < torch.rand(200, 1) * 0.2).double()
    codes = (torch.rand(200, 64) - 0.1) * gates
    targets = torch.randn(200, 16)
    weights = torch.rand(200) * 10 + 0.01
    sums = {}
    for path in ("pairs", "sparse", "dense"):  # every chunk on one path
        monkeypatch.setattr(decoder_refit, "sums_path", lambda per_row, d_sae, path=path: path)
        statistics = decoder_refit.RefitStatistics(64, 16, "cpu", offsets=True)
        statistics.add(codes[:120], targets[:120], gates[:120], weights[:120])
        statistics.add(codes[120:], targets[120:], gates[120:], weights[120:])
        sums[path] = statistics
    d, t = weights.double()[:, None], targets.double()
    expected = {"gram": codes.T @ (d * codes), "cross": codes.T @ (d * t), "gate_gram": gates.T @ (d * gates),
                "gate_code": gates.T @ (d * codes), "gate_cross": gates.T @ (d * t)}
    for path, statistics in sums.items():
        for name, value in expected.items():
            assert torch.allclose(getattr(statistics, name), value, atol=1e-9), (path, name)
        assert float(statistics.energy) == pytest.approx(float((d * t.pow(2)).sum())), path


def test_the_reallocation_weighs_each_row_s_worth(monkeypatch):
    entries = {}

    def recording(add):
        def wrapped(self, latents, ratio, worth):
            entries.setdefault("worth", []).append(worth.clone())
            entries.setdefault("latents", []).append(latents.clone())
            return add(self, latents, ratio, worth)
        return wrapped

    monkeypatch.setattr(threshold_reallocation.CutStatistics, "add",
                        recording(threshold_reallocation.CutStatistics.add))
    rows_of = []
    candidates = threshold_reallocation.candidate_entries
    monkeypatch.setattr(threshold_reallocation, "candidate_entries",
                        lambda u, t: rows_of.append(candidates(u, t)[0]) or candidates(u, t))
    runs = {}
    for error in ("absolute", "relative"):
        entries.clear(), rows_of.clear()
        sae, x = _sae(error)
        threshold_reallocation.reallocate_thresholds(sae, x, batch_size=600)  # one chunk
        runs[error] = (torch.cat(entries["latents"]), torch.cat(entries["worth"]), torch.cat(rows_of))
    (latents, absolute, rows), (same_latents, relative, _) = runs["absolute"], runs["relative"]
    assert torch.equal(latents, same_latents) and len(rows) > 100
    _, _, weight = _codes_and_targets(_sae()[0], x)
    assert torch.allclose(relative.double(), absolute.double() * weight[rows], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("hook", "resolved"), [
    ("blocks.1.hook_resid_pre", "relative"), ("blocks.0.hook_resid_mid", "relative"),
    ("blocks.11.hook_resid_post", "relative"), ("blocks.1.hook_mlp_out", "absolute"),
    ("blocks.0.hook_in", "relative"), ("blocks.2.ln2.hook_in", "relative"), ("blocks.3.hook_out", "relative"),
    ("blocks.0.mlp.hook_out", "absolute"), ("blocks.0.attn.hook_out", "absolute"), ("blocks.0.mlp.hook_in", "absolute"),
    ("blocks.0.hook_attn_out", "absolute"), ("blocks.0.attn.hook_z", "absolute"), (None, "absolute")])
def test_unset_it_is_relative_on_a_residual_stream_hook_only(hook, resolved):
    assert resolved_refit_error(_sae(None, hook)[0]) == resolved
    assert resolved_refit_error(_sae("absolute", hook)[0]) == "absolute"  # a value set is kept
    assert resolved_refit_error(_sae("relative", hook)[0]) == "relative"


def test_a_value_that_is_not_an_error_is_refused():
    with pytest.raises(ValueError, match="refit_error must be one of \\('absolute', 'relative'\\), got 'squared'"):
        GBAOptions(refit_error="squared")  # type: ignore[arg-type]
