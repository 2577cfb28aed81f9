"""The offline default language model: a tiny GPT-2 trained on the Python standard library.

Every machine that runs Python has the standard library's source, so a model trained on it (and
a tokenizer trained the same way) gives tests, tutorials, CI and ``gba-lens train`` a real
language model with no network access. The weights and tokenizer are committed under
``gba_lens/assets/stdlib_lm/`` (fp16 safetensors, a few MB) and are rebuilt by
``scripts/train_stdlib_lm.py``.

The model is a Hugging Face ``GPT2LMHeadModel`` (2 layers, d_model 128, 4 heads, d_mlp 512,
n_ctx 128, LayerNorm, exact GELU, byte-level BPE vocabulary of 4096). It loads as

- ``load_stdlib_lm(kind="hooked")``: a TransformerLens ``HookedTransformer`` (weights converted
  with TransformerLens's own GPT-2 conversion, *not* folded or centred, so activations equal
  the Hugging Face model's and the bridge's);
- ``load_stdlib_lm(kind="bridge")``: a ``TransformerBridge`` booted from the local directory;
- ``load_stdlib_lm(kind="hf")``: the plain Hugging Face model.

All three give the same logits to float tolerance (fp32 compute), and greedy ``generate``
agrees too (the bridge's KV cache is switched off: it is broken for GPT-2 in TransformerLens 3.9).

The corpus and token data (:func:`~gba_lens.data.stdlib_corpus.stdlib_corpus`,
:func:`~gba_lens.data.stdlib_corpus.stdlib_token_dataset`, ...) live in
:mod:`gba_lens.data.stdlib_corpus`; they are re-exported here for one release.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

import torch

# Kept for one release: the corpus and token helpers moved to gba_lens.data.
from gba_lens.data.stdlib_corpus import (  # noqa: F401
    VAL_MODULUS,
    Split,
    split_token_stream,
    stdlib_corpus,
    stdlib_files,
    stdlib_root,
    stdlib_token_dataset,
    unigram_cross_entropy,
)
from gba_lens.data.tokens import chunk_stream, tokenize_corpus  # noqa: F401

if TYPE_CHECKING:  # heavy imports stay lazy: importing gba_lens.models must be cheap
    from transformer_lens import HookedTransformer
    from transformer_lens.config import HookedTransformerConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

__all__ = [
    "STDLIB_LM_DIR",
    "STDLIB_LM_NAME",
    "STDLIB_LM_ARCH",
    "BOS_TOKEN",
    "PAD_TOKEN",
    "stdlib_root",
    "stdlib_files",
    "stdlib_corpus",
    "train_stdlib_tokenizer",
    "save_stdlib_tokenizer",
    "load_stdlib_tokenizer",
    "stdlib_gpt2_config",
    "load_stdlib_hf_model",
    "stdlib_hooked_config",
    "load_stdlib_lm",
    "tokenize_corpus",
    "chunk_stream",
    "split_token_stream",
    "stdlib_token_dataset",
    "unigram_cross_entropy",
    "load_training_info",
]

#: Directory holding the committed weights, tokenizer and ``training_info.json``.
STDLIB_LM_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "stdlib_lm"

#: Identifier recorded in metadata (SAE configs, W&B runs) for this model. Not a hub repo.
STDLIB_LM_NAME: str = "gba-lens/stdlib-lm"

#: Architecture of the model (GPT-2 naming is used by :func:`stdlib_gpt2_config`).
STDLIB_LM_ARCH: dict[str, Any] = {
    "n_layers": 2,
    "d_model": 128,
    "n_heads": 4,
    "d_mlp": 512,
    "n_ctx": 128,
    "vocab_size": 4096,
    "act_fn": "gelu",
}

#: GPT-2 style: one token starts a chunk and separates files (bos == eos).
BOS_TOKEN = "<|endoftext|>"
#: A distinct padding token, so padded positions are never mistaken for a document boundary.
PAD_TOKEN = "<|pad|>"

Kind = Literal["hooked", "bridge", "hf"]


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _wrap_tokenizer(tok: Any) -> "PreTrainedTokenizerFast":
    from transformers import PreTrainedTokenizerFast

    # PreTrainedTokenizerFast (not transformers 5's TokenizersBackend) so that older versions of
    # transformers load the saved files too. clean_up_tokenization_spaces=False keeps decoding
    # exact (the default would turn " ." into "." and break round trips of code).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=BOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=STDLIB_LM_ARCH["n_ctx"],
        clean_up_tokenization_spaces=False,
    )


def train_stdlib_tokenizer(
    texts: Sequence[str], vocab_size: int = STDLIB_LM_ARCH["vocab_size"]
) -> "PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer (HF ``tokenizers``) on ``texts``.

    The tokenizer adds no special tokens by itself (like GPT-2's); TransformerLens prepends the
    BOS token. Save it with ``save_pretrained(dir)`` and reload with
    :func:`load_stdlib_tokenizer`: TransformerLens re-loads tokenizers by ``name_or_path``, so
    an in-memory tokenizer cannot be attached to a model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return _wrap_tokenizer(tok)


def save_stdlib_tokenizer(tokenizer: "PreTrainedTokenizerFast", path: str | Path) -> Path:
    """``save_pretrained`` into ``path``, recording the class as ``PreTrainedTokenizerFast``.

    transformers 5 writes ``"tokenizer_class": "TokenizersBackend"``, which transformers 4
    cannot resolve; ``PreTrainedTokenizerFast`` loads in both (in 5 it is an alias).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


