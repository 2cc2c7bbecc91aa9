"""Audio datasets as log-mel spectrograms (paper Appendix E): SpeechCommands v2, UrbanSound8K and FSDD.

Pipeline, per clip (Appendix E, torchaudio):

1. mono (mean over channels), resampled to 16 kHz with ``torchaudio.functional.resample`` (default
   windowed-sinc kernel);
2. fixed length: zero-padded at the end or cropped to its first ``seconds`` (not stated in the paper): 1 s
   for SpeechCommands (its clip length) and FSDD (mean 0.44 s; 20 of 3,000 clips are longer), 4 s for
   UrbanSound8K (its longest clip);
3. ``Spectrogram(n_fft=512, power=2)`` (Hann window 512, hop 256, centred: ``16000 * seconds // 256 + 1``
   frames, 63 for 1 s, 251 for 4 s), then ``MelScale(n_mels=32, sample_rate=16000, n_stft=257)``;
4. ``log(mel + 1e-6)``: the paper does not name its log compression; ``AmplitudeToDB`` would only rescale
   this by 10/ln 10 and move the floor, which the normalisation below removes.

As in the paper, spectrograms are computed once, before training: they are cached on disk (one ``.pt``
file per dataset, pipeline, clip length and chosen files, written atomically) under ``cache_dir``, else
``$KDLIB_CACHE_DIR``, else ``~/.cache/kdlib`` (never inside the data folder, which may be read-only), and
held in memory as float32 ``[N, 1, 32, frames]`` in an :class:`~kdlib.data.sources.ExampleData`.

``front_end="power-mel"`` gives the mel power spectrogram without the log (the paper's words, read literally;
the ``audio-front-end`` reading). With ``normalize=True`` (default; not in the paper) each mel bin is standardised by its mean and standard
deviation over the training split (all clips and frames), and the same shift and scale are applied to the
test split: standardised inputs help plain SGD train VGGish, which has no BatchNorm.

``max_train`` / ``max_test`` keep a seeded random subset of a split (for the cpu and smoke profiles).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio.functional as AF
from sklearn.model_selection import train_test_split
from torchaudio.datasets import SPEECHCOMMANDS
from torchaudio.transforms import MelScale, Spectrogram
from tqdm.auto import tqdm

from .sources import ExampleData
from ..store import atomic_write
from .base import SOURCES, TaskData, cache_folder, fingerprint, require
from .mel import LOG_FLOOR, N_FFT, N_MELS, PIPELINE, SAMPLE_RATE, num_frames

CHUNK = 128  # clips per feature batch: bounds memory (a 4 s clip at 96 kHz is 1.5 MB)

SPEECHCOMMANDS_URL = SOURCES["speechcommands"].url
URBANSOUND8K_URL = SOURCES["urbansound8k"].url
FSDD_URL = SOURCES["fsdd"].url


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A WAV file as a mono float32 waveform (mean of its channels) and its sample rate. soundfile is imported
    here, where audio files are read, so kdlib imports without it (FSDD's built-in copy needs none)."""
    try:
        import soundfile as sf
    except ImportError as e:
        raise ModuleNotFoundError(f"reading {path} needs the package soundfile: pip install soundfile") from e
    except OSError as e:
        raise ModuleNotFoundError(f"reading {path} needs soundfile's libsndfile ({e}): pip install soundfile") from e
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


