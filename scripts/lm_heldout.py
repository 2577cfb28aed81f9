"""Two SAEs on the stdlib LM's held-out tokens (docs/experiments/compare.md, prior_free.md): both
scored on the val split's first rows and on rows spread over it, with the bootstrap standard error
(over rows) of the difference of their CE loss recovered; with ``--by-norm`` each one's L0 and
relative error by decile of the token's norm; with ``--train-cache`` the latents that fire far more
often on held-out tokens than on the training ones, and with ``--refit`` also each one's explained
variance with its decoder refitted by least squares on the training cache's codes; with
``--margins`` where each one's thresholds sit (:func:`margins`). JSON lines.

    python scripts/lm_at_l0.py --methods gba-geometric topk --l0 4 --tokens 1600000 --seed 1 --save runs/saes
    python scripts/lm_heldout.py runs/saes/blocks.1.hook_mlp_out/gba-geometric-s1 \\
        runs/saes/blocks.1.hook_mlp_out/topk-4-s1 --rows 64 256 --by-norm \\
        --train-cache runs/compare_lm/cache/lm-blocks.1.hook_mlp_out-<hash>
    python scripts/lm_heldout.py SAE_A SAE_B --rows 256 --margins --refit --train-cache CACHE
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BATCH_ROWS = 16
FREQUENCY_BANDS = (1.0, 0.1, 0.05, 0.02, 0.01, 0.003, 0.0)
"""Edges of the firing-frequency bands :func:`margins` reports, highest first."""
EDGE_SHARE = 0.1
""":func:`margins` reads a latent's lowest tenth of its firings, and as many of its highest silent inputs."""
MIN_FIRINGS = 20
"""... of latents that fire at least this often on the held-out tokens."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", help="an SAE directory (SAE.load_from_disk) trained at a stdlib LM hook")
    p.add_argument("second", help="another, at the same hook")
    p.add_argument("--rows", type=int, nargs="+", default=[64, 256], help="held-out rows of 128 tokens")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples over rows")
    p.add_argument("--by-norm", action="store_true", help="L0 and relative error by token-norm decile (spread rows)")
    p.add_argument("--train-cache", default=None,
                   help="the activation cache the SAEs trained on (lm preset: OUT/cache/lm-<hook>-<hash>; "
                        "raw activations): firing on it against firing on the held-out rows")
    p.add_argument("--margins", action="store_true",
                   help="per firing-frequency band: L0, worth per firing, worth at the thresholds (spread rows)")
    p.add_argument("--refit", action="store_true",
                   help="with --train-cache: explained variance with each decoder refitted by least squares on its codes")
    args = p.parse_args(argv)
    if args.refit and args.train_cache is None:
        p.error("--refit fits the decoders on the training activations: give --train-cache")

    import torch
    from sae_lens import SAE

    from gba_lens.data.stdlib_corpus import stdlib_token_dataset
    from gba_lens.models.stdlib_lm import load_stdlib_lm

    saes = [SAE.load_from_disk(path).eval() for path in (args.first, args.second)]
    labels = [Path(path).name for path in (args.first, args.second)]
    hooks = {sae.cfg.metadata.hook_name for sae in saes}
    if len(hooks) != 1 or None in hooks:
        p.error(f"the two SAEs must name one hook in their cfg.json metadata, got {sorted(map(str, hooks))}")
    hook = hooks.pop()
    model = load_stdlib_lm()
    if hook not in model.hook_dict:
        p.error(f"{hook!r} is not a hook of the stdlib LM")

    def splice(sae, errors: list):  # type: ignore[no-untyped-def]
        """The hook that replaces the activations by ``sae``'s reconstruction, keeping its squared
        error (past the BOS position) for the explained variance."""
        def hook_fn(x, hook):  # type: ignore[no-untyped-def]
            reconstruction = sae(x)
            errors.append((reconstruction - x)[:, 1:].pow(2).sum(-1).flatten())
            return reconstruction
        return hook_fn

    for spread in (False, True):
        for n_rows in args.rows:
            rows = torch.tensor(stdlib_token_dataset(model.tokenizer, 128, "val", max_tokens=n_rows * 128,
                                                     spread=spread)["tokens"])
            losses: dict[str, list[torch.Tensor]] = {k: [] for k in ("clean", "zero", "first", "second")}
            sq_err: list[list[torch.Tensor]] = [[], []]
            acts = []
            with torch.no_grad():
                for start in range(0, len(rows), BATCH_ROWS):
                    tokens = rows[start:start + BATCH_ROWS]
                    clean, cache = model.run_with_cache(tokens, return_type="loss", loss_per_token=True,
                                                        names_filter=[hook])
                    x = cache[hook][:, 1:]  # not the BOS position
                    acts.append(x.reshape(-1, x.shape[-1]))
                    per_row = lambda hooks: model.run_with_hooks(  # noqa: E731
                        tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks).mean(1)
                    losses["clean"].append(clean.mean(1))
                    losses["zero"].append(per_row([(hook, lambda x, hook: torch.zeros_like(x))]))
                    losses["first"].append(per_row([(hook, splice(saes[0], sq_err[0]))]))
                    losses["second"].append(per_row([(hook, splice(saes[1], sq_err[1]))]))
            loss = {k: torch.cat(v) for k, v in losses.items()}
            all_acts = torch.cat(acts)
            total = (all_acts - all_acts.mean(0)).pow(2).sum()

            def score(name: str, pick: torch.Tensor) -> torch.Tensor:
                zero, clean = loss["zero"][pick].mean(), loss["clean"][pick].mean()
                return (zero - loss[name][pick].mean()) / (zero - clean)

            every = torch.arange(len(rows))
            g = torch.Generator().manual_seed(0)
            gaps = torch.stack([score("first", r) - score("second", r) for r in
                                (torch.randint(0, len(rows), (len(rows),), generator=g) for _ in range(args.resamples))])
            if spread and n_rows == max(args.rows) and args.by_norm:
                print(json.dumps(by_norm(saes, labels, all_acts)), flush=True)
            if spread and n_rows == max(args.rows) and args.train_cache is not None:
                print(json.dumps(shift(saes, labels, all_acts, args.train_cache, hook, refit=args.refit)), flush=True)
            if spread and n_rows == max(args.rows) and args.margins:
                print(json.dumps(margins(saes, labels, all_acts)), flush=True)
            print(json.dumps({
                "hook": hook, "saes": labels, "rows": len(rows), "selection": "spread" if spread else "first",
                "ce_loss_score": [round(float(score(n, every)), 4) for n in ("first", "second")],
                "explained_variance": [round(float(1 - torch.cat(e).sum() / total), 4) for e in sq_err],
                "difference": round(float(score("first", every) - score("second", every)), 4),
                "bootstrap_se": round(float(gaps.std()), 4),
                "ablation_nats": round(float(loss["zero"].mean() - loss["clean"].mean()), 4),
            }), flush=True)


def by_norm(saes, labels, acts) -> dict:  # type: ignore[no-untyped-def]
    """Per SAE: L0 and relative squared error by decile of the token's activation norm."""
    import torch

    norm2 = acts.pow(2).sum(-1)
    edges = torch.quantile(norm2, torch.linspace(0, 1, 11)[1:-1])
    decile = torch.bucketize(norm2, edges)
    out: dict = {"by_norm_decile": {}}
    with torch.no_grad():
        for i, sae in enumerate(saes):
            latents = sae.encode(acts)
            fired = (latents > 0).sum(-1).float()
            rel = (sae.decode(latents) - acts).pow(2).sum(-1) / norm2
            out["by_norm_decile"][labels[i]] = {
                "l0": [round(float(fired[decile == d].mean()), 2) for d in range(10)],
                "relative_error": [round(float(rel[decile == d].mean()), 3) for d in range(10)],
                "no_latent_fraction": round(float((fired == 0).float().mean()), 4)}
    return out


