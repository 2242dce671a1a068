"""Smart Turn v3.2: a small audio model that hears whether a speaker has finished their turn.

A silence timer cannot tell "What is the capital of … France?" from "What is the capital of
France?": both pause. Smart Turn (Daily/Pipecat, BSD-2-Clause) listens to how the sentence
ends — intonation, an unfinished phrase — and returns P(turn complete). The int8 ONNX file
ships inside the `pipecat-ai` wheel; like Silero we install that wheel with `--no-deps` into a
temporary folder, verify the one file by sha256 and copy it to `models/turn/`. It runs on
onnxruntime with one thread (~75 ms a call on a 2.8 GHz Xeon): the LLM needs the other cores.

Input: the Whisper log-mel of the last 8 s of 16 kHz audio, left-padded with zeros (as
Pipecat feeds it: the utterance from shortly before its onset through the current silence).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Config
from assistant.cpu_features import has_vnni
from assistant.errors import ModelNotAvailableError
from assistant.provision import PackagedFile, install_packaged, packaged_ready
from assistant.voice.logmel import RATE, log_mel

SMART_TURN = PackagedFile("pipecat-ai==1.14.0", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                          "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", 8_679_182)
WINDOW_S = 8.0  # the model sees this much audio, the newest at the end
THRESHOLD = 0.5  # the model card's decision threshold on P(complete)


def smart_turn_path(models_dir: Path) -> Path:
    return Path(models_dir) / "turn" / "smart-turn-v3.2-cpu.onnx"


def is_smart_turn_ready(models_dir: Path) -> bool:
    return packaged_ready([SMART_TURN], [smart_turn_path(models_dir)])


def provision_smart_turn(models_dir: Path, *, force: bool = False) -> Path:
    target = smart_turn_path(models_dir)
    if force or not is_smart_turn_ready(models_dir):
        install_packaged([SMART_TURN], [target])
    return target


def fetch_turn(config: Config, force: bool) -> str:
    return f"smart turn ready: {provision_smart_turn(config.storage.models_dir, force=force)}"


def turn_rows(config: Config) -> list[dict[str, Any]]:
    return [{"name": "smart-turn-v3.2", "ready": is_smart_turn_ready(config.storage.models_dir),
             "detail": f"Smart Turn v3.2 end-of-turn model from pipecat-ai (BSD-2-Clause) -> "
                       f"{smart_turn_path(config.storage.models_dir)}"}]


@functools.lru_cache(maxsize=2)
def _session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not has_vnni():
        # On x86 CPUs without VNNI (AVX2 only: most consumer CPUs before Ice Lake / Zen 4) onnxruntime's
        # fast u8s8 kernel saturates 16-bit sums, and this int8 model then hears "Remind me to call my ..."
        # as finished (P 0.82 instead of 0.05, measured). VNNI sums into 32 bits: there the fast kernel
        # is exact, and the precise one only costs time (a call took 112 against 74 ms on a VNNI Xeon).
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def model_window(audio: np.ndarray) -> np.ndarray:
    """The last `WINDOW_S` seconds of `audio`, left-padded with zeros to exactly that length."""
    samples = int(WINDOW_S * RATE)
    tail = np.asarray(audio, dtype=np.float32).reshape(-1)[-samples:]
    return np.pad(tail, (samples - len(tail), 0))


class SmartTurn:
    """P(the speaker finished their turn) from the audio of the utterance so far. Thread-safe:
    one session is shared; calls are serialised (one thread is all it should take)."""

    def __init__(self, model_path: Path, threshold: float = THRESHOLD) -> None:
        if not Path(model_path).is_file():
            raise ModelNotAvailableError(
                f"The Smart Turn model is not provisioned ({model_path}); run `assistant models fetch` "
                "or set voice.end_of_turn = \"silence\".")
        self._session = _session(str(model_path))
        self.threshold = threshold
        self._lock = threading.Lock()
        # Its own thread: a verdict must not queue behind recognition or synthesis in the shared pool.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")

    def probability(self, audio: np.ndarray) -> float:
        features = log_mel(model_window(audio), WINDOW_S)[None, :, :]
        with self._lock:
            (logits,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(logits).reshape(-1)[0])

    async def probability_async(self, audio: np.ndarray) -> float:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.probability, audio)

    def complete(self, audio: np.ndarray) -> bool:
        return self.probability(audio) > self.threshold
