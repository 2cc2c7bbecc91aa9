import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from sklearn.model_selection import train_test_split

from audio_fakes import SPEECHCOMMANDS_WORDS, URBANSOUND8K_CLASSES, build_fake_audio_root
from kdlib.data import DatasetMissing, load
from kdlib.data import audio

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

REAL_FSDD = Path(os.environ.get("KDLIB_DATA_DIR", "data")) / "fsdd_8k.npz"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_fake_audio_root(tmp_path_factory.mktemp("audio"))


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """Centred (reflect-padded) frames of 512, periodic Hann window, hop 256, |rfft|^2, then a triangular
    HTK mel filterbank built here from its definition (32 filters, 0-8 kHz), then log(x + 1e-6)."""
    padded = np.pad(wave.astype(np.float64), 256, mode="reflect")
    n_frames = 1 + (len(padded) - 512) // 256
    frames = np.stack([padded[i * 256:i * 256 + 512] for i in range(n_frames)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # [frames, 257]
    freqs = np.linspace(0, 8000, 257)
    edges = 700.0 * (10 ** (np.linspace(0, hz_to_mel(8000), 34) / 2595.0) - 1.0)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fbank = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))  # [32, 257]
    return np.log(power @ fbank.T + 1e-6).T  # [32, frames]


def test_log_mel_matches_a_hand_built_stft_and_filterbank():
    wave = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    ours = audio.log_mel(torch.from_numpy(wave)[None])
    expected = reference_log_mel(wave)
    assert ours.shape == (1, 1, 32, 4000 // 256 + 1)
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, atol=1e-3)


def test_sine_energy_lands_in_the_mel_filter_centred_nearest_its_frequency():
    t = torch.arange(16000) / 16000
    for freq in (440.0, 1000.0, 3000.0):
        mel = audio.log_mel(torch.sin(2 * math.pi * freq * t)[None])[0, 0]
        centres = 700.0 * (10 ** (np.linspace(0, hz_to_mel(8000), 34)[1:-1] / 2595.0) - 1.0)  # in Hz
        assert int(mel[:, 10:-10].mean(1).argmax()) == int(np.argmin(abs(centres - freq)))


def test_num_frames_of_the_fixed_clip_lengths():
    assert audio.num_frames(1.0) == 63 and audio.num_frames(4.0) == 251
    assert audio.log_mel(torch.zeros(1, 64000)).shape[-1] == 251


def test_resampling_8k_to_16k_doubles_the_length_and_keeps_the_tone():
    t = np.arange(4000) / 8000
    out = audio.to_16k([(np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000)], 16000)[0]
    t16 = np.arange(8000) / 16000
    np.testing.assert_allclose(out[100:7900].numpy(), np.sin(2 * np.pi * 440 * t16[100:7900]), atol=2e-3)
    assert out[7990:8000].abs().sum() > 0 and torch.all(out[8000:] == 0)


def test_to_16k_pads_and_crops_to_the_fixed_length():
    long_clip = np.arange(20000, dtype=np.float32) / 20000
    short_clip = np.ones(1000, dtype=np.float32)
    out = audio.to_16k([(long_clip, 16000), (short_clip, 16000)], 16000)
    assert out.shape == (2, 16000)
    assert torch.equal(out[0], torch.from_numpy(long_clip[:16000]))
    assert torch.all(out[1, :1000] == 1) and torch.all(out[1, 1000:] == 0)


def test_batched_resampling_equals_resampling_each_clip_alone():
    rng = np.random.default_rng(1)
    clips = [(rng.standard_normal(n).astype(np.float32), rate) for n, rate in
             ((3000, 8000), (8000, 8000), (50000, 44100), (9000, 44100), (200000, 44100), (4000, 22050),
              (30000, 16000), (100000, 96000))]
    length = 16000
    ours = audio.to_16k(clips, length)
    for row, (wave, rate) in zip(ours, clips):
        alone = AF.resample(torch.from_numpy(wave), rate, 16000) if rate != 16000 else torch.from_numpy(wave)
        expected = torch.zeros(length)
        expected[:min(length, len(alone))] = alone[:length]
        torch.testing.assert_close(row, expected, atol=2e-5, rtol=0)