def shift(saes, labels, held_out, cache: str, hook: str, samples: int = 60_000,  # type: ignore[no-untyped-def]
          refit: bool = False) -> dict:
    """Per SAE: explained variance on (a sample of) the training cache and on the held-out tokens,
    and the latents that fire at least ten times as often on held-out tokens as in training (their
    share of the held-out firings, the relative error of the tokens they fire on); with ``refit``
    the held-out explained variance with the decoder refitted (:func:`refitted_decoder`)."""
    import torch

    from gba_lens.data import load_activations

    train = load_activations(cache, hook)
    train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:samples]]
    ev = lambda x, r: round(float(1 - (r - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), 4)  # noqa: E731
    out: dict = {"shift": {}}
    with torch.no_grad():
        for i, sae in enumerate(saes):
            z_train, z_held = sae.encode(train), sae.encode(held_out)
            f_train, f_held = (z_train > 0).float().mean(0), (z_held > 0).float().mean(0)
            jumped = f_held > 10 * f_train
            uses = ((z_held > 0) & jumped).any(-1)
            err = (sae.decode(z_held) - held_out).pow(2).sum(-1)
            dev = (held_out - held_out.mean(0)).pow(2).sum(-1)
            out["shift"][labels[i]] = {
                "ev_train": ev(train, sae.decode(z_train)), "ev_held_out": ev(held_out, sae.decode(z_held)),
                "latents_10x": int(jumped.sum()),
                "their_share_of_held_out_firing": round(float(f_held[jumped].sum() / f_held.sum().clamp(min=1e-12)), 4),
                "largest_jumps": [[int(j), round(float(f_train[j]), 5), round(float(f_held[j]), 5)]
                                  for j in ((f_held + 1e-5) / (f_train + 1e-5)).argsort(descending=True)[:3]],
                "tokens_using_them": round(float(uses.float().mean()), 4),
                "their_relative_error": round(float(err[uses].sum() / dev[uses].sum()), 3) if uses.any() else None,
                "others_relative_error": round(float(err[~uses].sum() / dev[~uses].sum()), 3)}
            if refit:
                weights, bias = refitted_decoder(z_train, train)
                out["shift"][labels[i]]["ev_held_out_refit"] = ev(held_out, z_held @ weights + bias)
    return out


def refitted_decoder(codes, acts):  # type: ignore[no-untyped-def]
    """The decoder (weights [d_sae, d_in], bias [d_in]) that reconstructs ``acts`` from ``codes`` with
    the least squared error: what the SAE's encoder allows, its own decoder's training aside."""
    import torch

    design = torch.cat([codes, torch.ones(len(codes), 1, dtype=codes.dtype)], 1).double()
    solution = torch.linalg.lstsq(design, acts.double(), driver="gelsd").solution.to(acts.dtype)
    return solution[:-1], solution[-1]


def margins(saes, labels, acts, bands=FREQUENCY_BANDS) -> dict:  # type: ignore[no-untyped-def]
    """Per SAE and band of firing frequency: its latents, their share of the L0, their worth per
    firing against the average firing's (how much the squared error grows without a firing,
    |z d|^2 + 2 z d . r, with the others' reconstruction and the residual r kept), and the medians
    over its latents of the worth at the threshold: the worth of a latent's lowest tenth of firings
    (``loss_at_threshold``) and what as many of its highest silent inputs would gain if they fired
    at their pre-activation (``gain_below``: 2 u d . r - |u d|^2). Thresholds placed for the least
    error at this L0 have these equal across latents."""
    import torch

    def median(column: torch.Tensor) -> float | None:  # None for a band of latents too rare to read
        return None if column.isnan().all() else round(float(column.nanmedian()), 4)

    out: dict = {"margins": {}}
    with torch.no_grad():
        for sae, label in zip(saes, labels):
            _, cache = sae.run_with_cache(acts, names_filter=["hook_sae_acts_pre", "hook_sae_acts_post"])
            would, z = torch.relu(cache["hook_sae_acts_pre"]), cache["hook_sae_acts_post"]
            fired = z > 0
            decoder = sae.W_dec
            residual_along = (acts - sae.decode(z)) @ decoder.t()  # [tokens, d_sae]
            row_norm2 = decoder.pow(2).sum(-1)
            worth = torch.where(fired, z.pow(2) * row_norm2 + 2 * z * residual_along, torch.zeros_like(z))
            gain = 2 * would * residual_along - would.pow(2) * row_norm2
            frequency, firings = fired.float().mean(0), fired.sum(0)
            average = worth.sum() / firings.sum().clamp(min=1)
            at_threshold = torch.full((z.shape[1], 2), float("nan"))
            for m in torch.nonzero(firings >= MIN_FIRINGS).flatten().tolist():
                n = max(5, int(EDGE_SHARE * int(firings[m])))
                lowest = torch.where(fired[:, m], z[:, m], torch.full_like(z[:, m], float("inf"))).topk(n, largest=False).indices
                n_silent = min(n, len(z) - int(firings[m]))  # a latent may fire on most tokens
                silent = torch.where(fired[:, m], torch.full_like(z[:, m], -float("inf")), would[:, m]).topk(n_silent).indices
                at_threshold[m] = torch.stack([worth[lowest, m].mean(), gain[silent, m].mean()])
            rows = []
            for high, low in zip(bands[:-1], bands[1:]):
                band = (frequency > low) & (frequency <= high)
                if not band.any():
                    continue
                rows.append({"frequency": [low, high], "latents": int(band.sum()), "l0": round(float(frequency[band].sum()), 3),
                             "worth_per_firing": round(float(worth[:, band].sum() / firings[band].sum().clamp(min=1) / average), 3),
                             "loss_at_threshold": median(at_threshold[band, 0]),
                             "gain_below": median(at_threshold[band, 1])})
            out["margins"][label] = {"l0": round(float(frequency.sum()), 3), "average_worth": round(float(average), 4),
                                     "bands": rows}
    return out


if __name__ == "__main__":
    main()
