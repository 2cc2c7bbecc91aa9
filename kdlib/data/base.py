"""What every loader shares: the data folder, the missing-data error, downloads, the cache folder, the
:class:`TaskData` record and the loader registry (see :mod:`kdlib.data` for the data-source protocol)."""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry, resolve

DEFAULT_DATA_DIR = "data"


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: the ``files`` its loader needs in the data folder (a trailing / marks a
    folder), the address ``url`` a user gets it from, whether the loader ``downloads`` it itself where there is
    internet, and whether it is ``built_in`` (shipped as the project's offline data, or bundled with a
    dependency: these setups run without any download). An ``archive`` the loader extracts stands in for
    ``files``. ``loader``: ``fn(root: Path, **kwargs) -> TaskData``, or its ``"module:name"`` path (imported when
    the dataset is first loaded)."""
    files: tuple[str, ...]
    url: str
    downloads: bool = False
    built_in: bool = False
    archive: str | None = None
    loader: str | Callable[..., TaskData] | None = None

    def downloads_now(self) -> bool:
        """Whether its loader would fetch a missing file now (it downloads itself, and downloads are allowed)."""
        return self.downloads and not offline()

    def missing(self, root: Path) -> list[str]:
        if self.archive and (Path(root) / self.archive).exists():
            return []
        return [f for f in self.files if not (Path(root) / f).exists()]


#: Every dataset a setup can name, with where it comes from and its loader.
SOURCES = Registry("dataset", listing=lambda names: f"known datasets are {sorted(names)}", entry_type=Source,
                   from_path=lambda name: resolve("kdlib.data.yours:source_from_path")(name), group="kdlib.data")
SOURCES.register("imagefolder", Source((), "your own ImageFolder tree (kdlib.data.yours)", built_in=True,
                                       loader="kdlib.data.yours:load_imagefolder"))
SOURCES.register("tinyshakespeare", Source(
    ("tinyshakespeare.txt",), "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    downloads=True, built_in=True, loader="kdlib.data.text:load_tinyshakespeare"))
SOURCES.register("cifar10_subset", Source(
    ("cifar10_jpeg_subset.npz",), "https://www.cs.toronto.edu/~kriz/cifar.html", built_in=True,
    loader="kdlib.data.vision:load_cifar10_subset"))
SOURCES.register("fsdd", Source(
    ("fsdd_8k.npz",), "https://github.com/Jakobovski/free-spoken-digit-dataset", built_in=True,
    loader="kdlib.data.audio:load_fsdd"))
SOURCES.register("digits", Source((), "scikit-learn's bundled digits", built_in=True,
                                  loader="kdlib.data.vision:load_digits"))
SOURCES.register("svhn", Source(
    ("train_32x32.mat", "test_32x32.mat"), "http://ufldl.stanford.edu/housenumbers/", downloads=True,
    loader="kdlib.data.vision:load_svhn"))
SOURCES.register("tinyimagenet", Source(
    ("tiny-imagenet-200/",), "http://cs231n.stanford.edu/tiny-imagenet-200.zip", downloads=True,
    archive="tiny-imagenet-200.zip", loader="kdlib.data.vision:load_tinyimagenet"))
SOURCES.register("imagenet", Source(
    ("imagenet/",), "https://image-net.org/download.php (ILSVRC2012 train and val images)",
    loader="kdlib.data.vision:load_imagenet"))
SOURCES.register("speechcommands", Source(
    ("SpeechCommands/speech_commands_v0.02/",), "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
    loader="kdlib.data.audio:load_speechcommands"))
SOURCES.register("urbansound8k", Source(
    ("UrbanSound8K/metadata/UrbanSound8K.csv",), "https://urbansounddataset.weebly.com/urbansound8k.html",
    loader="kdlib.data.audio:load_urbansound8k"))


class DatasetMissing(FileNotFoundError):
    """A dataset file is not in the data folder and could not be downloaded."""


@dataclass
class TaskData:
    """A loaded dataset: training and test sources, class count and names, and loader-specific extras."""
    train: Any
    test: Any
    num_classes: int
    classes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def cache_folder(path: str | os.PathLike | None = None) -> Path:
    """Derived-data cache folder: ``path`` if given, else ``$KDLIB_CACHE_DIR``, else ``~/.cache/kdlib``."""
    return Path(path or os.environ.get("KDLIB_CACHE_DIR") or Path.home() / ".cache" / "kdlib")


def fingerprint(path: Path) -> list:
    """Identity of a source file for cache keys: resolved path, size and modification time."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data folder: ``path`` if given, else ``$KDLIB_DATA_DIR``, else ``data/``."""
    return Path(path or os.environ.get("KDLIB_DATA_DIR") or DEFAULT_DATA_DIR)


def offline() -> bool:
    """Downloads are disabled (``KDLIB_OFFLINE=1``: the tests, CI and the GPU scripts)."""
    return os.environ.get("KDLIB_OFFLINE") == "1"


def require(path: Path, what: str, source: str, url: str | None = None) -> Path:
    """Return ``path`` if it exists; else download ``url`` there (when given and reachable) or raise.

    ``what`` names the dataset, ``source`` says where a user gets it by hand.
    """
    path = Path(path)
    if path.exists():
        return path
    if url and not offline():
        try:
            download(url, path)
            return path
        except OSError as e:
            reason = f"downloading {url} failed ({e})"
    else:
        reason = "no download is possible" if not url else "downloads are disabled (KDLIB_OFFLINE=1)"
    raise DatasetMissing(f"{what} not found: expected {path.resolve()}; {reason}. Get it from {source} and put it "
                         f"there, or point --data-dir / KDLIB_DATA_DIR at the folder that holds it.")


def download(url: str, path: Path, timeout: float = 30.0) -> None:
    """Fetch ``url`` to ``path`` atomically (a partial download never lands at ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response, \
            tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        shutil.copyfileobj(response, tmp)
    os.replace(tmp.name, path)


register = SOURCES.register  # register(name, Source(files, url, ..., loader="module:name"))


def loader(name: str) -> Callable[..., TaskData]:
    """The loader of dataset ``name`` (imported on first use; an unknown name raises with the known ones)."""
    fn = SOURCES[name].loader
    return resolve(fn) if isinstance(fn, str) else fn


def available(dataset: str, root: Path) -> bool:
    """Whether the dataset can load from the data folder ``root``: its files are there, or its loader fetches them."""
    source = SOURCES[dataset]
    return not source.missing(root) or source.downloads_now()


def data_status(dataset: str, root: Path) -> str:
    """What ``kdlib list`` says of a dataset in the data folder ``root``: built-in, found, downloads itself, or
    missing (with where to get it)."""
    source = SOURCES[dataset]
    missing = source.missing(root)
    if not missing:
        return "built-in" if source.built_in else "found"
    files = ", ".join(missing)
    if source.downloads_now():
        return f"downloads itself (needs internet): {files}"
    offline = "; downloads are disabled: KDLIB_OFFLINE=1" if source.downloads else ""
    return f"missing: {files} (get it from {source.url}{offline})"
