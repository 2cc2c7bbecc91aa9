"""Your own data, without a fork: an image folder, or any factory named by import path.

- ``dataset = "imagefolder"`` with ``dataset_kwargs = {"path": ..., "image_size": 32}``: torchvision's ImageFolder
  layout, ``path/train/<class>/*`` and ``path/test/<class>/*`` (``path`` relative to the data folder, or absolute),
  decoded once, resized to ``image_size`` squares and normalised by the training images' channel means and
  standard deviations.
- ``dataset = "mypkg.data:load"`` (any import path): ``load(root, **dataset_kwargs)`` returns kdlib's
  :class:`~kdlib.data.base.TaskData`, or a ``(train, test)`` pair of torch ``Dataset``\\ s of ``(x, y)`` items.

Both are held in memory (:class:`~kdlib.data.sources.ExampleData`: fixed examples, so a teacher's logits are
computed once for all its students). Every process resolves an import path itself, so a launcher's workers need no
registration call.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np
import torch

from ..registry import resolve
from .base import Source, TaskData
from .sources import ExampleData


def from_datasets(train, test, classes: list[str] | None = None) -> TaskData:
    """TaskData of a ``(train, test)`` pair of map-style datasets of ``(x, y)`` items (tensors or numbers), stacked
    in memory; the classes are ``classes``, the datasets' own ``classes``, else the labels seen."""
    parts = []
    for name, dataset in (("train", train), ("test", test)):
        if len(dataset) == 0:
            raise ValueError(f"the {name} dataset is empty")
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
        parts.append((torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)))
    classes = classes or getattr(train, "classes", None) or [str(c) for c in range(int(parts[0][1].max()) + 1)]
    for name, (_, y) in zip(("train", "test"), parts):
        if int(y.min()) < 0 or int(y.max()) >= len(classes):
            raise ValueError(f"the {name} labels lie in [{int(y.min())}, {int(y.max())}], outside the "
                             f"{len(classes)} classes {list(classes)[:10]}")
    (x_train, y_train), (x_test, y_test) = parts
    return TaskData(ExampleData(x_train, y_train), ExampleData(x_test, y_test), len(classes), list(classes))


def load_imagefolder(root: Path, path: str, image_size: int = 32) -> TaskData:
    """An ImageFolder tree ``path/{train,test}/<class>/<image>`` as a task (see the module's docstring)."""
    from torchvision.datasets import ImageFolder
    from .vision import Normalize, decode_images, image_task
    base = Path(path) if Path(path).is_absolute() else Path(root) / path
    splits = {}
    for split in ("train", "test"):
        if not (base / split).is_dir():
            raise ValueError(f"image folder {base}: expected {base / split}/<class>/<images>, which does not exist")
        folder = ImageFolder(str(base / split))
        if split == "test" and folder.classes != splits["train"][2]:
            raise ValueError(f"image folder {base}: test classes {folder.classes} differ from the train classes "
                             f"{splits['train'][2]}")
        files = [f for f, _ in folder.samples]
        images = torch.from_numpy(decode_images(files))
        resized = torch.nn.functional.interpolate(images.float(), size=(image_size, image_size), mode="bilinear",
                                                  antialias=True, align_corners=False) if len(images) else images
        splits[split] = (resized.round().clamp(0, 255).to(torch.uint8).numpy(),
                         np.array([y for _, y in folder.samples]), folder.classes)
    train = splits["train"][0].astype(np.float64) / 255
    normalize = Normalize(train.mean((0, 2, 3)).tolist(), train.std((0, 2, 3)).clip(1e-6).tolist())
    return image_task(splits["train"][:2], splits["test"][:2], splits["train"][2], normalize)


def _load(make, root: Path, **kwargs) -> TaskData:
    """Your loader's task: what it returns, as kdlib's TaskData."""
    takes_root = next(iter(inspect.signature(make).parameters), None) is not None
    task = make(root, **kwargs) if takes_root else make(**kwargs)
    if isinstance(task, TaskData):
        return task
    if isinstance(task, (tuple, list)) and len(task) == 2:
        return from_datasets(*task)
    raise ValueError(f"dataset factory {make.__module__}:{make.__qualname__} returned {type(task).__name__}: "
                     f"return kdlib's TaskData or a (train, test) pair of torch Datasets")


def source_from_path(name: str) -> Source | None:
    """The dataset source an import path names (imported now, so a wrong path fails where it is named); None for
    a plain name."""
    if ":" not in name:
        return None
    return Source((), f"your own code ({name})", built_in=True, loader=functools.partial(_load, resolve(name)))
