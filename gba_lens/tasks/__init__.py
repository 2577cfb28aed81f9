"""Tasks: prompt sets with their answers and positions (torch only; no model, SAE or training code).

* :mod:`gba_lens.tasks.ioi` - indirect object identification prompt sets
  (:func:`~gba_lens.tasks.ioi.make_ioi_prompts`, :class:`~gba_lens.tasks.ioi.IOIPromptSet`).
"""

from gba_lens.tasks.ioi import IOIPromptSet, make_ioi_prompts

__all__ = ["IOIPromptSet", "make_ioi_prompts"]
