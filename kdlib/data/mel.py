"""The log-mel pipeline's constants (Appendix E), importable without torch: setups size models from them."""
from __future__ import annotations

SAMPLE_RATE = 16000
N_FFT = 512
HOP = N_FFT // 2  # torchaudio's default hop: win_length // 2
N_MELS = 32
LOG_FLOOR = 1e-6
PIPELINE = dict(sample_rate=SAMPLE_RATE, n_fft=N_FFT, power=2.0, n_mels=N_MELS, log="log(mel+1e-6)", version=1)


def num_frames(seconds: float) -> int:
    """Spectrogram frames of a ``seconds``-long clip (centred STFT, hop 256 at 16 kHz)."""
    return int(round(seconds * SAMPLE_RATE)) // HOP + 1
