"""Datasets of the study: one module per modality, each loader returning a :class:`TaskData`.

Loaders read user-downloaded copies from the data folder (``--data-dir``, else ``$KDLIB_DATA_DIR``, else
``data/``), download where a user has internet and the source allows it, and otherwise fail with a
:class:`DatasetMissing` error naming the expected path and where to get the data.

A data source (``TaskData.train`` / ``.test``) follows one small protocol, implemented by
:class:`kdlib.data.sources.ExampleData` (in-memory tensors) and :class:`~kdlib.data.sources.WindowData` (token streams):
``fixed`` (bool: same inputs every epoch, so teacher logits may be cached), ``batches(batch_size, steps,
generator)`` yielding ``(index | None, x, y)`` and ``eval_batches(batch_size)`` yielding ``(x, y)`` in a fixed order.
"""
from __future__ import annotations

import os

from .base import (DEFAULT_DATA_DIR, SOURCES, DatasetMissing, Source, TaskData, cache_folder, data_dir,  # noqa: F401
                   download, fingerprint, loader, register, require)


def check(name: str, root: str | os.PathLike | None = None) -> None:
    """Raise :class:`DatasetMissing` now, before any worker starts, if the dataset ``name`` cannot load from the data
    folder ``root``: the folder is missing, or a file is, and the loader cannot download it (offline, or a
    dataset that does not download itself). Cheap: it only looks at files."""
    source, folder = SOURCES[name], data_dir(root)
    if source.files and not folder.is_dir():  # never create (or download into) a mistyped folder
        raise DatasetMissing(f"data folder {folder.resolve()} does not exist: point --data-dir / KDLIB_DATA_DIR at "
                             f"the folder that holds the datasets (see data/README.md)")
    missing = source.missing(folder)
    if missing and not source.downloads_now():
        reason = "downloads are disabled (KDLIB_OFFLINE=1)" if source.downloads else "no download is possible"
        raise DatasetMissing(f"{name} not found: expected {', '.join(str((folder / f).resolve()) for f in missing)}; "
                             f"{reason}. Get it from {source.url} and put it there, or point --data-dir / "
                             f"KDLIB_DATA_DIR at the folder that holds it.")


def load(name: str, root: str | os.PathLike | None = None, **kwargs) -> TaskData:
    """Load the dataset ``name`` from the data folder ``root`` (see :func:`data_dir`)."""
    load_data = loader(name)  # an unknown name raises here, with the known ones
    folder = data_dir(root)
    if SOURCES[name].files and not folder.is_dir():
        check(name, folder)
    return load_data(folder, **kwargs)
