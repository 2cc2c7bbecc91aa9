"""What the study notebooks call (``from kdlib import notebook as nb``): :mod:`.show` (run a setup, show its tables,
figures, scorecard and explorer), :mod:`.executed` (executed copies that open as they ran) and :mod:`.stored` (the
form tracked notebooks are saved in). The package itself imports nothing heavy, so that JupyterLab's server can load
the save hook of :mod:`.stored` without torch; ``nb.<name>`` loads :mod:`.show` on first use.
"""
from __future__ import annotations

import importlib


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.show"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(importlib.import_module(f"{__name__}.show"))))
