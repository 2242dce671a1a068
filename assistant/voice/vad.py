"""Voice activity detection on 20 ms frames of 16 kHz mono float32.

webrtcvad (webrtcvad-wheels) costs ~2 µs a frame, so one detector per speaker is cheap.
Frames of any length are re-cut into exact 20 ms frames (`assistant.voice.frames`), carrying the remainder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assistant.errors import ConfigError
from assistant.voice.frames import FRAME_SECONDS, VAD_FRAME, VAD_RATE, FrameVad

__all__ = ["FRAME_SECONDS", "VAD_FRAME", "VAD_RATE", "FrameVad", "QuietTailGate", "WebRtcVad", "make_vad"]

class WebRtcVad(FrameVad):
    def __init__(self, aggressiveness: int = 2) -> None:
        import webrtcvad

        super().__init__()
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        return bool(self._vad.is_speech(pcm, VAD_RATE))


class QuietTailGate:
    """Counts a voiced frame as silence when it is more than `floor_db` below the loudest voiced
    frame of the utterance so far (only while someone is speaking).

    Why: webrtc VAD smooths its decisions for telephony and keeps saying "speech" for ~150 ms
    after a voice has faded (measured on Piper speech: 145 ms at aggressiveness 2, 40 ms with
    this gate at 40 dB). Every one of those ms delays the end of the utterance, and the answer.
    Relative to the speaker's own level, so a quiet microphone is not cut short; noise louder
    than the floor still counts as speech, as before.
    """

    def __init__(self, floor_db: float = 40.0) -> None:
        self.ratio = 10 ** (-floor_db / 20) if floor_db > 0 else 0.0
        self.peak = 0.0

    def __call__(self, frame: np.ndarray, speech: bool, speaking: bool) -> bool:
        if not speech:
            if not speaking:
                self.peak = 0.0  # between utterances: the next one sets its own level
            return False
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
        self.peak = max(self.peak, rms)
        return not speaking or rms >= self.peak * self.ratio


def make_vad(kind: str, aggressiveness: int, model_path: Path | None = None) -> FrameVad:
    """A fresh detector for one speaker: "webrtc" (aggressiveness 0-3) or "silero" (needs its
    provisioned model file)."""
    if kind == "webrtc":
        return WebRtcVad(aggressiveness)
    if kind == "silero":
        from assistant.voice.silero import SileroVad

        if model_path is None:
            raise ConfigError("voice.vad = \"silero\" needs its model file; none was given.")
        return SileroVad(model_path)
    raise ConfigError(f"voice.vad = {kind!r} is unknown; use \"webrtc\" or \"silero\".")
