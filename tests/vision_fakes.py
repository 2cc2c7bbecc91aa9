"""Tiny fake copies of the vision datasets in their real on-disk formats, for tests and CI smoke runs.

``build_fake_vision_root(root)`` writes all four under ``root`` (the ``--data-dir`` of a smoke run):
SVHN's ``{train,test}_32x32.mat``, ``tiny-imagenet-200/``, an ImageFolder ``imagenet/{train,val}/`` tree and
``cifar10_jpeg_subset.npz``. Each writer returns what it wrote, so tests can check loaders against it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def write_fake_svhn(root: Path, n_train: int = 30, n_test: int = 20) -> dict:
    """``{split}_32x32.mat`` with ``X`` [32, 32, 3, N] uint8 and ``y`` [N, 1] in 1..10 (10 = digit 0)."""
    from scipy.io import savemat
    written = {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        X = _rng(seed).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]  # every label 1..10 occurs
        savemat(Path(root) / f"{split}_32x32.mat", {"X": X, "y": y})
        written[split] = (X, y)
    return written


def write_fake_tinyimagenet(root: Path, n_classes: int = 4, per_class: int = 3, n_val: int = 8) -> dict:
    """``tiny-imagenet-200/`` with wnids.txt, words.txt, train/<wnid>/images/*.JPEG and val/ with annotations.

    One training image is greyscale (TinyImageNet has some). Val labels are a shuffled assignment, so only
    ``val_annotations.txt`` tells them.
    """
    base = Path(root) / "tiny-imagenet-200"
    rng = _rng(2)
    wnids = [f"n{i:08d}" for i in range(n_classes)]
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)) + "n99999999\tother\n")
    for c, w in enumerate(wnids):
        for j in range(per_class):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            _jpeg(base / "train" / w / "images" / f"{w}_{j}.JPEG", image[..., 0] if (c, j) == (1, 0) else image)
    val_labels = rng.permutation(np.arange(n_val) % n_classes)
    lines = []
    for i, c in enumerate(val_labels):
        _jpeg(base / "val" / "images" / f"val_{i}.JPEG", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        lines.append(f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"wnids": wnids, "val_labels": val_labels.tolist()}


def write_fake_imagenet(root: Path, n_classes: int = 3, n_train: int = 4, n_val: int = 2) -> dict:
    """ImageFolder tree ``imagenet/{train,val}/<wnid>/*.JPEG`` of non-square images of varied sizes."""
    rng = _rng(3)
    wnids = [f"n{i:08d}" for i in range(n_classes)]
    for split, n in (("train", n_train), ("val", n_val)):
        for w in wnids:
            for j in range(n):
                h, wd = rng.integers(70, 130, 2)
                _jpeg(Path(root) / "imagenet" / split / w / f"{w}_{j}.JPEG",
                      rng.integers(0, 256, (h, wd, 3), dtype=np.uint8))
    return {"wnids": wnids}


def write_fake_cifar_subset(root: Path, train_per_class: int = 6, test_per_class: int = 3) -> dict:
    """``cifar10_jpeg_subset.npz`` as /work/shared/data/README.md documents it: JPEG bytes, offsets, labels."""
    rng = _rng(4)
    arrays, written = {"classes": np.array([f"class{c}" for c in range(10)])}, {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(10), per_class)
        blobs = []
        for _ in labels:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=75)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        arrays[f"{split}_jpeg"] = np.concatenate(blobs)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
        arrays[f"{split}_file_index"] = np.arange(len(labels), dtype=np.int64)
        written[split] = (blobs, labels)
    np.savez(Path(root) / "cifar10_jpeg_subset.npz", **arrays)
    return written


def build_fake_vision_root(root: Path) -> Path:
    """Write fake SVHN, TinyImageNet, ImageNet (ImageFolder) and CIFAR-subset files under ``root``; return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_fake_svhn(root)
    write_fake_tinyimagenet(root)
    write_fake_imagenet(root)
    write_fake_cifar_subset(root)
    return root
