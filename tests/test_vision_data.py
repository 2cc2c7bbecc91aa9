"""Vision loaders against tiny fake copies in the real on-disk formats (see tests/vision_fakes.py)."""
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlib.data import DatasetMissing, load
from kdlib.data import vision
from vision_fakes import write_fake_cifar_subset, write_fake_imagenet, write_fake_svhn, write_fake_tinyimagenet

REAL_CIFAR = Path("/work/shared/data/cifar10_jpeg_subset.npz")


@pytest.fixture(autouse=True)
def offline_and_fresh(monkeypatch):
    """Never download in tests, and forget decoded images between tests."""
    monkeypatch.setenv("KDLIB_OFFLINE", "1")
    monkeypatch.setattr(vision, "_MEMO", {})


def pil_rgb(source) -> np.ndarray:
    """Independent decode: PIL, RGB, as [3, H, W]."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def normalised(value, mean, std, scale=255.0):
    return (value / scale - mean) / std


def test_first_per_class_keeps_stored_order():
    labels = np.array([2, 0, 2, 1, 0, 2])
    assert vision.first_per_class(labels, 1).tolist() == [0, 1, 3]
    assert vision.first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4]
    assert vision.first_per_class(labels, None).tolist() == list(range(6))
    with pytest.raises(ValueError, match="positive"):
        vision.first_per_class(labels, 0)


def test_svhn_layout_labels_and_normalisation(tmp_path):
    written = write_fake_svhn(tmp_path)
    task = load("svhn", tmp_path)
    X, y = written["train"]
    assert task.num_classes == 10 and len(task.train) == X.shape[3] and len(task.test) == written["test"][0].shape[3]
    assert task.train.x.dtype == torch.uint8 and task.train.x.shape[1:] == (3, 32, 32)
    i = 7  # image i is X[:, :, :, i] (H, W, C)
    assert np.array_equal(task.train.x[i].numpy(), X[:, :, :, i].transpose(2, 0, 1))
    assert y[9, 0] == 10 and task.train.y[9] == 0  # label 10 is the digit 0
    assert task.train.y[:9].tolist() == list(range(1, 10))
    x, _ = next(task.train.eval_batches(4))
    assert x.dtype == torch.float32
    assert x[2, 1, 5, 6].item() == pytest.approx(normalised(float(X[5, 6, 1, 2]), 0.5, 0.5), abs=1e-6)
    assert len(load("svhn", tmp_path, train_per_class=2).train) == 20


def test_svhn_missing_names_path_and_source(tmp_path):
    with pytest.raises(DatasetMissing, match=r"train_32x32\.mat.*ufldl\.stanford\.edu/housenumbers"):
        load("svhn", tmp_path)


def test_tinyimagenet_labels_pixels_and_cache(tmp_path, monkeypatch):
    written = write_fake_tinyimagenet(tmp_path)
    base = tmp_path / "tiny-imagenet-200"
    task = load("tinyimagenet", tmp_path)
    assert task.num_classes == 4 and task.classes == ["thing 0", "thing 1", "thing 2", "thing 3"]
    assert len(task.train) == 12 and len(task.test) == 8
    assert task.test.y.tolist() == written["val_labels"]  # val_i, i = 0..7, labelled by val_annotations.txt
    assert task.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    grey = base / "train" / written["wnids"][1] / "images" / f"{written['wnids'][1]}_0.JPEG"
    assert np.array_equal(task.train.x[3].numpy(), pil_rgb(grey))
    assert np.array_equal(task.test.x[5].numpy(), pil_rgb(base / "val" / "images" / "val_5.JPEG"))
    x, _ = next(task.test.eval_batches(8))
    raw = float(task.test.x[5, 2, 10, 20])
    assert x[5, 2, 10, 20].item() == pytest.approx(normalised(raw, 0.406, 0.225), abs=1e-5)
    assert task.train.fixed

    assert (base / "kdlib_decoded.npz").exists()  # a second process reads the cache instead of decoding
    monkeypatch.setattr(vision, "_MEMO", {})
    monkeypatch.setattr(vision, "decode_images", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = load("tinyimagenet", tmp_path)
    assert torch.equal(again.train.x, task.train.x) and torch.equal(again.test.x, task.test.x)


def test_tinyimagenet_randaugment_is_reproducible_under_a_seed(tmp_path):
    write_fake_tinyimagenet(tmp_path)
    task = load("tinyimagenet", tmp_path, randaugment=True)
    assert not task.train.fixed
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append([(idx, x) for idx, x, _ in task.train.batches(4, 3, torch.Generator().manual_seed(5))])
    same = all(torch.equal(a[1], b[1]) for a, b in zip(runs[0], runs[1]))
    assert same and not all(torch.equal(a[1], b[1]) for a, b in zip(runs[0], runs[2]))
    idx, x = runs[0][0]
    plain = task.train.transform(task.train.x[idx])
    assert x.shape == plain.shape and not torch.equal(x, plain)  # the batch was augmented


def test_tinyimagenet_extracts_zip_and_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetMissing, match=r"tiny-imagenet-200\.zip.*cs231n\.stanford\.edu/tiny-imagenet-200\.zip"):
        load("tinyimagenet", tmp_path)
    write_fake_tinyimagenet(tmp_path / "src")
    with zipfile.ZipFile(tmp_path / "tiny-imagenet-200.zip", "w") as z:
        for f in (tmp_path / "src").rglob("*"):
            z.write(f, f.relative_to(tmp_path / "src"))
    shutil.rmtree(tmp_path / "src")
    assert len(load("tinyimagenet", tmp_path).train) == 12


def test_imagenet_folder_eval_transform_and_fixed_order(tmp_path):
    from torchvision.transforms import functional as TF
    written = write_fake_imagenet(tmp_path)
    task = load("imagenet", tmp_path, resolution=32, eval_resolution=32, random_crop=False)
    assert task.num_classes == 3 and task.classes == written["wnids"]
    assert len(task.train) == 12 and len(task.test) == 6 and task.train.fixed
    x, y = next(task.test.eval_batches(6))
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]
    path = tmp_path / "imagenet" / "val" / written["wnids"][1] / f"{written['wnids'][1]}_1.JPEG"
    with Image.open(path) as im:  # short side to round(32 / 0.875) = 37, then the centre 32x32
        ref = TF.pil_to_tensor(TF.center_crop(TF.resize(im.convert("RGB"), 37), 32))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(x[3], (ref / 255 - mean) / std, atol=1e-5)
    everything = torch.cat([b for b, _ in task.train.eval_batches(5)])  # the order a teacher cache uses
    for idx, xb, _ in task.train.batches(5, 4, torch.Generator().manual_seed(0)):
        assert torch.equal(xb, everything[idx])


def test_imagenet_random_crops_ramp_resolution_and_repeat(tmp_path):
    write_fake_imagenet(tmp_path)
    task = load("imagenet", tmp_path, resolution=32, final_resolution=64, ramp=[0.25, 0.5], eval_resolution=32)
    assert not task.train.fixed
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(list(task.train.batches(4, 12, torch.Generator().manual_seed(1))))
    # 12 images, batches of 4: 3 steps per epoch, 4 epochs at run fractions 0, .25, .5, .75
    assert [x.shape[-1] for _, x, _ in runs[0]] == [32] * 6 + [64] * 6
    assert all(idx is None for idx, _, _ in runs[0])
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(*runs))


def test_imagenet_resolution_schedule_matches_ffcv():
    data = vision.ImageFolderData([], vision.Normalize((0,), (1,)), 160, True, 192, (41 / 56, 48 / 56))
    # FFCV: 160 until epoch 41, then interp(160 -> 192 over 41..48) rounded to a multiple of 32
    assert [data.resolution(e / 56) for e in (0, 41, 44, 45, 48, 55)] == [160, 160, 160, 192, 192, 192]


def test_imagenet_missing_names_the_folder(tmp_path):
    with pytest.raises(DatasetMissing, match=r"imagenet/train.*image-net\.org"):
        load("imagenet", tmp_path)


def test_cifar_subset_pixels_subsets_and_normalisation(tmp_path):
    written = write_fake_cifar_subset(tmp_path)
    task = load("cifar10_subset", tmp_path)
    blobs, labels = written["train"]
    assert task.num_classes == 10 and task.classes[3] == "class3"
    assert len(task.train) == 60 and len(task.test) == 30 and task.train.y.tolist() == labels.tolist()
    assert np.array_equal(task.train.x[13].numpy(), pil_rgb(blobs[13].tobytes()))
    x, _ = next(task.train.eval_batches(16))
    assert x[13, 0, 4, 9].item() == pytest.approx(normalised(float(task.train.x[13, 0, 4, 9]), 0.4914, 0.2470),
                                                  abs=1e-5)
    small = load("cifar10_subset", tmp_path, train_per_class=2, test_per_class=1)
    assert len(small.train) == 20 and len(small.test) == 10
    assert torch.equal(small.train.x[2:4], task.train.x[6:8])  # class 1's first two images
    first3 = load("cifar10_subset", tmp_path, num_classes=3)
    assert first3.num_classes == 3 and first3.classes == ["class0", "class1", "class2"]
    assert torch.equal(first3.train.x, task.train.x[:18]) and first3.test.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="num_classes"):
        load("cifar10_subset", tmp_path, num_classes=11)


def test_cifar_subset_is_decoded_once_into_the_cache_folder(tmp_path, monkeypatch):
    from kdlib.data import vision
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(tmp_path / "cache"))
    write_fake_cifar_subset(tmp_path)
    first = load("cifar10_subset", tmp_path, train_per_class=2)
    cached = sorted((tmp_path / "cache").glob("cifar10_subset-*.npz"))
    assert len(cached) == 2  # train and test
    vision._MEMO.clear()  # a fresh process: reads the cache, never decodes
    monkeypatch.setattr(vision, "decode_images", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load("cifar10_subset", tmp_path, train_per_class=2)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    vision._MEMO.clear()
    monkeypatch.undo()
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(tmp_path / "cache"))
    write_fake_cifar_subset(tmp_path, train_per_class=7)  # the source changed: its cache entry no longer matches
    changed = load("cifar10_subset", tmp_path, train_per_class=2)
    assert not torch.equal(first.train.x, changed.train.x)


def test_cifar_subset_missing_says_how_it_is_built(tmp_path):
    with pytest.raises(DatasetMissing, match=r"cifar10_jpeg_subset\.npz.*cs\.toronto\.edu/~kriz/cifar\.html"):
        load("cifar10_subset", tmp_path)


@pytest.mark.skipif(not REAL_CIFAR.exists(), reason="real CIFAR-10 subset not present")
def test_real_cifar_subset_has_the_documented_sizes():
    with np.load(REAL_CIFAR) as f:
        counts = [np.bincount(f[f"{s}_labels"], minlength=10).tolist() for s in ("train", "test")]
    assert counts == [[1000] * 10, [1000] * 10]
    task = load("cifar10_subset", REAL_CIFAR.parent, train_per_class=3, test_per_class=2)
    assert task.num_classes == 10 and task.classes[0] == "airplane" and task.classes[9] == "truck"
    assert task.train.x.shape == (30, 3, 32, 32) and task.test.y.tolist() == np.repeat(np.arange(10), 2).tolist()


def test_digits_split_and_normalisation():
    from sklearn.datasets import load_digits
    task = load("digits")
    assert task.num_classes == 10 and len(task.train) == 1437 and len(task.test) == 360
    assert task.train.x.shape[1:] == (1, 8, 8) and int(task.train.x.max()) == 16
    assert np.bincount(task.test.y.numpy()).min() >= 35  # stratified: ~36 per class
    all_images = load_digits().images
    assert float(task.train.x.float().sum() + task.test.x.float().sum()) == float(all_images.sum())
    x, _ = next(task.train.eval_batches(3))
    assert x[1, 0, 3, 4].item() == pytest.approx(normalised(float(task.train.x[1, 0, 3, 4]), 0.5, 0.5, 16.0))
    assert torch.equal(load("digits").train.x, task.train.x)