def test_read_wav_averages_stereo_to_mono(tmp_path):
    left, right = np.linspace(-0.5, 0.5, 800), np.linspace(0.25, 0.0, 800)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 11025, subtype="FLOAT")
    wave, rate = audio.read_wav(tmp_path / "s.wav")
    assert rate == 11025 and wave.shape == (800,) and wave.dtype == np.float32
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


def assert_same_log_mel(got: torch.Tensor, want: torch.Tensor) -> None:
    """Log-mel spectrograms equal up to float32 rounding of the STFT, compared as mel power: within 1e-4 of each
    bin, or 1e-5 of the clip's loudest bin. The log turns a near-silent bin's rounding into large differences,
    and a batch of clips and one clip alone take different FFT kernels (5e-4 in the log seen on AVX2)."""
    torch.testing.assert_close(got.exp(), want.exp(), rtol=1e-4, atol=1e-5 * float(want.exp().max()))


def expected_features(path: Path, seconds: float) -> torch.Tensor:
    """Features of one file computed step by step with the library functions, one clip alone."""
    wave, rate = audio.read_wav(path)
    return audio.log_mel(audio.to_16k([(wave, rate)], int(seconds * 16000)))[0]


def test_speechcommands_honours_validation_and_testing_lists(root, tmp_path):
    task = load("speechcommands", root, normalize=False, cache_dir=tmp_path)
    base = root / "SpeechCommands" / "speech_commands_v0.02"
    testing = base.joinpath("testing_list.txt").read_text().split()
    validation = base.joinpath("validation_list.txt").read_text().split()
    every = sorted(str(p.relative_to(base)) for p in base.glob("*/*.wav") if "_background_noise_" not in str(p))
    training = sorted(set(every) - set(testing) - set(validation))
    assert task.classes == sorted(SPEECHCOMMANDS_WORDS) and task.num_classes == 3
    assert len(task.train) == len(training) == 9 and len(task.test) == len(testing) == 3
    assert task.train.x.shape == (9, 1, 32, 63) and task.train.x.dtype == torch.float32
    assert task.train.y.tolist() == [task.classes.index(p.split("/")[0]) for p in training]
    for i, rel in enumerate(testing):
        assert_same_log_mel(task.test.x[i], expected_features(base / rel, 1.0))
        assert task.test.y[i] == task.classes.index(rel.split("/")[0])


