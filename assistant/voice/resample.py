"""48 kHz stereo int16 → 16 kHz mono float32, streaming, for VAD and recognition.

A 63-tap windowed-sinc low-pass (cut-off 7.2 kHz) then keeping every third sample; the
filter's history and the decimation phase carry over between calls, so feeding 20 ms
frames one by one gives the same result as resampling the whole utterance at once.
"""

from __future__ import annotations

import numpy as np

RATIO = 3
_TAPS = 63


def _lowpass() -> np.ndarray:
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    cutoff = 7200 / 48000  # cycles per input sample
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(_TAPS)
    return (taps / taps.sum()).astype(np.float32)


_FILTER = _lowpass()


class Downsampler:
    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float32)
        self._phase = 0

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        """`pcm`: int16, (samples, channels) or (samples,). Returns float32 in [-1, 1] at 16 kHz."""
        mono = pcm.astype(np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=1)
        mono /= 32768.0
        signal = np.concatenate([self._history, mono])
        filtered = np.convolve(signal, _FILTER, mode="valid")  # one output per new input sample
        self._history = signal[len(signal) - (_TAPS - 1):]
        out = filtered[self._phase::RATIO]
        self._phase = (self._phase - len(filtered)) % RATIO
        return out.astype(np.float32)
