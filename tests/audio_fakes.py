"""Tiny fake copies of the audio datasets in their real on-disk formats (for tests and CI smoke runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SPEECHCOMMANDS_WORDS = ("down", "go", "yes")
URBANSOUND8K_CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
                        "engine_idling", "gun_shot", "jackhammer", "siren", "street_music")
# (sample rate, channels, subtype) per UrbanSound8K clip, cycled: the real set mixes all of these
URBANSOUND8K_FORMATS = ((44100, 2, "PCM_16"), (48000, 1, "PCM_24"), (22050, 2, "FLOAT"), (96000, 1, "PCM_16"),
                        (8000, 1, "PCM_16"), (16000, 2, "PCM_16"), (11025, 1, "PCM_U8"))


def tone(rng: np.random.Generator, n: int, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    """A noisy sine of ``n`` samples, shape ``[n]`` or ``[n, channels]`` (channels differ in phase)."""
    t = np.arange(n) / rate
    waves = [0.5 * np.sin(2 * np.pi * freq * t + c) + 0.05 * rng.standard_normal(n) for c in range(channels)]
    return np.stack(waves, axis=1).astype(np.float32) if channels > 1 else waves[0].astype(np.float32)


def build_fake_speechcommands(root: Path, rng: np.random.Generator) -> None:
    """3 words x 6 clips (0.3-1 s, 16 kHz): 2 per word in validation_list.txt, 1 in testing_list.txt, and a
    _background_noise_ clip that no split may use."""
    base = root / "SpeechCommands" / "speech_commands_v0.02"
    validation, testing = [], []
    for w, word in enumerate(SPEECHCOMMANDS_WORDS):
        (base / word).mkdir(parents=True, exist_ok=True)
        for k in range(6):
            rel = f"{word}/{k:04x}beef_nohash_{k % 2}.wav"
            n = 16000 if k == 0 else int(rng.integers(4800, 16000))
            sf.write(base / rel, tone(rng, n, 16000, 300 + 400 * w), 16000, subtype="PCM_16")
            (validation if k in (1, 2) else testing if k == 3 else []).append(rel)
    (base / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (base / "testing_list.txt").write_text("\n".join(testing) + "\n")
    (base / "_background_noise_").mkdir(exist_ok=True)
    sf.write(base / "_background_noise_" / "white_noise.wav", tone(rng, 16000, 16000, 50), 16000)


def build_fake_urbansound8k(root: Path, rng: np.random.Generator) -> None:
    """10 classes x 2 clips (0.1-0.3 s) at mixed rates, channel counts and sample formats, over 10 folds,
    with metadata/UrbanSound8K.csv."""
    base = root / "UrbanSound8K"
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for i in range(20):
        class_id, fold = i % 10, i % 10 + 1
        rate, channels, subtype = URBANSOUND8K_FORMATS[i % len(URBANSOUND8K_FORMATS)]
        name = f"{1000 + i}-{class_id}-0-{i // 10}.wav"
        (base / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        n = int(rate * rng.uniform(0.1, 0.3))
        sf.write(base / "audio" / f"fold{fold}" / name, tone(rng, n, rate, 200 + 150 * class_id, channels), rate,
                 subtype=subtype)
        rows.append(f"{name},{1000 + i},0.0,{n / rate:.3f},1,{fold},{class_id},{URBANSOUND8K_CLASSES[class_id]}")
    (base / "metadata" / "UrbanSound8K.csv").write_text("\n".join(rows) + "\n")


def build_fake_fsdd(root: Path, rng: np.random.Generator) -> None:
    """fsdd_8k.npz in the real format: 10 digits x 2 speakers x 3 utterances at 8 kHz, utterance 0 is test;
    clip lengths 0.1-0.3 s, except one 1.2 s clip (longer than the 1 s crop)."""
    speakers = np.array(["george", "jackson"])
    labels, spk, utt = np.array([(d, s, u) for d in range(10) for s in range(len(speakers)) for u in range(3)]).T
    lengths = [9600 if (d, s, u) == (0, 0, 1) else int(rng.integers(800, 2400)) for d, s, u in zip(labels, spk, utt)]
    clips = [(tone(rng, n, 8000, 250 + 100 * d) * 32767).astype(np.int16) for n, d in zip(lengths, labels)]
    names = [f"{d}_{speakers[s]}_{u}.wav" for d, s, u in zip(labels, spk, utt)]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in clips])]).astype(np.int64)
    np.savez(root / "fsdd_8k.npz", audio=np.concatenate(clips), offsets=offsets, labels=labels, speakers=spk,
             utterance_index=utt, speaker_names=speakers, filenames=np.array(names), sample_rate=np.array(8000),
             is_test=utt < 1)


def build_fake_audio_root(root: Path) -> Path:
    """Write fake SpeechCommands v2, UrbanSound8K and fsdd_8k.npz under ``root``; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    build_fake_speechcommands(root, rng)
    build_fake_urbansound8k(root, rng)
    build_fake_fsdd(root, rng)
    return root
