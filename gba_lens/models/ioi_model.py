"""A tiny offline model that performs indirect object identification (IOI).

The model is a 2-layer attention-only ``HookedTransformer`` (d_model 64, 4 heads of 16) with a
word-level tokenizer (~160 tokens), trained by ``scripts/train_ioi_model.py`` on templated IOI
sentences (ABBA and BABA) with 2 of the 15 templates and 10% of the unordered name pairs held
out. Weights (safetensors), the config (JSON), the tokenizer (``save_pretrained`` files) and the
held-out split (JSON) are committed under ``gba_lens/assets/ioi_model/``; nothing is downloaded
and nothing is unpickled.

Every name is seen as an answer in training (a name never seen as the answer cannot be
predicted), so "held out" means held-out name *pairs* and held-out *templates*.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch

if TYPE_CHECKING:  # imported lazily at run time: keeps `import gba_lens.models` light
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

    from gba_lens.tasks.ioi import IOIPromptSet

__all__ = [
    "IOI_MODEL_DIR",
    "IOISplit",
    "load_ioi_model",
    "load_ioi_tokenizer",
    "load_ioi_split",
    "load_ioi_training_info",
    "ioi_heldout_prompts",
]

#: Directory of the committed model files.
IOI_MODEL_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "ioi_model"

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SPLIT_FILE = "split.json"
TRAINING_INFO_FILE = "training_info.json"

Split = Literal["pairs", "templates", "both", "train"]


@dataclass(frozen=True)
class IOISplit:
    """The train / held-out split the committed model was trained with."""

    train_templates: list[str]
    heldout_templates: list[str]
    heldout_pairs: list[tuple[str, str]]
    names: list[str]
    places: list[str]
    objects: list[str]
    name_prefix: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IOISplit":
        return cls(
            train_templates=list(d["train_templates"]),
            heldout_templates=list(d["heldout_templates"]),
            heldout_pairs=[tuple(p) for p in d["heldout_pairs"]],  # type: ignore[misc]
            names=list(d["names"]),
            places=list(d["places"]),
            objects=list(d["objects"]),
            name_prefix=str(d.get("name_prefix", " ")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_templates": self.train_templates,
            "heldout_templates": self.heldout_templates,
            "heldout_pairs": [list(p) for p in self.heldout_pairs],
            "names": self.names,
            "places": self.places,
            "objects": self.objects,
            "name_prefix": self.name_prefix,
        }


def _model_dir(path: Optional[str | Path]) -> Path:
    d = Path(path) if path is not None else IOI_MODEL_DIR
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json") if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"IOI model directory {d} lacks {missing}; build it with "
            "`python scripts/train_ioi_model.py --out-dir DIR`."
        )
    return d


def load_ioi_tokenizer(path: Optional[str | Path] = None) -> "PreTrainedTokenizerFast":
    """The word-level tokenizer of the IOI model (reloaded from its directory, as TL needs)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(_model_dir(path)))


def load_ioi_split(path: Optional[str | Path] = None) -> IOISplit:
    """The held-out templates and name pairs of the committed model."""
    d = Path(path) if path is not None else IOI_MODEL_DIR
    return IOISplit.from_dict(json.loads((d / SPLIT_FILE).read_text()))


def load_ioi_training_info(path: Optional[str | Path] = None) -> dict[str, Any]:
    """Figures measured when the model was built (held-out logit differences, accuracy, time)."""
    d = Path(path) if path is not None else IOI_MODEL_DIR
    return json.loads((d / TRAINING_INFO_FILE).read_text())


def load_ioi_model(
    device: str | torch.device = "cpu", path: Optional[str | Path] = None
) -> "HookedTransformer":
    """Load the committed IOI model as a ``HookedTransformer`` with its tokenizer.

    Args:
        device: where to put the model.
        path: a directory written by ``scripts/train_ioi_model.py``; default the committed one.

    Returns:
        The model in eval mode; ``model.tokenizer`` is its word-level tokenizer and
        ``model.cfg.default_prepend_bos`` is True (it was trained with one BOS token).
    """
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    d = _model_dir(path)
    cfg_kwargs = json.loads((d / CONFIG_FILE).read_text())
    cfg = HookedTransformerConfig(**cfg_kwargs, device=str(device))
    tokenizer = load_ioi_tokenizer(d)
    with warnings.catch_warnings():
        # HookedTransformer is deprecated in TL 3.9; sae-lens 6.x still builds on it.
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    state = load_file(str(d / WEIGHTS_FILE), device=str(device))
    result = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    bad_missing = [k for k in result.missing_keys if k not in buffers]
    if bad_missing or result.unexpected_keys:
        raise ValueError(
            f"{d / WEIGHTS_FILE} does not match the config: missing {bad_missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    model.eval()
    return model


def ioi_heldout_prompts(
    model_or_tokenizer: Any,
    split: Split = "pairs",
    n_prompts: int = 200,
    corruption: Literal["abc", "flip"] = "abc",
    seed: int = 0,
    path: Optional[str | Path] = None,
) -> "IOIPromptSet":
    """IOI prompts for the committed model, from its held-out (or training) part.

    Args:
        model_or_tokenizer: the IOI model (or its tokenizer).
        split: ``"pairs"``: held-out name pairs in training templates; ``"templates"``:
            held-out templates with training pairs; ``"both"``: held-out pairs in held-out
            templates; ``"train"``: training templates and pairs.
        n_prompts: number of prompts (half ABBA, half BABA).
        corruption: see :func:`gba_lens.tasks.ioi.make_ioi_prompts`.
        seed: sampler seed.
        path: model directory (default the committed one).
    """
    from gba_lens.tasks.ioi import make_ioi_prompts

    sp = load_ioi_split(path)
    if split == "pairs":
        templates, pairs, exclude = sp.train_templates, sp.heldout_pairs, None
    elif split == "templates":
        templates, pairs, exclude = sp.heldout_templates, None, sp.heldout_pairs
    elif split == "both":
        templates, pairs, exclude = sp.heldout_templates, sp.heldout_pairs, None
    elif split == "train":
        templates, pairs, exclude = sp.train_templates, None, sp.heldout_pairs
    else:
        raise ValueError(f"unknown split {split!r}; choose 'pairs', 'templates', 'both' or 'train'")
    return make_ioi_prompts(
        model_or_tokenizer,
        n_prompts,
        templates=templates,
        names=sp.names,
        places=sp.places,
        objects=sp.objects,
        corruption=corruption,
        seed=seed,
        name_prefix=sp.name_prefix,
        pairs=pairs,
        exclude_pairs=exclude,
    )
