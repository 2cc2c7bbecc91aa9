"""Vision datasets: SVHN, TinyImageNet, ImageNet, the offline CIFAR-10 JPEG subset and scikit-learn's digits.

In-memory sets hold images as uint8 ``[N, C, H, W]`` in an :class:`ExampleData` whose ``transform``
(:class:`Normalize`) turns a batch into normalised float32, so 100k TinyImageNet images take 1.2 GB, not 4.9.
ImageNet stays on disk and is read by :class:`ImageFolderData` through a DataLoader.

Every loader takes ``train_per_class`` / ``test_per_class`` (keep the first n examples of each class, in
stored order) and the in-memory ones ``num_classes`` (keep the first n classes): deterministic subsets for
the ``cpu``/``smoke`` profiles. Normalisation follows the paper:
SVHN mean = std = 0.5 (Appendix D.2), TinyImageNet and ImageNet the ImageNet mean/std (D.1, C.2).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from .sources import ExampleData
from ..store import atomic_write
from .base import SOURCES, TaskData, cache_folder, fingerprint, require

SVHN_URL = SOURCES["svhn"].url
TINYIMAGENET_URL = SOURCES["tinyimagenet"].url
IMAGENET_SOURCE = SOURCES["imagenet"].url
CIFAR_URL = SOURCES["cifar10_subset"].url
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
HALF = (0.5, 0.5, 0.5)


class Normalize:
    """uint8 images ``[B, C, H, W]`` -> float32 ``(x / scale - mean) / std`` per channel."""

    def __init__(self, mean, std, scale: float = 255.0):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = scale
        self._on = {self.mean.device: (self.mean, self.std)}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._on:  # data on a GPU: the constants follow it once
            self._on[x.device] = (self.mean.to(x.device), self.std.to(x.device))
        mean, std = self._on[x.device]
        return (x.float() / self.scale - mean) / std


class RandAugmentBatch:
    """torchvision v2 ``RandAugment()`` with its defaults (2 ops, magnitude 9) on each uint8 image of a batch.

    torchvision draws from the global torch RNG, which :func:`kdlib.engine.train.train` seeds from the data-order
    seed, so runs stay reproducible; the ``generator`` of the augment protocol is therefore not used.
    """

    def __init__(self):
        self.op = v2.RandAugment()

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([self.op(img) for img in x])


def first_per_class(labels: np.ndarray, n: int | None) -> np.ndarray:
    """Indices of the first ``n`` examples of each class, in stored order (all indices if ``n`` is None)."""
    labels = np.asarray(labels)
    if n is None:
        return np.arange(len(labels))
    if n < 1:
        raise ValueError(f"per-class subset size must be a positive integer or None, got {n}")
    keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)])
    return np.sort(keep)


def image_task(train: tuple, test: tuple, classes: list[str], normalize: Normalize, train_per_class=None,
               test_per_class=None, num_classes: int | None = None, augment: Callable | None = None) -> TaskData:
    """TaskData of uint8 images: ``train``/``test`` are ``(x [N,C,H,W] uint8, y [N])`` numpy arrays.

    ``num_classes`` keeps only the first classes; ``*_per_class`` the first examples of each class.
    """
    if num_classes is not None:
        if not 1 <= num_classes <= len(classes):
            raise ValueError(f"num_classes must lie in [1, {len(classes)}], got {num_classes}")
        classes = classes[:num_classes]
    sources = []
    for (x, y), n in ((train, train_per_class), (test, test_per_class)):
        keep = first_per_class(y, n)
        keep = keep[np.asarray(y)[keep] < len(classes)]
        if len(keep) < len(y):
            x, y = x[keep], y[keep]
        x = torch.from_numpy(np.ascontiguousarray(x))
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        sources.append(ExampleData(x, torch.as_tensor(np.asarray(y), dtype=torch.long), transform=normalize))
    sources[0].augment = augment
    c, h, w = sources[0].x.shape[1:]
    return TaskData(train=sources[0], test=sources[1], num_classes=len(classes), classes=list(classes),
                    extra={"in_channels": c, "image_size": h, "mean": normalize.mean.flatten().tolist(),
                           "std": normalize.std.flatten().tolist()})


def decode_images(files: list, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode image files (paths or bytes) to uint8 ``[N, 3, H, W]`` RGB, on all cores."""
    def one(f):
        with Image.open(io.BytesIO(f) if isinstance(f, bytes) else f) as im:
            a = np.asarray(im.convert("RGB"))
        if size is not None and a.shape[:2] != size:
            raise ValueError(f"image {f if not isinstance(f, bytes) else '<bytes>'} is {a.shape[:2]}, expected {size}")
        return a
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        images = list(pool.map(one, files))
    return np.stack(images).transpose(0, 3, 1, 2) if images else np.zeros((0, 3, *(size or (0, 0))), np.uint8)


