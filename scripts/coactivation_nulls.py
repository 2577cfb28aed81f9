"""find_l0's co-activation ratio read several ways, on GBA SAEs told a multiple of the top-W L0
(docs/experiments/prior_free.md, nineteenth and twentieth steps). One JSON line per model and multiple.

``find_l0`` moves the target scale until its ratio (the mean |cos| between the decoder rows of
latents active on the same input over that of two live latents) is 1. Where the ratio is 1 at the
true L0 it finds it; this script measures, at 0.5, 1 and 2 times the top-W L0 (``target_l0``), the
ratio and what a check could read instead:

* ``every_pair``, ``cut``: the ratio over every pair, and without near-copies (|cos| > 0.5: the
  check since the nineteenth step); ``cut_first``, ``own_code_residual_first``: the check and the
  own code + residual over each row's first ``coactivation.MAX_ACTIVE`` active latents (by index),
  as the trainer reads them (every other reading takes every active latent);
* ``own_code``: the pairs of the SAE's own code with each latent's column shifted to other rows,
  decoded and encoded again (``coactivation.OWN_CODE``); ``own_code_residual``: the same with each
  row's reconstruction error, from another row, added before encoding; ``unshifted_residual``: the
  code not shifted (which latents fire together kept), decoded with another row's error and
  encoded again (twenty-second step);
* ``both_stay``, ``either_stays``: only pairs in which both (either) latents still fire with the
  other's output z_n d_n taken out of the input (a latent pushed over its threshold by another
  active direction is explained away);
* ``refit_supported``: only pairs of latents that a least-squares refit of the row on its active
  latents' decoder rows gives at least half their activation (a latent that fires without its
  feature should get about 0: twenty-third step);
* ``margin_<a>``: only latents whose pre-activation clears the threshold by a fraction a
  (``coactivation.MIN_MARGIN``);
* ``frequency_weighted``, ``magnitude_weighted``: the co-active pairs over the mean |cos| of pairs
  weighted by f_m f_n (the two latents' firing frequencies) or by their mean activations, instead of
  two live latents: the null of latents that fire independently at their own rates;
  ``shifted``: the pairs of the shifted code itself (before decoding), over two live latents: how
  much of the ratio's fall is that weighting (twenty-first step).

``--valley-thresholds`` trains the told-L0 SAEs with valley thresholds and adds, for the pairs of
neurons with a valley on the held-out inputs (V) and without (N), each class's ratio and share of
the co-active pairs (``VV``, ``VN``, ``NN``).

``--truth-shifted`` (models drawn by a SAELens ``SyntheticModel``: A, B, C, sb, cex) reads every
ratio again on held-out inputs built from the true features with each feature's column shifted to
other rows (``truth_shifted:<reading>``): the same features at the same rates, occurring
independently; ``true_cooccurrence``, how often two true features occur together over the
independent rate (1: independent), and ``true_cooccurring_alignment``, how aligned the true
directions of features that occur together are over pairs weighted by their rates (twenty-second step).

``--find-l0`` reads the same ratios on SAEs that found their L0 (``find_l0``, with valley thresholds
if ``--valley-thresholds``; ``--set`` as in prior_free.py) instead of the told ones; where a check
reads two ratios (``coactivation.MINMOD`` or ``GATE``), the gap between them (the check minus the
own code; with ``GATE`` the gate's, over a row's pairs as ``GATE_ACTIVE`` says) is averaged
over each fifth of the run's checks (``gap_by_fifth``), with the share of checks over the gate
(``over_gate_by_fifth``; twenty-third step). ``find_l0`` reads both with the gate by default (``--set
coactivation.GATE=0``: the check alone).

Every ratio but ``every_pair`` leaves near-copies out. ``--pairs`` (models drawn from the paper's
sparse mixture: ``small``, ``toy``) adds what the truth says of the co-active pairs of different
features: the share with both features present and their |cos|, against the rest, and the refit's
coefficient over the activation (median) of latents whose feature is present and absent.

Models: the paper toy, Zipf A / B / C and the synthbench preset as in threshold_signals.py; ``small``,
the paper's small model with more latents than features (48 features in 24 dimensions, 2 per input,
width 128: the library's recovery test); ``cex``, 128 features all frequent (0.05 ... 0.15) and
independent in 64 dimensions, width 128.

    python scripts/coactivation_nulls.py --models small cex toy A B C sb --seed 0
    python scripts/coactivation_nulls.py --models small --multiples 1 --pairs
    python scripts/coactivation_nulls.py --models small toy A B C sb --valley-thresholds --seed 0
    python scripts/coactivation_nulls.py --models A B C sb cex --truth-shifted --seed 0
    python scripts/coactivation_nulls.py --models small sb A toy --find-l0 --valley-thresholds [--set coactivation.GATE=0]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from gba_lens.saes import coactivation
from gba_lens.saes.coactivation import active_slots, shifted_code
from gba_lens.saes.valley_thresholds import ROWS_PER_STEP, ValleyThresholds, find_valleys

sys.path.insert(0, str(Path(__file__).resolve().parent))
import threshold_signals as ts  # noqa: E402  (the models and the training of prior_free.py's figures)

CUT = 0.5
MARGINS = (0.1, 0.25)
EXTRA_MODELS = ("small", "cex")


def extra_setting(name: str) -> ts.Setting:
    """The two models the nineteenth step found without a level (see the module)."""
    from gba_lens.synthetic.metrics import evaluate_on_synthetic

    if name == "small":
        from gba_lens.synthetic.paper_model import SparseMixtureModel, small_model_config

        model = SparseMixtureModel(small_model_config(0))
        return ts.Setting(name, model, model.sample, 128, 256, 3e-3, 175 / 586, 150_000, {}, 2.0,
                          lambda sae: {k: getattr(evaluate_on_synthetic(sae, model, n_samples=5000), k) for k in ("mcc", "l0")})
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    model = SyntheticModel(SyntheticModelConfig(num_features=128, hidden_dim=64, seed=0,
                                                firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.15, min_prob=0.05)))
    return ts.Setting(name, model, model.sample, 128, 1024, 1e-2, 0.0, 500_000, {}, 6.85,
                      lambda sae: {k: getattr(evaluate_on_synthetic(sae, model), k) for k in ("mcc", "l0")})


def pair_cosine_sums(pairs: Float[torch.Tensor, "rows w w"] | Float[torch.Tensor, "w w"],
                     cosines: Float[torch.Tensor, "rows w w"] | Float[torch.Tensor, "w w"]) -> tuple[float, float]:
    """(sum of |cos| over the weighted pairs, their weight)."""
    return float((pairs * cosines).sum()), float(pairs.sum())


def explained_away(z: Float[torch.Tensor, "rows w"], y: Float[torch.Tensor, "rows w"],
                   gain: Float[torch.Tensor, "w w"] | Float[torch.Tensor, "rows w w"]) -> Bool[torch.Tensor, "rows w w"]:
    """still[r, n, m]: latent m fires on row r with latent n's output taken out of the input
    (y_m - z_n gain[n, m] > 0, gain = W_dec W_enc: n's unit output in m's pre-activation; one
    matrix for every row, or one per row)."""
    return (y[:, None, :] - z[:, :, None] * (gain if gain.dim() == 3 else gain[None])) > 0


def decoder_cosines(sae: Any) -> tuple[Float[torch.Tensor, "w w"], Bool[torch.Tensor, "w w"]]:
    """|cos| between the SAE's decoder rows, and the pairs the check keeps (distinct, |cos| <= CUT)."""
    decoder = sae.W_dec.detach().float()
    unit = decoder / decoder.norm(dim=1, keepdim=True)
    cosines = (unit @ unit.T).abs()
    return cosines, (cosines <= CUT) & ~torch.eye(len(cosines), dtype=torch.bool)


