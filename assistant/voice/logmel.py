"""Whisper's log-mel spectrogram in numpy, for the Smart Turn end-of-turn model.

Why our own: Smart Turn was trained on `transformers.WhisperFeatureExtractor` features, but
importing transformers (and torch) into the receive path costs seconds and hundreds of MB.
This is the same arithmetic — waveform normalised to zero mean and unit variance, a centred
(reflect-padded) 400-sample periodic Hann STFT every 160 samples, power spectrum, Slaney mel
filters, log10 floored at 1e-10, clamped to 8 below the maximum, then (x + 4) / 4 — and
`tests/voice/test_smart_turn.py` checks it against the transformers extractor.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
MEL_FLOOR = 1e-10
NORM_EPS = 1e-7


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log = freq >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0) * (27.0 / np.log(6.4)), mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE) -> np.ndarray:
    """Slaney-normalised triangular filters, shape (n_fft // 2 + 1, n_mels)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2)), n_mels + 2))
    bins = np.linspace(0, rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - bins[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]


_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window
_FILTERS = mel_filters()


def log_mel(audio: np.ndarray, seconds: float = 8.0) -> np.ndarray:
    """(80, frames) float32 features of exactly `seconds` of 16 kHz audio (zero-padded at the
    end or cut), as `WhisperFeatureExtractor(chunk_length=seconds)` with `do_normalize=True`."""
    samples = int(seconds * RATE)
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[:samples]
    x = np.pad(x, (0, samples - len(x)))
    x = (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    spec = np.log10(np.maximum(MEL_FLOOR, _FILTERS.T @ power.T))[:, :-1]
    spec = np.maximum(spec, spec.max() - 8.0)
    return ((spec + 4.0) / 4.0).astype(np.float32)