_MEMO: dict = {}


def cached_arrays(cache: Path, fingerprint: str, build: Callable[[], dict]) -> dict[str, np.ndarray]:
    """Arrays from this process's memo, else from the ``.npz`` file ``cache`` when its fingerprint matches,
    else ``build()`` them (and save them to ``cache`` if its folder is writable): decoding happens once."""
    key = (str(cache), fingerprint)
    if key not in _MEMO:
        arrays = None
        try:
            with np.load(cache) as f:
                if str(f["fingerprint"]) == fingerprint:
                    arrays = {k: f[k] for k in f.files if k != "fingerprint"}
        except (OSError, KeyError, ValueError):
            pass
        if arrays is None:
            arrays = build()
            try:
                atomic_write(cache, lambda f: np.savez(f, fingerprint=np.array(fingerprint), **arrays))
            except OSError:  # read-only folder: keep the in-process copy only
                pass
        _MEMO[key] = arrays
    return _MEMO[key]


# ----------------------------------------------------------------------------- SVHN

def load_svhn(root: Path, train_per_class: int | None = None, test_per_class: int | None = None,
              num_classes: int | None = None) -> TaskData:
    """SVHN cropped digits (train 73,257 / test 26,032, 32x32 RGB) from torchvision's ``{split}_32x32.mat``.

    The .mat files hold ``X`` [32, 32, 3, N] uint8 and ``y`` [N, 1] with label 10 for the digit 0.
    """
    from scipy.io import loadmat
    splits = []
    for split in ("train", "test"):
        name = f"{split}_32x32.mat"
        mat = loadmat(require(Path(root) / name, f"SVHN {split} split ({name})", SVHN_URL, url=SVHN_URL + name))
        splits.append((mat["X"].transpose(3, 2, 0, 1), mat["y"].reshape(-1).astype(np.int64) % 10))
    return image_task(*splits, [str(d) for d in range(10)], Normalize(HALF, HALF), train_per_class, test_per_class,
                      num_classes)


# ----------------------------------------------------------------------------- TinyImageNet

def tinyimagenet_dir(root: Path) -> Path:
    """``root/tiny-imagenet-200``, extracted from ``tiny-imagenet-200.zip`` (downloaded if possible) if absent."""
    base = Path(root) / "tiny-imagenet-200"
    if not (base / "wnids.txt").exists():
        archive = require(Path(root) / "tiny-imagenet-200.zip", "TinyImageNet (tiny-imagenet-200/ or its zip)",
                          TINYIMAGENET_URL, url=TINYIMAGENET_URL)
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
        require(base / "wnids.txt", "TinyImageNet's wnids.txt", TINYIMAGENET_URL)
    return base