@torch.no_grad()
def refit_over_activation(sae: Any, x: Float[torch.Tensor, "rows d"], z: Float[torch.Tensor, "rows w"],
                          ) -> tuple[Int[torch.Tensor, "rows k"], Float[torch.Tensor, "rows k"]]:
    """Each row's active latents (``active_slots``, -1 padded) and, for each, its coefficient in the
    least-squares fit of the row (less the decoder's offset) on the active latents' decoder rows,
    over its activation (0 in the padding). The decoder rows are read in the input's units through
    ``sae.decode`` (any input scaling included)."""
    offset = sae.decode(torch.zeros_like(z[:1])).float()
    rows = sae.decode(torch.eye(z.shape[1])).float() - offset
    slots = active_slots(*(z > 0).nonzero(as_tuple=True), len(z))
    filled, index = slots >= 0, slots.clamp(min=0)
    directions = rows[index] * filled[..., None]
    gram = directions @ directions.transpose(1, 2) + torch.diag_embed((~filled).float())
    fit = torch.linalg.solve(gram + 1e-6 * torch.eye(gram.shape[-1]), directions @ (x.float() - offset)[:, :, None])[..., 0]
    return slots, torch.where(filled, fit / z.gather(1, index).clamp(min=1e-12), torch.zeros_like(fit))


