"""Deprecated location: the synthetic experiments live in :mod:`gba_lens.experiments`.

Re-exported here for one release so that ``from gba_lens.synthetic.experiments import ...`` keeps
working; new code imports from :mod:`gba_lens.experiments` (one module per experiment, the job
runner in :mod:`gba_lens.experiments.runner`). Result rows are now typed
(:class:`~gba_lens.experiments.results.MethodSummary`; ``as_row()`` gives the old dict).
"""

from gba_lens.experiments import *  # noqa: F401,F403
from gba_lens.experiments import __all__  # noqa: F401
from gba_lens.experiments.runner import STREAMS_KEPT  # noqa: F401
