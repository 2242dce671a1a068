"""Speech synthesis with Piper voices found in the voices folder.

A voice is a pair `NAME.onnx` + `NAME.onnx.json` in `storage.voices_dir`; the NAME is how
config and commands refer to it. Any Piper voice a user drops there is usable at once, and
`speech.voices` maps a reply's language to a voice (so Russian text is read by a Russian
voice, not spelled out by an English one). Voices load once, on first use, and are shared.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from assistant.errors import AudioError, ModelNotAvailableError, VoiceNotAvailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechAudio:
    """Synthesised speech: mono float32 samples in [-1, 1] at `rate`."""

    samples: np.ndarray
    rate: int
    voice: str
    text: str = ""
    elapsed_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.samples.size / self.rate


def list_voices(voices_dir: Path) -> list[str]:
    """Names of the complete Piper voices (model and its JSON config) in `voices_dir`."""
    if not voices_dir.is_dir():
        return []
    return sorted(p.name[:-len(".onnx")] for p in voices_dir.glob("*.onnx")
                  if p.with_name(p.name + ".json").is_file())


def voice_for_language(language: str | None, *, default: str, by_language: Mapping[str, str],
                       available: list[str]) -> str:
    """Which voice reads text in `language`: the configured map, else an installed voice of that
    language (its name starts with e.g. `ru_` or `ru-`), else the default voice."""
    if not language:
        return default
    lang = language.lower().replace("-", "_")
    base = lang.split("_")[0]
    for key in (lang, base):
        if key in by_language:
            return by_language[key]
    if default.lower().startswith((base + "_", base + "-")):
        return default
    for name in available:
        if name.lower().startswith((base + "_", base + "-")):
            return name
    return default


LANGUAGE_NAMES = {"ru": "Russian", "uk": "Ukrainian", "de": "German", "fr": "French", "es": "Spanish",
                  "it": "Italian", "pt": "Portuguese", "pl": "Polish", "en": "English"}


def language_of_text(text: str) -> str | None:
    """The reply's language where its script tells (Cyrillic: Russian); None means "the default voice's".

    Why from the text: the language model answers in the language it was asked in, and a reply
    is what gets spoken, whatever the recogniser detected for the question.
    """
    letters = [ch for ch in text if ch.isalpha()]
    cyrillic = sum("\u0400" <= ch <= "\u04ff" for ch in letters)
    return "ru" if letters and cyrillic / len(letters) > 0.5 else None


def _quiet_session(path: Path) -> Any:
    """The voice's ONNX session on one thread that sleeps when idle.

    Why: an answer is spoken while the language model still writes it, so Piper always runs beside
    llama.cpp's threads. onnxruntime's default (a thread per core, spinning between operators) took
    cycles from both: measured on the 2-core Xeon beside a decoding Qwen 0.5B, a 2-4 word piece took
    82-128 ms against 66-81 ms on one quiet thread, and decoding slowed to 9-13.5 against 13-15 tok/s.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def has_voice_for(language: str | None, *, default: str, by_language: Mapping[str, str],
                  available: list[str]) -> bool:
    """Whether some voice really speaks `language` (the default voice only counts for its own language)."""
    if not language:
        return True
    chosen = voice_for_language(language, default=default, by_language=by_language, available=available)
    base = language.lower().replace("-", "_").split("_")[0]
    return chosen != default or default.lower().startswith((base + "_", base + "-")) or base in by_language


class VoiceLibrary:
    """The voices folder: lists voices, loads each Piper voice once, synthesises text."""

    def __init__(self, voices_dir: Path, *, default: str, by_language: Mapping[str, str] | None = None) -> None:
        self.voices_dir = voices_dir
        self.default = default
        self.by_language = dict(by_language or {})
        self._loaded: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def available(self) -> list[str]:
        return list_voices(self.voices_dir)

    def path(self, name: str) -> Path:
        model = self.voices_dir / f"{name}.onnx"
        if "/" in name or not model.is_file() or not model.with_name(model.name + ".json").is_file():
            have = ", ".join(self.available()) or "none"
            raise ModelNotAvailableError(
                f"No Piper voice named {name!r} in {self.voices_dir} (available: {have}). Put NAME.onnx and "
                "NAME.onnx.json there, or run `assistant models fetch` for the default voice.")
        return model

    def choose(self, *, voice: str | None = None, language: str | None = None) -> str:
        if voice:
            return voice
        return voice_for_language(language, default=self.default, by_language=self.by_language,
                                  available=self.available())

    def load(self, name: str) -> Any:
        """The loaded PiperVoice for `name` (loaded on first use, then shared)."""
        with self._guard:
            if name in self._loaded:
                return self._loaded[name]
            path = self.path(name)
            from piper import PiperVoice

            started = time.perf_counter()
            try:
                loaded = PiperVoice.load(path)
                loaded.session = _quiet_session(path)
            except Exception as exc:  # onnxruntime/json errors: the voice files are broken
                raise ModelNotAvailableError(f"The Piper voice {name!r} could not be loaded ({exc}); "
                                             "replace its .onnx and .onnx.json files.") from None
            logger.info("Loaded Piper voice %s in %.2f s", name, time.perf_counter() - started)
            self._loaded[name] = loaded
            self._locks[name] = threading.Lock()
            return loaded

    def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None,
                   steady: bool = False) -> SpeechAudio:
        """Speak `text` with the chosen voice; raises AudioError when there is nothing to say.

        Piper samples its prosody noise at random, so the same text sounds slightly different
        each time; `steady` turns that noise off: the same text, the same samples (tests, caches).
        """
        if not text or not text.strip():
            raise AudioError("There is no text to speak; give some words.")
        language = language or language_of_text(text)
        if not voice and not has_voice_for(language, default=self.default, by_language=self.by_language,
                                           available=self.available()):
            lang = LANGUAGE_NAMES.get(str(language), str(language))
            raise VoiceNotAvailableError(f"No {lang} voice is installed, so this answer is text only "
                                         f"(docs/speech.md says how to add one).")
        name = self.choose(voice=voice, language=language)
        piper_voice = self.load(name)
        from piper import SynthesisConfig

        settings = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if steady else None
        started = time.perf_counter()
        with self._locks[name]:
            chunks = [c.audio_float_array for c in piper_voice.synthesize(text, syn_config=settings)]
        rate = int(piper_voice.config.sample_rate)
        samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        if samples.size == 0:
            raise AudioError(f"The voice {name!r} produced no sound for this text; try other words.")
        return SpeechAudio(samples=samples, rate=rate, voice=name, text=text,
                           elapsed_seconds=time.perf_counter() - started)
