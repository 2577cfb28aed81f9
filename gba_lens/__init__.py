"""gba_lens: Group Bias Adaptation SAEs for SAELens and TransformerLens.

Importing gba_lens registers the ``"gba"`` training architecture with SAELens, so SAELens's own
trainer and runners build GBA SAEs from config. Trained GBA SAEs are saved as plain SAELens
``jumprelu`` (or ``standard``) SAEs: loading them needs SAELens only.
"""

__version__ = "0.1.0"

_LAZY = {
    # hook-point adapters (inference side: never imports training code)
    "attach": ("gba_lens.adapters", "attach"),
    "Attachment": ("gba_lens.adapters", "Attachment"),
    # training side
    "GBATrainingSAE": ("gba_lens.saes.gba", "GBATrainingSAE"),
    "GBATrainingSAEConfig": ("gba_lens.saes.gba", "GBATrainingSAEConfig"),
    "train_sae": ("gba_lens.training.train", "train_sae"),
    "TrainConfig": ("gba_lens.training.train", "TrainConfig"),
    "train_gba_on_model": ("gba_lens.training.lm", "train_gba_on_model"),
    "LMTrainConfig": ("gba_lens.training.lm", "LMTrainConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'gba_lens' has no attribute {name!r}")


def _register() -> None:
    # Registering is cheap and makes "gba" visible to SAELens's registry on `import gba_lens`.
    try:
        import gba_lens.saes.gba  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only during partial installs
        import warnings

        warnings.warn(f"gba_lens: could not register the 'gba' SAELens architecture: {exc}")


_register()
