"""kdlib: the functional study of knowledge distillation (arXiv 2510.12615).

``__version__`` is the installed distribution's (pyproject.toml is its one source; an editable install reports the
version it was installed at, so ``pip install -e .`` again after a version change).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdlib")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
