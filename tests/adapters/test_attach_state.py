"""An Attachment stays truthful when its hooks are removed behind its back (reset_hooks)."""

from __future__ import annotations

import pytest
import torch

from gba_lens import attach
from gba_lens.circuits import ablate_features, logit_diff_metric

from adapter_builders import KINDS, get_model, logits, make_saes, snapshot

HOOKS_USED = ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out"]


def _saes():
    saes = make_saes("standard")
    return {h: saes[h] for h in HOOKS_USED}


@pytest.mark.parametrize("kind", KINDS)
def test_reset_hooks_including_permanent_is_noticed(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    before = snapshot(model)
    clean = logits(model, tokens)
    att = attach(model, _saes(), error_term=False)
    assert att.attached and not torch.allclose(logits(model, tokens), clean)
    model.reset_hooks(including_permanent=True)
    with pytest.warns(UserWarning, match="removed by something other than Attachment.detach"):
        assert att.attached is False
    assert sorted(att.hooks_removed_externally) == sorted(HOOKS_USED)
    assert "removed externally" in repr(att)
    assert snapshot(model) == before  # the rest was detached: hook_dict and module tree restored
    torch.testing.assert_close(logits(model, tokens), clean, atol=0, rtol=0)
    att.detach()  # still safe
    again = attach(model, _saes(), error_term=True)  # the SAEs can be attached again
    again.detach()
    assert snapshot(model) == before


@pytest.mark.parametrize("kind", ["hooked", "bridge_native"])
def test_plain_reset_hooks_keeps_the_attachment(kind: str, tokens: torch.Tensor) -> None:
    model = get_model(kind)
    with attach(model, _saes(), error_term=False) as att:
        spliced = logits(model, tokens)
        model.reset_hooks()  # removes non-permanent hooks only
        assert att.attached and att.hooks_removed_externally == []
        torch.testing.assert_close(logits(model, tokens), spliced, atol=0, rtol=0)


def test_circuits_refuse_an_attachment_whose_hooks_were_removed(tokens: torch.Tensor) -> None:
    model = get_model("hooked")
    with attach(model, _saes(), error_term=True) as att:
        model.reset_hooks(including_permanent=True)
        with pytest.warns(UserWarning, match="removed by something"):
            with pytest.raises(ValueError, match="removed externally"):
                ablate_features(att, tokens, {HOOKS_USED[0]: [1]}, logit_diff_metric([1, 2]))