def to_16k(clips: Sequence[tuple[np.ndarray, int]], length: int) -> torch.Tensor:
    """Mono clips ``(wave, rate)`` resampled to 16 kHz, zero-padded at the end or cropped to ``length``.

    Clips of one rate are resampled together as a zero-padded batch, then every sample past a clip's own
    resampled length is zeroed again, so each row equals resampling that clip alone and padding it. A clip is
    first cut to what the kept output can see (its first ``length`` output samples plus 10 ms, more than
    the resampling kernel's reach), which changes none of the kept samples.
    """
    out = torch.zeros(len(clips), length)
    rows_by_rate = defaultdict(list)
    for i, (_, rate) in enumerate(clips):
        rows_by_rate[rate].append(i)
    for rate, rows in rows_by_rate.items():
        keep = math.ceil(length * rate / SAMPLE_RATE) + rate // 100
        waves = [torch.from_numpy(np.asarray(clips[i][0], dtype=np.float32)[:keep]) for i in rows]
        batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        if rate != SAMPLE_RATE:
            batch = AF.resample(batch, rate, SAMPLE_RATE)
        for row, i in enumerate(rows):
            n = min(-(-len(clips[i][0]) * SAMPLE_RATE // rate), length)  # ceil, as torchaudio's output length
            out[i, :n] = batch[row, :n]
    return out


def log_mel(waves: torch.Tensor) -> torch.Tensor:
    """16 kHz waveforms ``[B, L]`` -> log-mel spectrograms ``[B, 1, 32, L // 256 + 1]`` (module docstring)."""
    power = Spectrogram(n_fft=N_FFT, power=2.0)(waves)
    mel = MelScale(n_mels=N_MELS, sample_rate=SAMPLE_RATE, n_stft=N_FFT // 2 + 1)(power)
    return torch.log(mel + LOG_FLOOR).unsqueeze(1)


def features(items: Sequence, read: Callable[..., tuple[np.ndarray, int]], seconds: float,
             desc: str = "log-mel") -> torch.Tensor:
    """Log-mel spectrograms ``[N, 1, 32, frames]`` of the clips ``read(item)``, ``CHUNK`` clips at a time."""
    length = int(round(seconds * SAMPLE_RATE))
    out = []
    with tqdm(total=len(items), desc=desc, leave=False, disable=None) as bar:
        for start in range(0, len(items), CHUNK):
            clips = [read(item) for item in items[start:start + CHUNK]]
            out.append(log_mel(to_16k(clips, length)))
            bar.update(len(clips))
    return torch.cat(out) if out else torch.zeros(0, 1, N_MELS, num_frames(seconds))


def cached(name: str, key: dict, compute: Callable[[], dict], directory: Path) -> dict:
    """``compute()``'s dict of tensors, read from ``directory/<name>-<hash of key>.pt`` when it exists.

    A new result is written to a temporary file and renamed, so a crash never leaves a partial cache file.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(directory) / f"{name}-{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    result = compute()
    atomic_write(path, lambda f: torch.save(result, f))
    return result



def subset(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``limit`` of ``n`` items (all of them if ``limit`` is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"subset size {limit} must be positive (or None for all {n} items)")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


FRONT_ENDS = ("log-mel", "power-mel")


def mel_task(name: str, classes: list[str], splits: dict[str, tuple[list, np.ndarray]], read: Callable,
             seconds: float, source: list, normalize: bool, max_train: int | None, max_test: int | None,
             cache: str | os.PathLike | None, front_end: str = "log-mel") -> TaskData:
    """Cached log-mel features of the ``train`` and ``test`` splits ``(items, labels)`` as a :class:`TaskData`.

    ``items`` are what ``read`` takes (paths or indices) and, as strings, identify the clips in the cache
    key together with ``source`` (the index file's :func:`fingerprint`). ``front_end="power-mel"`` undoes the
    log: the mel power spectrogram itself (``exp(x) - 1e-6``, to float32 rounding), as Appendix E describes it.
    """
    if front_end not in FRONT_ENDS:
        raise ValueError(f"unknown audio front end {front_end!r}: allowed are {list(FRONT_ENDS)}")
    limits = {"train": max_train, "test": max_test}
    chosen = {}
    for split, (items, labels) in splits.items():
        keep = subset(len(items), limits[split])
        chosen[split] = ([items[i] for i in keep], np.asarray(labels)[keep])
    ids = hashlib.sha256(json.dumps({s: [list(map(str, it)), lab.tolist()] for s, (it, lab) in chosen.items()})
                         .encode()).hexdigest()
    key = dict(dataset=name, pipeline=PIPELINE, seconds=seconds, source=source, clips=ids)

    def compute():
        result = {}
        for split, (items, labels) in chosen.items():
            result[f"{split}_x"] = features(items, read, seconds, f"{name} {split}")
            result[f"{split}_y"] = torch.as_tensor(labels, dtype=torch.long)
        return result

    data = cached(name, key, compute, cache_folder(cache))
    x_train, x_test = data["train_x"], data["test_x"]
    if front_end == "power-mel":
        for x in (x_train, x_test):
            x.exp_().sub_(LOG_FLOOR).clamp_min_(0.0)
    extra = dict(sample_rate=SAMPLE_RATE, seconds=seconds, frames=x_train.shape[-1], front_end=front_end)
    if normalize:
        mean = x_train.mean(dim=(0, 3), keepdim=True)
        std = x_train.std(dim=(0, 3), keepdim=True).clamp_min(1e-5)
        x_train.sub_(mean).div_(std)  # in place: SpeechCommands' features take 0.8 GB
        x_test.sub_(mean).div_(std)
        extra.update(mean=mean.flatten(), std=std.flatten())
    return TaskData(train=ExampleData(x_train, data["train_y"]), test=ExampleData(x_test, data["test_y"]),
                    num_classes=len(classes), classes=classes, extra=extra)


def load_speechcommands(root: Path, seconds: float = 1.0, normalize: bool = True, max_train: int | None = None,
                        max_test: int | None = None, cache_dir: str | os.PathLike | None = None,
                        front_end: str = "log-mel") -> TaskData:
    """SpeechCommands v2, 35 words: torchaudio's ``training`` subset (every clip outside validation_list.txt
    and testing_list.txt, without _background_noise_; 84,843 clips) and ``testing`` subset (11,005 clips).

    torchaudio's dataset class gives the file lists and labels; WAVs are read with soundfile (torchaudio
    >= 2.9 would decode through TorchCodec).
    """
    base = Path(root) / "SpeechCommands" / "speech_commands_v0.02"
    lists = require(base / "testing_list.txt", "SpeechCommands v2",
                    f"{SPEECHCOMMANDS_URL} (extract it into {base.resolve()})")
    splits = {}
    for split, subset_name in (("train", "training"), ("test", "testing")):
        ds = SPEECHCOMMANDS(root, subset=subset_name, download=False)
        meta = [ds.get_metadata(n) for n in range(len(ds))]
        splits[split] = ([m[0] for m in meta], [m[2] for m in meta])
    classes = sorted(set(splits["train"][1]) | set(splits["test"][1]))
    index = {c: i for i, c in enumerate(classes)}
    splits = {s: (items, np.array([index[w] for w in words])) for s, (items, words) in splits.items()}
    archive = Path(root) / "SpeechCommands"
    return mel_task("speechcommands", classes, splits, lambda rel: read_wav(archive / rel), seconds,
                    fingerprint(lists), normalize, max_train, max_test, cache_dir, front_end)


def load_urbansound8k(root: Path, seconds: float = 4.0, normalize: bool = True, max_train: int | None = None,
                      max_test: int | None = None, cache_dir: str | os.PathLike | None = None,
                      front_end: str = "log-mel") -> TaskData:
    """UrbanSound8K, 10 classes; as in the paper, an 80/20 split of the metadata rows by sklearn's
    ``train_test_split(test_size=0.2, random_state=42, shuffle=True)`` (not the dataset's 10 folds)."""
    base = Path(root) / "UrbanSound8K"
    csv = require(base / "metadata" / "UrbanSound8K.csv", "UrbanSound8K",
                  f"{URBANSOUND8K_URL} (unpack it so that {base.resolve()} holds audio/ and metadata/)")
    meta = pd.read_csv(csv)
    names = meta.drop_duplicates("classID").set_index("classID")["class"].sort_index()
    if list(names.index) != list(range(len(names))):
        raise ValueError(f"{csv}: classID values {list(names.index)} are not 0..{len(names) - 1}")
    items = [f"fold{f}/{name}" for f, name in zip(meta["fold"], meta["slice_file_name"])]
    labels = meta["classID"].to_numpy()
    train_idx, test_idx = train_test_split(np.arange(len(meta)), test_size=0.2, random_state=42, shuffle=True)
    splits = {s: ([items[i] for i in idx], labels[idx]) for s, idx in (("train", train_idx), ("test", test_idx))}
    return mel_task("urbansound8k", list(names), splits, lambda rel: read_wav(base / "audio" / rel), seconds,
                    fingerprint(csv), normalize, max_train, max_test, cache_dir, front_end)


def load_fsdd(root: Path, seconds: float = 1.0, normalize: bool = True, max_train: int | None = None,
              max_test: int | None = None, cache_dir: str | os.PathLike | None = None,
              front_end: str = "log-mel") -> TaskData:
    """Free Spoken Digit Dataset (digits 0-9, 8 kHz, 2,700 train / 300 test clips), from ``fsdd_8k.npz``:
    ``audio`` (int16 clips concatenated), ``offsets``, ``labels``, ``is_test`` (FSDD's official test split:
    utterances 0-4 of every speaker and digit) and ``sample_rate``."""
    path = require(Path(root) / "fsdd_8k.npz", "Free Spoken Digit Dataset (fsdd_8k.npz)",
                   f"{FSDD_URL} (its recordings/*.wav packed as fsdd_8k.npz with keys audio, offsets, labels, "
                   "is_test, sample_rate)")
    with np.load(path) as npz:
        audio, offsets, labels = npz["audio"], npz["offsets"], npz["labels"]
        is_test, rate = npz["is_test"].astype(bool), int(npz["sample_rate"])
    read = lambda i: (audio[offsets[i]:offsets[i + 1]].astype(np.float32) / 32768.0, rate)
    splits = {s: (list(np.flatnonzero(mask)), labels[mask]) for s, mask in (("train", ~is_test), ("test", is_test))}
    return mel_task("fsdd", [str(d) for d in range(10)], splits, read, seconds, fingerprint(path), normalize,
                    max_train, max_test, cache_dir, front_end)
