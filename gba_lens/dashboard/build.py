"""``build(...)``: a feature dashboard for one SAE at one hook; ``show(...)``: view it in a notebook.

    from gba_lens.dashboard import build, show

    result = build("runs/gba_lm/blocks.1.hook_resid_pre", model, "blocks.1.hook_resid_pre",
                   tokens, "runs/dashboard")
    show(result)                    # the index, inline (Jupyter / Colab)
    show(result, feature=12)        # one feature page
    # or open runs/dashboard/index.html in a browser (file:// works)
"""

from __future__ import annotations

import datetime
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from gba_lens.adapters import Attachment
from gba_lens.adapters.hooks import model_device, resolve_hook_points
from gba_lens.dashboard.collect import FeatureStats
from gba_lens.dashboard.data import TokenStrings, feature_page, gba_groups, index_rows
from gba_lens.dashboard.logits import logit_effects, nearest_features
from gba_lens.dashboard.render import feature_filename, page_html, write_site
from gba_lens.dashboard.stream import TokensLike, collect

__all__ = ["DashboardResult", "build", "show", "load_sae"]


@dataclass
class DashboardResult:
    """What :func:`build` wrote and computed."""

    out_dir: Path
    index_path: Path
    stats: FeatureStats
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    pages: dict[int, dict[str, Any]] = field(repr=False)

    @property
    def features(self) -> list[int]:
        """Features that have a page."""
        return sorted(self.pages)


def load_sae(sae_or_dir: Any, device: torch.device | str = "cpu") -> tuple[Any, str | None]:
    """``(sae, directory)``: an SAE object as is, or ``SAE.load_from_disk`` of a directory."""
    from sae_lens import SAE

    if isinstance(sae_or_dir, SAE):
        return sae_or_dir, None
    path = Path(sae_or_dir).expanduser()
    if not (path / "cfg.json").is_file():
        inner = sorted(p.parent.name for p in path.glob("*/cfg.json")) if path.is_dir() else []
        hint = f"; SAE directories inside it: {inner}" if inner else ""
        raise FileNotFoundError(f"{path} is not an SAELens SAE directory (no cfg.json){hint}")
    return SAE.load_from_disk(str(path), device=str(device)), str(path)


def _check_features(features: Sequence[int] | None, d_sae: int) -> list[int] | None:
    if features is None:
        return None
    ids = [int(f) for f in features]
    bad = [f for f in ids if not 0 <= f < d_sae]
    if bad:
        raise ValueError(f"feature indices out of range for d_sae={d_sae}: {bad[:10]}")
    return sorted(set(ids))


def _steering_previews(
    model: nn.Module, sae: Any, hook: str, stats: FeatureStats, features: list[int],
    prompt: str, strength: float, new_tokens: int,
) -> tuple[str, dict[int, dict[str, Any]]]:
    from gba_lens.adapters import attach
    from gba_lens.circuits import Steer, generate_with_steering

    kwargs = {"do_sample": False, "verbose": False}
    previews: dict[int, dict[str, Any]] = {}
    with attach(model, {hook: sae}, error_term=True) as att:
        clean = generate_with_steering(att, prompt, [], max_new_tokens=new_tokens, **kwargs)
        for f in tqdm(features, desc="dashboard: steering previews"):
            coefficient = strength * float(stats.act_max[f])
            text = generate_with_steering(att, prompt, Steer(hook, f, coefficient), max_new_tokens=new_tokens, **kwargs)
            previews[f] = {"coefficient": coefficient, "text": text}
    return clean, previews


