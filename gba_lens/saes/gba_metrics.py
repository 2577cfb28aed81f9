"""What a GBA SAE logs on a logging step (W&B through SAELens's trainer): its L0, biases and, per
group, firing frequency, target, mean bias and decoder stability; the controllers' own state."""

from __future__ import annotations

from typing import Any

import torch

from gba_lens.compat import TrainStepOutput
from gba_lens.saes.sparse_step import active_latent_index


@torch.no_grad()
def logging_metrics(sae: Any, output: TrainStepOutput) -> dict[str, Any]:
    """The metrics of one logging step of ``sae`` (a ``GBATrainingSAE``)."""
    # NMSE is not recomputed here: it is 1 - SAELens's metrics/explained_variance.
    n_rows = output.feature_acts.numel() // sae.cfg.d_sae
    fired = torch.bincount(active_latent_index(output.feature_acts), minlength=sae.cfg.d_sae).float() / n_rows
    per_group = sae.bias_adaptation.group_frequencies(fired)
    bias_per_group = sae.bias_adaptation.group_means(sae.b_enc.detach())
    metrics: dict[str, Any] = {
        "gba/l0": fired.sum(),  # mean over samples of active latents = sum of firing rates
        "gba/bias_mean": sae.b_enc.mean(),
        "gba/bias_at_min_fraction": (sae.b_enc <= sae.bias_adaptation.bias_min).float().mean(),
    }
    if sae.bias_adaptation.target_search is not None:  # neurons searching above their group's target
        metrics["gba/search_raised_fraction"] = (sae.bias_adaptation.target_search.scale > 1).float().mean()
    worth = sae.bias_adaptation.firing_worth
    if worth is not None:  # firing_worth: the neurons whose targets it scales down, and the reference
        metrics["gba/worth_scaled_fraction"] = (worth.multiplier < 1).float().mean()
        metrics["gba/worth_average"] = worth.average
    idle = sae.bias_adaptation.idle_groups
    if idle is not None:  # idle_groups: how many groups' neurons joined the groups above them (once)
        metrics["gba/idle_groups_moved"] = idle.moved.sum()
    if sae.bias_adaptation.anneal_with_lr:  # the share of its full step the bias rule takes (lr over its peak)
        metrics["gba/rule_rate"] = sae.bias_adaptation.rate
    l0_control = sae.bias_adaptation.l0_control
    if l0_control is not None:  # the L0 controller (target_l0, find_l0): what it measures and its target scale
        metrics["gba/l0_average"] = l0_control.l0_average
        metrics["gba/target_scale"] = l0_control.relative_scale()
    balance = sae.bias_adaptation.coactivation
    if balance is not None and balance.last_ratio is not None:  # find_l0: its last check's ratio
        metrics["gba/coactivation_ratio"] = balance.last_ratio
        if len(balance.last_readings) == 2:  # MINMOD, GATE: the two readings it combined
            metrics["gba/coactivation_check"], metrics["gba/coactivation_own_code"] = balance.last_readings
        if balance.last_gap is not None:  # GATE: the gap it compares with its threshold
            metrics["gba/coactivation_gap"] = balance.last_gap
    # Per group: firing frequency, target and mean bias. A frequency that falls while the bias
    # stays put is the encoder growing selective, not the rule. From the second logging step on,
    # how far the group's decoder directions turned since the last one (decoder_stability.py).
    groups = zip(per_group.tolist(), sae.bias_adaptation.group_targets.tolist(), bias_per_group.tolist())
    for k, (freq, target, bias) in enumerate(groups):
        metrics[f"gba_groups/group_{k}_frequency"] = freq
        metrics[f"gba_groups/group_{k}_target"] = target
        metrics[f"gba_groups/group_{k}_bias"] = bias
    cosine = sae.decoder_stability.cosines(sae.W_dec)
    if cosine is not None:
        stability = sae.bias_adaptation.group_means(cosine, sae.decoder_stability.rows)
        for k, value in enumerate(stability.tolist()):
            metrics[f"gba_groups/group_{k}_decoder_stability"] = value
    return metrics
