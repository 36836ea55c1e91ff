"""Where labeling runs: this process (``local``) or a Ray cluster (``ray``); never what it writes.

Both implement :class:`autolabel.engines.base.Engine`; :func:`make_engine` picks one by name
(Ray is imported only for ``ray``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# Engine name -> (module, class); the module is imported when the engine is used.
ENGINES = {"local": ("autolabel.engines.local", "LocalEngine"), "ray": ("autolabel.engines.ray_engine", "RayEngine")}


def make_engine(config, labeler_factory: Callable):
    """The engine ``config.engine.name`` names, ready to be entered (``with engine: ...``)."""
    module, cls = ENGINES[config.engine.name]
    return getattr(importlib.import_module(module), cls)(config, labeler_factory)
