"""Public types of the circuit utilities: the aliases used in their signatures.

Exported from :mod:`gba_lens.circuits`, so annotations in user code can name them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from jaxtyping import Bool, Int
from torch import nn

from gba_lens.adapters import Attachment

__all__ = [
    "FeaturesLike",
    "HookFn",
    "Metric",
    "ModelOrAttachment",
    "Node",
    "PositionsLike",
    "TokensLike",
]

#: A metric maps the model's logits ``[batch, pos, d_vocab]`` to a scalar tensor (a tensor with
#: more than one element is averaged). It must be differentiable for attribution.
Metric = Callable[[torch.Tensor], torch.Tensor]

#: Inputs: a token tensor ``[batch, pos]`` or text (converted with ``model.to_tokens``).
TokensLike = Union[Int[torch.Tensor, "batch pos"], str, Sequence[str]]

#: Positions: None (all), an int or a list of ints (the same positions in every prompt; negative
#: ints count from the end), a 1-D integer tensor of length ``batch`` (one position per prompt,
#: e.g. ``IOIPromptSet.end_pos``) or a boolean mask ``[batch, pos]``.
PositionsLike = Union[None, int, Sequence[int], Int[torch.Tensor, " batch"], Bool[torch.Tensor, "batch pos"]]

#: Features: an int or list of ints (when one SAE is attached), ``{hook: int | [ints]}``, or a
#: list of ``(hook, feature)`` pairs.
FeaturesLike = Union[int, Sequence[int], Mapping[str, Union[int, Sequence[int], torch.Tensor]], Sequence[tuple[str, int]]]

ModelOrAttachment = Union[Attachment, nn.Module]

#: A forward hook on a TransformerLens hook point: ``(activation, hook) -> new activation | None``.
HookFn = Callable[[torch.Tensor, Any], Union[torch.Tensor, None]]

#: An attribution node: ``(hook, feature, position)``; ``feature=None`` is the error node,
#: ``position=None`` all positions at once.
Node = tuple[str, Optional[int], Optional[int]]
