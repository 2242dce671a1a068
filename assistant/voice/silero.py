"""Silero VAD (`voice.vad = "silero"`): a small neural voice detector, better than webrtc in noise.

The model is the ONNX file inside the `silero-vad` wheel on PyPI (MIT). Its Python package
imports torch and torchaudio, so we install the wheel with `--no-deps` into a temporary folder,
verify the one file we need by sha256 and run it with onnxruntime (already here for Piper):
~85 µs per 32 ms window. One inference session is shared by every speaker; each speaker keeps
its own recurrent state.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Config
from assistant.errors import ModelNotAvailableError
from assistant.provision import PackagedFile, install_packaged, packaged_ready
from assistant.voice.frames import FrameVad

SILERO = PackagedFile("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
                      "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2_327_524)
RATE = 16000
WINDOW = 512  # samples per inference at 16 kHz (32 ms), what the model was trained on
CONTEXT = 64  # samples of the previous window the model sees in front of each one
HYSTERESIS = 0.15  # once speaking, stay speaking down to threshold - 0.15 (as silero's own helper does)


def silero_model_path(models_dir: Path) -> Path:
    return Path(models_dir) / "vad" / "silero_vad.onnx"


def is_silero_ready(models_dir: Path) -> bool:
    return packaged_ready([SILERO], [silero_model_path(models_dir)])


def provision_silero(models_dir: Path, *, force: bool = False) -> Path:
    target = silero_model_path(models_dir)
    if force or not is_silero_ready(models_dir):
        install_packaged([SILERO], [target])
    return target


def fetch_vad(config: Config, force: bool) -> str:
    return f"silero ready: {provision_silero(config.storage.models_dir, force=force)} (webrtc needs no download)"


def vad_rows(config: Config) -> list[dict[str, Any]]:
    return [{"name": "silero", "ready": is_silero_ready(config.storage.models_dir),
             "detail": f"Silero VAD from PyPI (MIT) -> {silero_model_path(config.storage.models_dir)}"}]


@functools.lru_cache(maxsize=4)
def _session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a tiny model: threads would only compete with the LLM
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class SileroVad(FrameVad):
    """Same interface as `WebRtcVad`: 20 ms frames in, (frame, is_speech) out. Each 20 ms frame
    takes the decision of the latest 32 ms window, so decisions trail the audio by ≤ 32 ms."""

    def __init__(self, model_path: Path, threshold: float = 0.5) -> None:
        if not Path(model_path).is_file():
            raise ModelNotAvailableError(
                f"The Silero VAD model is not provisioned ({model_path}); run `assistant models fetch` "
                "or set voice.vad = \"webrtc\".")
        super().__init__()
        self._session = _session(str(model_path))
        self.threshold = threshold
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._window = np.zeros(0, np.float32)  # samples short of a 32 ms window
        self._speech = False
        self.last_probability = 0.0

    def _infer(self, chunk: np.ndarray) -> float:
        model_input = np.concatenate([self._context, chunk])[None, :]
        out, self._state = self._session.run(None, {"input": model_input, "state": self._state,
                                                   "sr": np.array(RATE, np.int64)})
        self._context = chunk[-CONTEXT:]
        return float(out[0][0])

    def is_speech(self, frame: np.ndarray) -> bool:
        self._window = np.concatenate([self._window, frame])
        while len(self._window) >= WINDOW:
            chunk, self._window = self._window[:WINDOW], self._window[WINDOW:]
            p = self.last_probability = self._infer(np.clip(chunk, -1.0, 1.0))
            self._speech = p >= self.threshold or (self._speech and p >= self.threshold - HYSTERESIS)
        return self._speech