def _tinyimagenet_files(base: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    wnids = (base / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    val = []
    annotations = require(base / "val" / "val_annotations.txt", "TinyImageNet's val/val_annotations.txt",
                          TINYIMAGENET_URL)
    for line in annotations.read_text().splitlines():
        if line.strip():
            name, wnid = line.split("\t")[:2]
            if wnid not in index:
                raise ValueError(f"val_annotations.txt labels {name} with {wnid!r}, which is not in wnids.txt")
            val.append((base / "val" / "images" / name, index[wnid]))
    return wnids, train, sorted(val)


def load_tinyimagenet(root: Path, randaugment: bool = False, train_per_class: int | None = None,
                      test_per_class: int | None = None, num_classes: int | None = None) -> TaskData:
    """TinyImageNet (200 classes, 500 train / 50 val images each, 64x64 RGB); the val set is the test set.

    Decoded images are cached as ``tiny-imagenet-200/kdlib_decoded.npz`` (keyed by the file list). With
    ``randaugment`` every training batch goes through torchvision's default RandAugment (Appendix D.1).
    """
    base = tinyimagenet_dir(root)
    wnids, train, val = _tinyimagenet_files(base)
    names = [str(p.relative_to(base)) for p, _ in train + val]
    fingerprint = hashlib.sha1("\n".join(wnids + names).encode()).hexdigest()

    def build():
        return {"train_x": decode_images([p for p, _ in train], (64, 64)),
                "test_x": decode_images([p for p, _ in val], (64, 64))}
    arrays = cached_arrays(base / "kdlib_decoded.npz", fingerprint, build)
    words = base / "words.txt"
    names_of = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line) \
        if words.exists() else {}
    classes = [names_of.get(w, w) for w in wnids]
    return image_task((arrays["train_x"], np.array([y for _, y in train], dtype=np.int64)),
                      (arrays["test_x"], np.array([y for _, y in val], dtype=np.int64)),
                      classes, Normalize(IMAGENET_MEAN, IMAGENET_STD), train_per_class, test_per_class, num_classes,
                      augment=RandAugmentBatch() if randaugment else None)


# ----------------------------------------------------------------------------- CIFAR-10 JPEG subset

def _cifar_split(path: Path, split: str, per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Decoded ``split`` of the JPEG subset (only the kept images). Decoding all of it takes ~4 s, so the
    arrays are cached in the cache folder (:func:`kdlib.data.cache_folder`), keyed by the file's identity:
    every worker process of a launcher then loads them in a fraction of a second."""
    key = json.dumps([*fingerprint(path), split, per_class])

    def build():
        with np.load(path) as f:
            jpeg, offsets, labels = f[f"{split}_jpeg"], f[f"{split}_offsets"], f[f"{split}_labels"].astype(np.int64)
        keep = first_per_class(labels, per_class)
        return {"x": decode_images([jpeg[offsets[i]:offsets[i + 1]].tobytes() for i in keep], (32, 32)),
                "y": labels[keep]}
    name = hashlib.sha1(key.encode()).hexdigest()[:16]
    arrays = cached_arrays(cache_folder() / f"cifar10_subset-{split}-{name}.npz", key, build)
    return arrays["x"], arrays["y"]


def load_cifar10_subset(root: Path, train_per_class: int | None = None, test_per_class: int | None = None,
                        num_classes: int | None = None) -> TaskData:
    """CIFAR-10 as JPEGs (train 1,000 per class, the full 10,000 test set), from ``cifar10_jpeg_subset.npz``."""
    path = require(Path(root) / "cifar10_jpeg_subset.npz", "CIFAR-10 JPEG subset (cifar10_jpeg_subset.npz)",
                   f"the CIFAR-10 images ({CIFAR_URL}): the file holds 1,000 training images per class and the "
                   "test set as JPEG bytes (quality 75) with keys {train,test}_{jpeg,offsets,labels}, classes")
    with np.load(path) as f:
        classes = [str(c) for c in f["classes"]]
    return image_task(_cifar_split(path, "train", train_per_class), _cifar_split(path, "test", test_per_class),
                      classes, Normalize(CIFAR_MEAN, CIFAR_STD), num_classes=num_classes)


# ----------------------------------------------------------------------------- digits

def load_digits(root: Path | None = None, train_per_class: int | None = None, test_per_class: int | None = None,
                num_classes: int | None = None) -> TaskData:
    """scikit-learn's 8x8 digits (1,797 images, 16 grey levels), stratified 80/20 split with random_state 0."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split
    d = sk_digits()
    x = d.images.astype(np.uint8)[:, None]  # values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.2, stratify=d.target, random_state=0)
    return image_task((x_tr, y_tr), (x_te, y_te), [str(c) for c in d.target_names],
                      Normalize((0.5,), (0.5,), scale=16.0), train_per_class, test_per_class, num_classes)


# ----------------------------------------------------------------------------- ImageNet

class _Folder(torch.utils.data.Dataset):
    """``(path, label)`` samples read with PIL and passed through ``transform``."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


class ImageFolderData:
    """Images read from disk in batches by a DataLoader: the ExampleData protocol for sets too big for memory.

    Evaluation (and training when ``random_crop`` is False, then ``fixed`` is True): resize the short side to
    ``size / crop_ratio`` and take the centre ``size`` crop (FFCV's ratio 224/256). Training with
    ``random_crop``: RandomResizedCrop and horizontal flip (Appendix C.2), at a resolution ramped linearly from
    ``size`` to ``final_size`` between the run fractions ``ramp`` and rounded to a multiple of 32 (FFCV's
    progressive resizing). Batches are bit-reproducible for a fixed ``num_workers``: the order comes from the
    trainer's generator, which also seeds the DataLoader's workers (with 0 workers, crops draw from the
    global RNG that the trainer seeds). ``drop_last``: training drops each epoch's last partial batch (FFCV's
    train loader does).
    """

    def __init__(self, samples: list[tuple[str, int]], normalize: Normalize, size: int, random_crop: bool = False,
                 final_size: int | None = None, ramp: tuple[float, float] = (0.0, 0.0), crop_ratio: float = 0.875,
                 num_workers: int = 0, drop_last: bool = False):
        self.samples, self.normalize, self.size, self.random_crop = samples, normalize, size, random_crop
        self.final_size, self.ramp, self.crop_ratio = final_size or size, ramp, crop_ratio
        self.num_workers, self.drop_last = num_workers, drop_last

    @property
    def fixed(self) -> bool:
        return not self.random_crop

    def __len__(self) -> int:
        return len(self.samples)

    def resolution(self, fraction: float) -> int:
        """Training resolution at ``fraction`` of the run (FFCV ``get_resolution`` with epochs as fractions)."""
        start, end = self.ramp
        if fraction <= start or self.final_size == self.size:
            return self.size
        if fraction >= end:
            return self.final_size
        return int(np.round(np.interp(fraction, [start, end], [self.size, self.final_size]) / 32)) * 32

    def _eval_transform(self) -> Callable:
        return v2.Compose([v2.Resize(round(self.size / self.crop_ratio), antialias=True), v2.CenterCrop(self.size),
                           v2.PILToTensor()])

    def _loader(self, transform: Callable, order, batch_size: int, generator: torch.Generator,
                drop_last: bool = False):
        return torch.utils.data.DataLoader(_Folder(self.samples, transform), batch_size=batch_size, sampler=order,
                                           num_workers=self.num_workers, generator=generator, drop_last=drop_last)

    def batches(self, batch_size: int, steps: int, generator: torch.Generator) -> Iterator:
        per_epoch = len(self) // batch_size if self.drop_last else math.ceil(len(self) / batch_size)
        epochs = steps / per_epoch
        step = 0
        for epoch in range(math.ceil(epochs)):
            order = torch.randperm(len(self), generator=generator)
            if self.random_crop:
                transform = v2.Compose([v2.RandomResizedCrop(self.resolution(epoch / epochs), antialias=True),
                                        v2.RandomHorizontalFlip(), v2.PILToTensor()])
            else:
                transform = self._eval_transform()
            for i, (x, y) in enumerate(self._loader(transform, order.tolist(), batch_size, generator,
                                                    self.drop_last)):
                idx = None if self.random_crop else order[i * batch_size:(i + 1) * batch_size]
                yield idx, self.normalize(x), y
                step += 1
                if step == steps:
                    return

    def eval_batches(self, batch_size: int) -> Iterator:
        # a generator of its own: the DataLoader draws a worker seed from it, never from the global RNG
        for x, y in self._loader(self._eval_transform(), range(len(self)), batch_size, torch.Generator()):
            yield self.normalize(x), y


def _imagenet_split(base: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples and class names of ``split``: torchvision's ImageNet if its devkit/meta.bin is there, else an
    ImageFolder tree ``base/split/<wnid>/*.JPEG`` (both index classes by sorted wnid, as torchvision's weights)."""
    from torchvision.datasets import ImageFolder, ImageNet
    if (base / "meta.bin").exists() or (base / "ILSVRC2012_devkit_t12.tar.gz").exists():
        ds = ImageNet(str(base), split=split)
        return ds.samples, [names[0] for names in ds.classes]
    ds = ImageFolder(str(require(base / split, f"ImageNet {split} images ({split}/<wnid>/*.JPEG)", IMAGENET_SOURCE)))
    return ds.samples, ds.classes


def load_imagenet(root: Path, resolution: int = 160, final_resolution: int | None = None,
                  ramp: tuple[float, float] = (0.0, 0.0), eval_resolution: int = 256, random_crop: bool = True,
                  train_per_class: int | None = None, test_per_class: int | None = None,
                  num_workers: int = 0, drop_last: bool = False) -> TaskData:
    """ImageNet-1k from ``root/imagenet`` (train 1,281,167 / val 50,000); the val set is the test set.

    Training images: RandomResizedCrop at ``resolution`` (ramped to ``final_resolution``, see
    :class:`ImageFolderData`) and flips, or with ``random_crop=False`` the fixed centre crop at ``resolution``;
    ``drop_last`` drops each epoch's last partial batch. Test images: centre crop at ``eval_resolution`` (FFCV's
    validation: 256 from a 292 resize).
    """
    base = Path(root) / "imagenet"
    (train, classes), (test, test_classes) = _imagenet_split(base, "train"), _imagenet_split(base, "val")
    if classes != test_classes:
        raise ValueError(f"ImageNet train and val folders hold different classes ({len(classes)} vs "
                         f"{len(test_classes)}): every class needs a folder in both")
    train = [train[i] for i in first_per_class([y for _, y in train], train_per_class)]
    test = [test[i] for i in first_per_class([y for _, y in test], test_per_class)]
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    return TaskData(
        train=ImageFolderData(train, normalize, resolution, random_crop, final_resolution, tuple(ramp),
                              num_workers=num_workers, drop_last=drop_last),
        test=ImageFolderData(test, normalize, eval_resolution, num_workers=num_workers),
        num_classes=len(classes), classes=classes,
        extra={"in_channels": 3, "image_size": eval_resolution, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