def load_stdlib_tokenizer(path: str | Path | None = None) -> "PreTrainedTokenizerFast":
    """Load the committed tokenizer (or one saved with ``save_pretrained`` at ``path``)."""
    from transformers import PreTrainedTokenizerFast

    path = _asset_dir(path, need=("tokenizer.json",))
    return PreTrainedTokenizerFast.from_pretrained(str(path))


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def stdlib_gpt2_config(vocab_size: int = STDLIB_LM_ARCH["vocab_size"]) -> "GPT2Config":
    """``GPT2Config`` of the stdlib LM (no dropout: the model is small and data-limited runs
    are short; eager attention so the bridge and HF compute attention the same way)."""
    from transformers import GPT2Config

    a = STDLIB_LM_ARCH
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=a["n_ctx"],
        n_embd=a["d_model"],
        n_layer=a["n_layers"],
        n_head=a["n_heads"],
        n_inner=a["d_mlp"],
        activation_function=a["act_fn"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def _asset_dir(path: str | Path | None, need: Sequence[str]) -> Path:
    path = STDLIB_LM_DIR if path is None else Path(path)
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"stdlib LM files {missing} not found in {path}. The committed assets live in "
            f"{STDLIB_LM_DIR}; rebuild them with `python scripts/train_stdlib_lm.py`."
        )
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the deprecation / info chatter of TransformerLens 3.9 and transformers while
    loading (HookedTransformer warns on every construction; the bridge logs config mapping)."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(n) for n in ("transformer_lens", "transformers", "root")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()  # "Loading weights" bars for a 28-tensor model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_stdlib_hf_model(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> "GPT2LMHeadModel":
    """The Hugging Face ``GPT2LMHeadModel`` in fp32 eval mode (weights are stored in fp16)."""
    from transformers import GPT2LMHeadModel

    path = _asset_dir(path, need=("config.json", "model.safetensors"))
    with _quiet():
        model = GPT2LMHeadModel.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation="eager"
        )
    return model.to(device).eval()


