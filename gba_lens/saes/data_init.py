"""GBA's ``encoder_init="data"`` (the default with ``find_l0``): the neurons start at directions of
the first training batch.

With random directions a neuron finds a feature only after its direction has turned toward one,
which at a short budget is most of the run. Started at an input of the first batch (centred and
scaled as the encoder sees it) a neuron already points where the data lie: its first firings are
on inputs like that one, and its direction sharpens from there. Inputs are sums of features, so
each start is a mixture; which inputs are taken matters where the features' frequencies differ
widely (Zipfian data): inputs drawn at random mostly repeat the frequent features, so the neurons
are drawn the way k-means++ seeds its centres instead, each next input with probability
proportional to (1 - its largest |cosine| with those already taken)^2.

    for i < min(rows, d_sae):  neuron i starts at the i-th input so drawn
    for i >= rows:             half an input (cycling through them again) and half the neuron's own
                               random direction, so that no two neurons start alike

The draw's generator is seeded from the neurons' random initial directions (:func:`draw_seed`), so
that it follows the run's seed, as a random start does, and every rank of a data-parallel run draws
the same inputs (their parameters are equal from the start; the batch is the global one). A checkpoint
starts from its own weights: the draw runs once, on the first batch of a new SAE. Measured in
docs/experiments/prior_free.md (thirtieth, thirty-second and thirty-third steps).
"""

from __future__ import annotations

import hashlib

import torch
from jaxtyping import Float

SPREAD_POWER = 2.0
"""An input is drawn with probability proportional to (1 - its largest |cosine| with those taken)
to this power (k-means++'s squared distance)."""
REPEAT_SHARE = 0.5
"""Beyond the batch's rows, the share of an input in a neuron's start (the rest: its random one)."""


def _unit_rows(x: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    norms = x.norm(dim=1) if norms is None else norms
    return x / norms[:, None].clamp(min=1e-12)


def draw_seed(random_directions: Float[torch.Tensor, "d_sae d_in"]) -> int:
    """Seed of the draw: a hash of the first neuron's random direction. The run's seed (or its
    generator) sets those directions, and data-parallel ranks hold the same ones."""
    first = random_directions[0].detach().to("cpu", torch.float32).contiguous()
    return int.from_bytes(hashlib.blake2b(first.numpy().tobytes(), digest_size=8).digest(), "little") >> 1


@torch.no_grad()
def spread_draw(unit_inputs: Float[torch.Tensor, "rows d_in"], count: int,
                generator: torch.Generator) -> torch.Tensor:
    """Indices of ``count`` <= rows distinct inputs drawn k-means++-style on |cosine| (see the module)."""
    rows = unit_inputs.shape[0]
    if not 0 < count <= rows:
        raise ValueError(f"cannot draw {count} distinct inputs from {rows}")
    taken = torch.empty(count, dtype=torch.long)
    available = torch.ones(rows, dtype=torch.bool, device=unit_inputs.device)
    nearest = torch.zeros(rows, device=unit_inputs.device)
    chosen = int(torch.randint(0, rows, (), generator=generator))
    for i in range(count):
        taken[i] = chosen
        available[chosen] = False
        nearest = torch.maximum(nearest, (unit_inputs @ unit_inputs[chosen]).abs().float())
        if i + 1 < count:
            weight = torch.where(available, (1 - nearest).clamp(min=0) ** SPREAD_POWER, 0.0)
            if not bool(weight.sum() > 0):  # every input left is parallel to one taken: draw uniformly
                weight = available.float()
            chosen = int(torch.multinomial(weight.cpu(), 1, generator=generator))
    return taken


@torch.no_grad()
def directions_from_data(
    inputs: Float[torch.Tensor, "rows d_in"], random_directions: Float[torch.Tensor, "d_sae d_in"]
) -> Float[torch.Tensor, "d_sae d_in"]:
    """Unit start directions of the neurons from a batch of encoder inputs (``s x - b_pre``) and their
    random initial directions (see the module). An input of norm 0 leaves its neuron's random one."""
    d_sae = random_directions.shape[0]
    rows = inputs.shape[0]
    if rows == 0:
        raise ValueError("encoder_init='data' needs a non-empty first batch")
    generator = torch.Generator().manual_seed(draw_seed(random_directions))
    norms = inputs.float().norm(dim=1)
    unit_inputs = _unit_rows(inputs.float(), norms)
    drawn = spread_draw(unit_inputs, min(rows, d_sae), generator)
    if d_sae > rows:  # cycle through the inputs again, each time in a new order
        again = torch.cat([torch.randperm(rows, generator=generator) for _ in range(-(-(d_sae - rows) // rows))])
        drawn = torch.cat([drawn, again[: d_sae - rows]])
    drawn = drawn.to(inputs.device)
    own = _unit_rows(random_directions.float())
    share = torch.ones(d_sae, 1, device=own.device)
    share[rows:] = REPEAT_SHARE
    share[(norms[drawn] == 0).to(own.device)] = 0.0
    return _unit_rows(share * unit_inputs[drawn].to(own.device) + (1 - share) * own)


@torch.no_grad()
def start_at_inputs(inputs: Float[torch.Tensor, "rows d_in"], W_enc: Float[torch.Tensor, "d_in d_sae"],
                    W_dec: Float[torch.Tensor, "d_sae d_in"]) -> None:
    """Point each neuron's encoder column (unit norm) and decoder row (its norm kept) at its start
    from :func:`directions_from_data`, in place."""
    directions = directions_from_data(inputs, W_dec).to(W_dec.dtype)
    W_dec.copy_(directions * W_dec.norm(dim=1, keepdim=True))
    W_enc.copy_(directions.t().to(W_enc.dtype))