def test_urbansound8k_split_is_sklearns_80_20_split_of_the_metadata_rows(root, tmp_path):
    task = load("urbansound8k", root, normalize=False, cache_dir=tmp_path)
    meta = pd.read_csv(root / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv")
    train_ids, test_ids = train_test_split(np.arange(len(meta)), test_size=0.2, random_state=42, shuffle=True)
    assert (len(task.train), len(task.test)) == (16, 4)
    assert task.classes == list(URBANSOUND8K_CLASSES)
    assert task.train.y.tolist() == meta.classID[train_ids].tolist()
    assert task.test.y.tolist() == meta.classID[test_ids].tolist()
    assert task.train.x.shape == (16, 1, 32, 251)
    for i, row in enumerate(test_ids):  # mixed rates, stereo and 8/16/24-bit and float files
        path = root / "UrbanSound8K" / "audio" / f"fold{meta.fold[row]}" / meta.slice_file_name[row]
        assert_same_log_mel(task.test.x[i], expected_features(path, 4.0))


def test_fsdd_uses_the_official_test_split_and_resamples_8k(root, tmp_path):
    task = load("fsdd", root, normalize=False, cache_dir=tmp_path)
    npz = np.load(root / "fsdd_8k.npz")
    assert (len(task.train), len(task.test)) == (40, 20) and task.classes == [str(d) for d in range(10)]
    assert task.test.y.tolist() == npz["labels"][npz["is_test"]].tolist()
    first_test = np.flatnonzero(npz["is_test"])[0]
    clip = npz["audio"][npz["offsets"][first_test]:npz["offsets"][first_test + 1]] / 32768.0
    resampled = AF.resample(torch.tensor(clip, dtype=torch.float32), 8000, 16000)
    assert len(resampled) == 2 * len(clip)
    expected = audio.log_mel(torch.nn.functional.pad(resampled, (0, 16000 - len(resampled)))[None])[0]
    assert_same_log_mel(task.test.x[0], expected)


def test_normalisation_uses_training_statistics_for_both_splits(root, tmp_path):
    raw = load("fsdd", root, normalize=False, cache_dir=tmp_path)
    norm = load("fsdd", root, cache_dir=tmp_path)
    x = raw.train.x.numpy()
    mean = x.mean(axis=(0, 3), keepdims=True)
    std = x.std(axis=(0, 3), keepdims=True, ddof=1)
    np.testing.assert_allclose(norm.train.x.numpy(), (x - mean) / std, atol=1e-4)
    np.testing.assert_allclose(norm.test.x.numpy(), (raw.test.x.numpy() - mean) / std, atol=1e-4)
    np.testing.assert_allclose(norm.extra["mean"].numpy(), mean.ravel(), atol=1e-5)


def test_features_are_computed_once_then_read_from_the_cache(root, tmp_path, monkeypatch):
    first = load("urbansound8k", root, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("urbansound8k-") and files[0].suffix == ".pt"

    def fail(*args, **kwargs):
        raise AssertionError("features recomputed despite a cache")

    monkeypatch.setattr(audio, "features", fail)
    again = load("urbansound8k", root, cache_dir=tmp_path)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    with pytest.raises(AssertionError, match="recomputed"):  # other pipeline parameters: another cache entry
        load("urbansound8k", root, seconds=2.0, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):  # another subset of clips: another entry
        load("urbansound8k", root, max_train=5, cache_dir=tmp_path)


def test_cache_folder_comes_from_the_environment(root, tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(tmp_path / "env-cache"))
    load("fsdd", root, max_train=8, max_test=4)
    assert [p.name[:5] for p in (tmp_path / "env-cache").iterdir()] == ["fsdd-"]


def test_max_train_keeps_a_seeded_subset_of_the_split(root, tmp_path):
    full = load("fsdd", root, normalize=False, cache_dir=tmp_path)
    part = load("fsdd", root, normalize=False, max_train=7, max_test=5, cache_dir=tmp_path)
    keep = audio.subset(40, 7)
    assert (len(part.train), len(part.test)) == (7, 5) and len(set(keep.tolist())) == 7
    assert torch.equal(part.train.x, full.train.x[keep]) and torch.equal(part.train.y, full.train.y[keep])
    with pytest.raises(ValueError, match="subset size 0"):
        audio.subset(40, 0)


@pytest.mark.parametrize("name, expected, url", [
    ("speechcommands", "SpeechCommands/speech_commands_v0.02/testing_list.txt", audio.SPEECHCOMMANDS_URL),
    ("urbansound8k", "UrbanSound8K/metadata/UrbanSound8K.csv", audio.URBANSOUND8K_URL),
    ("fsdd", "fsdd_8k.npz", audio.FSDD_URL)])
def test_missing_dataset_names_the_path_and_the_source(tmp_path, name, expected, url):
    with pytest.raises(DatasetMissing) as info:
        load(name, tmp_path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert str((tmp_path / expected).resolve()) in message and url in message


@pytest.mark.skipif(not REAL_FSDD.exists(), reason=f"real FSDD not found at {REAL_FSDD}")
def test_real_fsdd_has_2700_train_and_300_test_clips(tmp_path):
    task = load("fsdd", REAL_FSDD.parent, cache_dir=tmp_path)
    assert task.train.x.shape == (2700, 1, 32, 63) and task.test.x.shape == (300, 1, 32, 63)
    assert task.train.y.bincount().tolist() == [270] * 10 and task.test.y.bincount().tolist() == [30] * 10
    assert abs(float(task.train.x.mean())) < 1e-3 and torch.isfinite(task.test.x).all()