def first_active(mask: Bool[torch.Tensor, "rows w"]) -> Bool[torch.Tensor, "rows w"]:
    """Each row's first ``coactivation.MAX_ACTIVE`` active latents (by index): what the trainer's
    check reads of a row."""
    return mask & (mask.cumsum(1) <= coactivation.MAX_ACTIVE)


@torch.no_grad()
def readings(sae: Any, x: Float[torch.Tensor, "rows d"], thresholds: Float[torch.Tensor, " w"]) -> dict[str, float]:
    z, y = (t.float() for t in sae.encode_with_hidden_pre(x))
    cosines, kept = decoder_cosines(sae)
    distinct = ~torch.eye(len(cosines), dtype=torch.bool)
    active = z > 0
    live = active.any(0)
    live_pairs = live[:, None] & live[None, :]

    def co_active(mask: torch.Tensor, pairs: torch.Tensor) -> tuple[float, float]:
        return pair_cosine_sums(mask.float().T @ mask.float() * pairs, cosines)

    gen = torch.Generator().manual_seed(5)
    twin = sae.decode(shifted_code(z, len(z), gen))
    error = (x - sae.decode(z))[torch.randperm(len(x), generator=gen)]
    reencoded = {key: sae.encode_with_hidden_pre(inputs)[1].float() > 0
                 for key, inputs in (("own_code", twin), ("own_code_residual", twin + error),
                                     ("unshifted_residual", sae.decode(z) + error))}
    sums = {"every_pair": co_active(active, distinct), "cut": co_active(active, kept),
            **{f"margin_{a}": co_active(y > a * thresholds, kept) for a in MARGINS},
            **{key: co_active(mask, kept) for key, mask in reencoded.items()}}
    sums["shifted"] = co_active(shifted_code(z, len(z), torch.Generator().manual_seed(6)) > 0, kept)
    sums["cut_first"], sums["own_code_residual_first"] = (
        co_active(first_active(mask), kept) for mask in (active, reencoded["own_code_residual"]))
    sums["frequency_weighted"] = sums["cut"]
    sums["magnitude_weighted"] = pair_cosine_sums(z.T @ z * kept, cosines)
    rates = {"frequency_weighted": active.float().mean(0), "magnitude_weighted": z.mean(0)}
    gain = sae.W_dec.detach().float() @ sae.W_enc.detach().float()
    slots = active_slots(*active.nonzero(as_tuple=True), len(active))  # only active latents can pair: [rows, k, k] blocks
    chunk = max(1, int(2e7 // max(slots.shape[1], 1) ** 2))
    stay = {"both_stay": [0.0, 0.0], "either_stays": [0.0, 0.0]}
    for start in range(0, len(z), chunk):
        block = slots[start:start + chunk]
        filled, index = block >= 0, block.clamp(min=0)
        n, m = index[:, :, None], index[:, None, :]
        still = explained_away(z[start:start + chunk].gather(1, index), y[start:start + chunk].gather(1, index), gain[n, m])
        pairs = filled[:, :, None] & filled[:, None, :] & kept[n, m]
        for key, mask in (("both_stay", still & still.transpose(1, 2)), ("either_stays", still | still.transpose(1, 2))):
            total, weight = pair_cosine_sums((pairs & mask).float(), cosines[n, m])
            stay[key][0] += total
            stay[key][1] += weight
    sums.update(stay)
    slots, refit = refit_over_activation(sae, x, z)
    supported = (slots >= 0) & (refit >= 0.5)
    n, m = slots.clamp(min=0)[:, :, None], slots.clamp(min=0)[:, None, :]
    sums["refit_supported"] = pair_cosine_sums((supported[:, :, None] & supported[:, None, :] & kept[n, m]).float(), cosines[n, m])
    baseline = {"every_pair": pair_cosine_sums(live_pairs & distinct, cosines),
                "cut": pair_cosine_sums(live_pairs & kept, cosines)}
    baseline.update({key: pair_cosine_sums(rate[:, None] * rate[None, :] * kept, cosines) for key, rate in rates.items()})
    out = {"l0": float(active.float().sum(1).mean())}
    for key, (total, weight) in sums.items():
        base_total, base_weight = baseline[key if key in baseline else "cut"]
        out[key] = total / weight / (base_total / base_weight) if weight else float("nan")
    return out


@torch.no_grad()
def valley_neurons(y: Float[torch.Tensor, "rows w"], bias: Float[torch.Tensor, " w"]) -> Bool[torch.Tensor, " w"]:
    """Which neurons' pre-activations u = y - b over these rows have a second mode (the trainer's
    valley test, on one window of held-out inputs)."""
    window = ValleyThresholds(y.shape[1])
    window.scale.copy_((y - bias).amax(0).clamp(min=1e-6))
    for start in range(0, len(y), ROWS_PER_STEP):
        rows = y[start:start + ROWS_PER_STEP]
        window.observe(rows, bias, len(rows))
    return find_valleys(window.histogram[:, 1:])[0]


@torch.no_grad()
def valley_pairs(sae: Any, x: Float[torch.Tensor, "rows d"]) -> dict[str, float]:
    """The ratio (near-copies left out) over the co-active pairs of two neurons with a valley (VV),
    one (VN) and none (NN), and each class's share of the pairs."""
    z, y = (t.float() for t in sae.encode_with_hidden_pre(x))
    with_valley = valley_neurons(y, sae.b_enc.detach().float()).float()
    cosines, kept = decoder_cosines(sae)
    kept = kept.float()
    active = (z > 0).float()
    live = active.any(0).float()
    base_total, base_weight = pair_cosine_sums(live[:, None] * live[None, :] * kept, cosines)
    co = active.T @ active * kept
    without = 1 - with_valley
    out = {"valley_fraction": float(with_valley.mean())}
    for key, classes in (("VV", with_valley[:, None] * with_valley[None, :]),
                         ("VN", with_valley[:, None] * without[None, :] + without[:, None] * with_valley[None, :]),
                         ("NN", without[:, None] * without[None, :])):
        total, weight = pair_cosine_sums(co * classes, cosines)
        out[key] = total / weight / (base_total / base_weight) if weight else float("nan")
        out[f"{key}_share"] = weight / float(co.sum()) if float(co.sum()) else float("nan")
    return out


@torch.no_grad()
def pair_truth(sae: Any, model: Any, n_samples: int) -> dict[str, float]:
    """Co-active pairs of latents matched to different true features (near-copies left out): the
    share whose two features are both present, their mean |cos| and that of the rest, against two
    live latents of different features."""
    torch.manual_seed(5)
    x, h = model.sample_with_features(n_samples)
    z = sae.encode(x).float()
    active = (z > 0).float()
    unit = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    features = model.feature_vectors / model.feature_vectors.norm(dim=1, keepdim=True)
    best = (unit @ features.T).abs().argmax(1)
    cosines = decoder_cosines(sae)[0]
    pairs = ((cosines <= CUT) & (best[:, None] != best[None, :])).float()
    present = (h != 0).float()[:, best]        # [rows, latent]: its feature is in the input
    co = active.T @ active * pairs
    both = (active * present).T @ (active * present) * pairs
    live = active.any(0)
    random_pairs = pairs * live[:, None] * live[None, :]
    slots, refit = refit_over_activation(sae, x, z)
    filled = slots >= 0
    latent_present = present.gather(1, slots.clamp(min=0)).bool()
    return {"refit_present_median": float(refit[filled & latent_present].median()),
            "refit_absent_median": float(refit[filled & ~latent_present].median()),
            "both_present_share": float(both.sum() / co.sum()),
            "both_present_cos": float((both * cosines).sum() / both.sum()),
            "one_absent_cos": float(((co - both) * cosines).sum() / (co - both).sum()),
            "two_live_cos": float((random_pairs * cosines).sum() / random_pairs.sum())}


def true_cooccurrence(features: Float[torch.Tensor, "rows n"]) -> float:
    """How often two distinct true features occur in the same input over how often they would if
    they occurred independently at their rates: E[k (k - 1)] / sum_{i != j} p_i p_j (k: features
    per input, p_i: feature i's rate)."""
    present = (features != 0).float()
    k, rates = present.sum(1), present.mean(0)
    independent = float(rates.sum() ** 2 - (rates ** 2).sum())
    return float((k * (k - 1)).mean()) / independent if independent else float("nan")


def true_cooccurring_alignment(features: Float[torch.Tensor, "rows n"], directions: Float[torch.Tensor, "n d"]) -> float:
    """Mean |cos| of the true directions of two features occurring in the same input over that of
    pairs weighted by p_i p_j (1: features that occur together are no more aligned than others)."""
    present = (features != 0).float()
    occurring = present.sum(0) > 0
    present, unit = present[:, occurring], directions[occurring].float()
    unit = unit / unit.norm(dim=1, keepdim=True)
    distinct = ~torch.eye(len(unit), dtype=torch.bool)
    cosines = (unit @ unit.T).abs() * distinct
    together, rates = present.T @ present * distinct, present.mean(0)
    independent = rates[:, None] * rates[None, :] * distinct
    return float((together * cosines).sum() / together.sum() / ((independent * cosines).sum() / independent.sum()))


@torch.no_grad()
def truth_shifted_inputs(model: Any, n_samples: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Held-out inputs from ``n_samples`` draws of a SyntheticModel's true features, each feature's
    column shifted to other rows (independent occurrence, the same rates and magnitudes), and what
    the unshifted draws say of the features that occur together."""
    features = model.activation_generator.sample(n_samples)
    features = features.to_dense() if features.is_sparse else features
    truth = {"true_cooccurrence": true_cooccurrence(features),
             "true_cooccurring_alignment": true_cooccurring_alignment(features, model.feature_dict.feature_vectors)}
    return model.feature_dict(shifted_code(features, n_samples, generator)), truth


def fifths(gaps: list[float]) -> dict[str, list[float]]:
    """A run's gap between its two readings per check, averaged over each fifth of the checks, and
    (with ``GATE``) the share of each fifth's checks over the gate."""
    values = torch.tensor(gaps)
    parts = [values[i * len(values) // 5:(i + 1) * len(values) // 5] for i in range(5)]
    out = {"gap_by_fifth": [round(float(p.mean()), 3) for p in parts]}
    if coactivation.GATE > 0:
        out["over_gate_by_fifth"] = [round(float((p > coactivation.GATE).float().mean()), 2) for p in parts]
    return out


def recording(gaps: list[float]) -> Callable[[Any], None]:
    """A ``train_gba`` setup that appends each check's gap between its two readings (when it reads
    two) to ``gaps``: the gate's own (over ``GATE_ACTIVE`` latents of a row) with ``GATE``, else the
    check minus the second reading."""
    def setup(sae: Any) -> None:
        balance = sae.bias_adaptation.coactivation
        ratio = balance.ratio

        def recorded() -> float | None:
            out = ratio()
            if out is not None and len(balance.last_readings) == 2:
                check, second = balance.last_readings
                gaps.append(balance.last_gap if balance.last_gap is not None else check - second)
            return out
        balance.ratio = recorded
    return setup


def main(argv: list[str] | None = None) -> None:
    from gba_lens.experiments.overrides import add_set_option, apply_set_option

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=ts.MODELS + EXTRA_MODELS, default=["small", "cex", "A"])
    p.add_argument("--multiples", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="of the top-W L0, asked with target_l0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-samples", type=int, default=8000, help="held-out inputs the ratios are read on")
    p.add_argument("--pairs", action="store_true", help="small, toy: also what the truth says of the pairs")
    p.add_argument("--valley-thresholds", action="store_true",
                   help="train with valley thresholds; add the pairs by which neurons have a valley")
    p.add_argument("--truth-shifted", action="store_true",
                   help="A, B, C, sb, cex: also the readings on inputs whose true features occur independently")
    p.add_argument("--find-l0", action="store_true",
                   help="SAEs that find their L0 (find_l0) instead of the told multiples")
    p.add_argument("--cache", default="runs/compare_synthbench/cache")
    add_set_option(p)
    args = p.parse_args(argv)
    apply_set_option(p, args)
    if args.pairs and not set(args.models) <= {"small", "toy"}:
        p.error("--pairs needs the features behind each input: models small and toy only")
    if args.truth_shifted and not set(args.models) <= {"A", "B", "C", "sb", "cex"}:
        p.error("--truth-shifted needs a SyntheticModel's feature generator: models A, B, C, sb and cex only")
    valleys = {"valley_thresholds": True} if args.valley_thresholds else {}
    for name in args.models:
        s = extra_setting(name) if name in EXTRA_MODELS else ts.setting(name, args.cache)
        for multiple in ([None] if args.find_l0 else args.multiples):
            trace: list[float] = []
            if multiple is None:
                sae = ts.train_gba(s, s.samples, args.seed, setup=recording(trace), find_l0=True, **valleys)
            else:
                sae = ts.train_gba(s, s.samples, args.seed, target_l0=multiple * s.top_w_l0, **valleys)
            torch.manual_seed(77)
            x = s.sample(args.eval_samples)
            thresholds = (-sae.b_enc.detach().float()).clamp(min=0)
            row: dict[str, Any] = {"model": name, "seed": args.seed, "multiple": multiple if multiple is not None else "find_l0",
                                   "top_w_l0": s.top_w_l0, **readings(sae, x, thresholds)}
            if trace:
                row.update(fifths(trace))
            if args.pairs:
                row.update(pair_truth(sae, s.model, 20_000))
            if args.valley_thresholds:
                row.update(valley_pairs(sae, x))
            if args.truth_shifted:
                torch.manual_seed(78)
                shifted, truth = truth_shifted_inputs(s.model, args.eval_samples, torch.Generator().manual_seed(9))
                row.update(truth)
                row.update({f"truth_shifted:{k}": v for k, v in readings(sae, shifted, thresholds).items()})
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