def stdlib_hooked_config(
    hf_config: "GPT2Config", device: str | torch.device = "cpu"
) -> "HookedTransformerConfig":
    """``HookedTransformerConfig`` matching a GPT-2 config, built locally.

    ``HookedTransformer.from_pretrained(..., hf_model=...)`` would fetch the hub config for the
    model name, so it cannot load this model offline; this mirrors what TransformerLens's
    GPT-2 config conversion produces for the fields this architecture uses.
    """
    from transformer_lens.config import HookedTransformerConfig

    act_fn = hf_config.activation_function
    with _quiet():
        return HookedTransformerConfig(
            n_layers=hf_config.n_layer,
            d_model=hf_config.n_embd,
            n_heads=hf_config.n_head,
            d_head=hf_config.n_embd // hf_config.n_head,
            d_mlp=hf_config.n_inner or 4 * hf_config.n_embd,
            n_ctx=hf_config.n_positions,
            d_vocab=hf_config.vocab_size,
            act_fn=act_fn,
            eps=hf_config.layer_norm_epsilon,
            normalization_type="LN",
            positional_embedding_type="standard",
            attn_only=False,
            scale_attn_by_inverse_layer_idx=hf_config.scale_attn_by_inverse_layer_idx,
            original_architecture="GPT2LMHeadModel",
            tokenizer_name=None,
            model_name=STDLIB_LM_NAME,
            default_prepend_bos=True,
            device=str(device),
        )


def _load_hooked(path: Path, device: str | torch.device) -> "HookedTransformer":
    from transformer_lens import HookedTransformer
    from gba_lens.compat import convert_gpt2_weights

    hf_model = load_stdlib_hf_model(path, device="cpu")
    cfg = stdlib_hooked_config(hf_model.config, device=device)
    state_dict = convert_gpt2_weights(hf_model, cfg)
    with _quiet():
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
        # No folding/centring: keeps activations equal to the HF model's and the bridge's,
        # so an SAE trained on one kind applies to the other.
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
        model.set_tokenizer(load_stdlib_tokenizer(path), default_padding_side="right")
    return model.to(device, print_details=False).eval()


def _load_bridge(path: Path, device: str | torch.device) -> "TransformerBridge":
    from transformer_lens.model_bridge import TransformerBridge

    _asset_dir(path, need=("config.json", "model.safetensors", "tokenizer.json"))
    with _quiet():
        bridge = TransformerBridge.boot_transformers(
            str(path),
            device=device,
            dtype=torch.float32,
            tokenizer=load_stdlib_tokenizer(path),
        )
    bridge.cfg.model_name = STDLIB_LM_NAME
    # TransformerLens 3.9's bridge does not fill the Hugging Face KV cache for GPT-2 (its cache
    # layers stay empty), so cached generate() steps attend to the new token only and produce
    # garbage. Turn caching off for this instance through the adapter's own switch: at n_ctx
    # 128 recomputing the prefix costs nothing.
    bridge.adapter.supports_kv_cache = False
    return bridge.eval()


def load_stdlib_lm(
    kind: Kind = "hooked",
    device: str | torch.device = "cpu",
    path: str | Path | None = None,
) -> "HookedTransformer | TransformerBridge | GPT2LMHeadModel":
    """Load the stdlib LM offline.

    Args:
        kind: ``"hooked"`` (TransformerLens ``HookedTransformer``, deprecated upstream in 3.9 but
            what SAELens 6 uses), ``"bridge"`` (``TransformerBridge``, the path into
            TransformerLens 4) or ``"hf"`` (``GPT2LMHeadModel``).
        device: torch device for the model.
        path: asset directory; defaults to the committed :data:`STDLIB_LM_DIR`.

    All kinds compute in fp32 and give the same logits to float tolerance. Weights are not
    folded or centred, so hook activations also agree between ``"hooked"`` and ``"bridge"``.
    """
    path = _asset_dir(path, need=("config.json", "model.safetensors", "tokenizer.json"))
    if kind == "hooked":
        return _load_hooked(path, device)
    if kind == "bridge":
        return _load_bridge(path, device)
    if kind == "hf":
        return load_stdlib_hf_model(path, device)
    raise ValueError(f"kind must be 'hooked', 'bridge' or 'hf', got {kind!r}")


def load_training_info(path: str | Path | None = None) -> dict[str, Any]:
    """Contents of ``training_info.json`` (validation loss, unigram baseline, settings)."""
    path = _asset_dir(path, need=("training_info.json",))
    return json.loads((path / "training_info.json").read_text())
