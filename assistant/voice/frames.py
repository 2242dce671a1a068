"""The 20 ms frame both voice activity detectors work on, and the base class that re-cuts audio into it.

Apart from `vad.py` (which picks a detector) so that detectors in their own modules (Silero)
can subclass it without an import circle.
"""

from __future__ import annotations

import numpy as np

VAD_RATE = 16_000  # = assistant.audio.RECOGNITION_RATE (not imported: this module must stay free of PyAV)
VAD_FRAME = 320  # 20 ms at 16 kHz
FRAME_SECONDS = 0.02


class FrameVad:
    """Re-cuts audio of any length into exact 20 ms frames (carrying the remainder) and asks
    `is_speech` about each one, in order."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def is_speech(self, frame: np.ndarray) -> bool:
        raise NotImplementedError

    def frames(self, audio: np.ndarray) -> list[tuple[np.ndarray, bool]]:
        """Split `audio` (16 kHz float32) into complete 20 ms frames, each with its speech flag."""
        data = np.concatenate([self._pending, audio.astype(np.float32)])
        whole = len(data) // VAD_FRAME * VAD_FRAME
        self._pending = data[whole:]
        frames = [data[i:i + VAD_FRAME] for i in range(0, whole, VAD_FRAME)]
        return [(frame, self.is_speech(frame)) for frame in frames]
