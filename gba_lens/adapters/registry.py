"""Make an SAE's hook points hook points *of the model*, and undo that exactly.

Two model families, one idea: the splice's HookPoints become child modules of the model's
HookPoint they splice (so ``named_modules`` shows them at ``f"{hook_name}.{suffix}"``), and the
model's hook dictionary is refreshed:

* HookedRootModule (``HookedTransformer``, ``HookedSAETransformer``): ``hook_dict`` is built from
  ``named_modules()`` by ``model.setup()``, the public way to refresh it (SAELens's
  HookedSAETransformer does the same after splicing).
* ``TransformerBridge``: ``hook_dict`` is a property computed from the private
  ``_hook_registry`` plus aliases, and the bridge has no public call to register a new hook
  point, so entries are added to ``_hook_registry`` directly (SAELens's SAETransformerBridge does
  the same). Each SAE hook point is entered under the canonical compound name (its
  ``HookPoint.name``, e.g. ``blocks.0.hook_out.hook_sae_acts_post``) and under every alias of the
  spliced hook (``blocks.0.hook_resid_post.hook_sae_acts_post``), so the bridge's own
  alias -> canonical resolution in ``run_with_hooks`` / ``run_with_cache`` handles both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from gba_lens.adapters.hooks import is_bridge
from gba_lens.compat import HookPoint


@dataclass
class _Entry:
    parent: HookPoint
    children: dict[str, HookPoint]
    registry_keys: list[str] = field(default_factory=list)
    old_names: dict[int, str | None] = field(default_factory=dict)


class HookRegistry:
    """Adds child hook points under a model hook point and removes them again.

    Call :meth:`add` for each spliced hook point, then :meth:`refresh`; :meth:`remove` each entry
    then :meth:`refresh` to undo. ``remove`` only deletes what ``add`` put there.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.bridge = is_bridge(model)
        if self.bridge and not isinstance(getattr(model, "_hook_registry", None), dict):
            raise TypeError(
                "This TransformerBridge has no `_hook_registry` dict; gba_lens.attach supports "
                "the TransformerLens 3.x bridge."
            )

    def add(
        self, parent: HookPoint, names: list[str], children: dict[str, HookPoint]
    ) -> _Entry:
        """Register ``children`` (suffix -> HookPoint) below ``parent``, known as ``names``.

        ``names`` are all hook_dict names of ``parent``, canonical (``parent.name``) first.
        """
        entry = _Entry(parent=parent, children=dict(children))
        for child in children.values():
            entry.old_names[id(child)] = child.name
        try:
            for suffix, child in children.items():
                if suffix in parent._modules:
                    raise ValueError(
                        f"Hook point {parent.name!r} already has a child {suffix!r}: is another "
                        "SAE attached there?"
                    )
                parent.add_module(suffix, child)
            if self.bridge:
                registry: dict[str, HookPoint] = self.model._hook_registry  # type: ignore
                canonical = parent.name or names[0]
                for suffix, child in children.items():
                    child.name = f"{canonical}.{suffix}"
                    for name in [canonical, *[n for n in names if n != canonical]]:
                        key = f"{name}.{suffix}"
                        if key in registry:
                            raise ValueError(f"Hook name {key!r} is already registered.")
                        registry[key] = child
                        entry.registry_keys.append(key)
        except Exception:
            self.remove(entry)
            raise
        return entry

    def remove(self, entry: _Entry) -> None:
        """Undo :meth:`add` for one entry (idempotent)."""
        for suffix, child in entry.children.items():
            if entry.parent._modules.get(suffix) is child:
                del entry.parent._modules[suffix]
        if self.bridge:
            registry: dict[str, HookPoint] = self.model._hook_registry  # type: ignore[assignment]
            for key in entry.registry_keys:
                if registry.get(key) is entry.children.get(key.rsplit(".", 1)[-1]):
                    del registry[key]
            entry.registry_keys.clear()
        for child in entry.children.values():
            if id(child) in entry.old_names:
                child.name = entry.old_names[id(child)]

    def refresh(self) -> None:
        """Rebuild the model's hook dictionary after adds/removes (HookedRootModule only)."""
        if not self.bridge:
            self.model.setup()  # type: ignore[operator]