def build(
    sae_or_dir: Any,
    model: nn.Module,
    hook: str | None,
    tokens: TokensLike,
    out_dir: str | Path,
    *,
    features: Sequence[int] | None = None,
    max_tokens: int | None = None,
    batch_size: int = 32,
    top_k: int = 16,
    samples_per_band: int = 3,
    context_left: int = 12,
    context_right: int = 4,
    n_logits: int = 10,
    n_nearest: int = 8,
    dense_threshold: float = 0.1,
    exclude_tokens: Sequence[int] | None = None,
    steering_prompt: str | None = None,
    steering_strength: float = 4.0,
    steering_tokens: int = 16,
    steering_features: int = 32,
    model_name: str | None = None,
    progress: bool = True,
) -> DashboardResult:
    """Collect feature statistics over ``tokens`` and write the dashboard to ``out_dir``.

    Args:
        sae_or_dir: a ``sae_lens.SAE`` (any architecture), an SAELens SAE directory, or an
            :class:`~gba_lens.adapters.Attachment` (its SAE at ``hook`` is read where it is spliced).
        model: the TransformerLens model the SAE reads (``HookedTransformer`` or bridge).
        hook: hook point; None uses the SAE's ``cfg.metadata.hook_name``.
        tokens: ``[rows, pos]`` token ids, a ``datasets`` dataset with a ``tokens`` /
            ``input_ids`` column, or an iterable of rows.
        out_dir: output directory (``index.html``, ``feature_NNNNN.html``, ``dashboard.json``).
        features: features that get a page (default: every feature that fired); the index
            always lists all of them.
        max_tokens: stop the pass after this many tokens.
        steering_prompt: if given, each of the first ``steering_features`` pages gets a greedy
            continuation of this prompt with ``steering_strength x max activation x W_dec[f]``
            added at the hook (through :func:`gba_lens.circuits.generate_with_steering`).
        Other arguments: sizes of what is kept (see :class:`FeatureStats`), the number of logits
        and nearest features shown, and the frequency above which a feature is flagged dense.

    Raises ValueError (one line) for an unknown hook (with close names), an SAE whose ``d_in``
    does not match the hook, an empty dataset, or feature indices out of range.
    """
    attachment = sae_or_dir if isinstance(sae_or_dir, Attachment) else None
    if attachment is not None:
        if hook is None:
            if len(attachment.hook_names) != 1:
                raise ValueError(f"the attachment has SAEs at {attachment.hook_names}: pass hook=")
            hook = attachment.hook_names[0]
        try:
            sae_or_dir = attachment.splice(hook).sae
        except KeyError:
            raise ValueError(f"the attachment has no SAE at {hook!r}; it has {attachment.hook_names}") from None
    sae, sae_dir = load_sae(sae_or_dir, device=model_device(model))
    if hook is None:
        hook = getattr(sae.cfg.metadata, "hook_name", None)
        if not hook:
            raise ValueError("no hook given and the SAE's cfg.metadata has no hook_name")
    resolve_hook_points(model, [hook])
    d_sae = int(sae.cfg.d_sae)
    wanted = _check_features(features, d_sae)
    stats = collect(
        model, attachment or sae, hook, tokens, batch_size=batch_size, max_tokens=max_tokens, exclude_tokens=exclude_tokens,
        progress=progress, top_k=top_k, samples_per_band=samples_per_band,
        context_left=context_left, context_right=context_right,
    )
    stats_cpu = _to_cpu(stats)
    strings = TokenStrings(getattr(model, "tokenizer", None))
    groups = gba_groups(sae)
    effects = logit_effects(model, hook, sae, k=n_logits) if n_logits > 0 else None
    nearest = nearest_features(sae.W_dec, k=n_nearest) if n_nearest > 0 and d_sae > 1 else None
    group_freq = None
    if groups is not None:
        freq = stats_cpu.frequency
        group_freq = [float(freq[groups.group == k].mean()) for k in range(len(groups.targets))]
    rows = index_rows(stats_cpu, strings, groups, effects, dense_threshold)
    alive = [r["id"] for r in rows if not r["dead"]]
    page_ids = alive if wanted is None else wanted
    meta: dict[str, Any] = {
        "model": model_name or getattr(getattr(model, "cfg", None), "model_name", type(model).__name__),
        "hook": hook,
        "sae": {"architecture": sae.cfg.architecture(), "d_in": int(sae.cfg.d_in), "d_sae": d_sae, "path": sae_dir},
        "n_tokens": stats_cpu.n_tokens,
        "dense_threshold": dense_threshold,
        "gba": None if groups is None else {"targets": groups.targets, "group_freq": group_freq},
        "summary": {"alive": len(alive), "dead": d_sae - len(alive), "dense": sum(r["dense"] for r in rows)},
        "pages": page_ids,
        "steering": None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    previews: dict[int, dict[str, Any]] = {}
    if steering_prompt:
        steer_ids = [f for f in page_ids if stats_cpu.fire_count[f] > 0][:steering_features]
        try:
            clean, previews = _steering_previews(
                model, sae, hook, stats_cpu, steer_ids, steering_prompt, steering_strength, steering_tokens
            )
            meta["steering"] = {"prompt": steering_prompt, "clean": clean, "strength": steering_strength}
        except Exception as exc:  # noqa: BLE001 - a preview must not cost the dashboard
            warnings.warn(f"steering previews skipped: {exc}")
    pages = {}
    for f in tqdm(page_ids, desc="dashboard: pages", disable=not progress):
        page = feature_page(stats_cpu, f, strings, groups, effects, nearest, group_freq, dense_threshold, set(page_ids))
        if f in previews:
            page["steer"] = previews[f]
        pages[f] = page
    out = Path(out_dir)
    index = write_site(out, meta, rows, pages)
    return DashboardResult(out, index, stats_cpu, meta, rows, pages)


def _to_cpu(stats: FeatureStats) -> FeatureStats:
    if stats.device.type == "cpu":
        return stats
    for name, value in list(vars(stats).items()):
        if isinstance(value, torch.Tensor):
            setattr(stats, name, value.cpu())
    stats.device = torch.device("cpu")
    return stats


def bundle_html(result: DashboardResult | str | Path, max_features: int = 64, start: int | None = None) -> str:
    """One document holding the index and up to ``max_features`` feature pages (links switch
    views in place): what :func:`show` displays. ``start``: a feature to open first."""
    if isinstance(result, DashboardResult):
        meta, rows, out_dir = result.meta, result.rows, result.out_dir
        with_pages: list[int] = sorted(result.pages)
    else:
        out_dir = Path(result)
        if not (out_dir / "dashboard.json").is_file():
            raise FileNotFoundError(f"{out_dir} has no dashboard.json: not a gba_lens dashboard directory")
        saved = json.loads((out_dir / "dashboard.json").read_text())
        meta, rows, with_pages = saved["meta"], saved["index"], list(saved["meta"].get("pages", []))
    freq = {r["id"]: r["freq"] for r in rows}
    chosen = sorted(with_pages, key=lambda f: -freq.get(f, 0.0))[:max_features]
    if start is not None:
        if int(start) not in with_pages:
            raise ValueError(f"feature {start} has no page in this dashboard")
        chosen = list(dict.fromkeys([int(start), *chosen]))
    pages = {f: _page_data(result, out_dir, f) for f in chosen}
    data = {"kind": "bundle", "meta": meta, "index": rows, "features": {str(f): p for f, p in pages.items()}}
    if start is not None:
        data["start"] = int(start)
    return page_html(data, f"Features of {meta['hook']} ({out_dir})")


def _page_data(result: DashboardResult | str | Path, out_dir: Path, feature: int) -> dict[str, Any]:
    if isinstance(result, DashboardResult):
        return result.pages[feature]
    text = (out_dir / feature_filename(feature)).read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    return json.loads(text[start : text.index("</script>", start)])["feature"]


def show(result: DashboardResult | str | Path, feature: int | None = None, height: int = 640, max_features: int = 64) -> Any:
    """Display the dashboard inline in Jupyter / Colab (an iframe ``srcdoc``, since a notebook
    front end cannot open ``file://`` pages). ``feature`` opens that feature's page; feature
    links inside work for the ``max_features`` most frequent features with pages."""
    from IPython.display import HTML, display

    doc = bundle_html(result, max_features=max_features, start=feature)
    frame = f'<div><iframe style="width:100%;height:{height}px;border:1px solid #ccc" srcdoc="{_attr_escape(doc)}"></iframe></div>'
    handle = HTML(frame)
    display(handle)
    return handle


def _attr_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
