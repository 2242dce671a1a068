"""The one speech object the terminal and the bot share: decode, recognise, speak, stream.

Models load lazily (a text-only session never pays for whisper or Piper) and once: the
recogniser and each voice are shared by every request. Blocking work runs in threads so an
event loop (the bot) keeps serving while audio is being processed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterable

import numpy as np

from assistant.audio import RECOGNITION_RATE, AudioLimits, decode_audio, write_audio
from assistant.config import Config, SpeechConfig, StorageConfig
from assistant.speech.provision import resolve_whisper_model
from assistant.speech.decoding import RecognitionOptions
from assistant.speech.recognizer import Recognizer, Transcript, WhisperCppRecognizer
from assistant.speech.sentences import SentenceSplitter, speakable
from assistant.speech.synth import SpeechAudio, VoiceLibrary
from assistant.speech.trim import SpeechTrimmer

logger = logging.getLogger(__name__)

AudioInput = bytes | Path | np.ndarray  # file bytes, a file, or 16 kHz mono float32 samples
_END = object()


class SpeechService:
    """Recognition and synthesis configured by `[speech]` and `[storage]`."""

    def __init__(self, speech: SpeechConfig, storage: StorageConfig, *, recognizer: Recognizer | None = None) -> None:
        self.speech = speech
        self.storage = storage
        self.limits = AudioLimits(max_seconds=speech.max_audio_seconds, max_bytes=speech.max_audio_bytes)
        self.voices = VoiceLibrary(storage.voices_dir, default=speech.voice, by_language=speech.voices)
        self._recognizer = recognizer
        self._load_lock = threading.Lock()
        # One set of decoding options for every clip, whoever sends it (voice message, live voice, CLI).
        self.options = RecognitionOptions.from_config(speech)
        self.trimmer = _trimmer(speech, storage)

    @property
    def recognizer(self) -> Recognizer:
        """The whisper model, loaded on first use (thread-safe)."""
        with self._load_lock:
            if self._recognizer is None:
                path = resolve_whisper_model(self.speech, self.storage.models_dir)
                self._recognizer = WhisperCppRecognizer(path, threads=self.speech.threads, options=self.options)
            return self._recognizer

    def decode(self, audio: AudioInput) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            return audio.astype(np.float32, copy=False)
        return decode_audio(audio, self.limits)

    def transcribe_sync(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        """Decode (within the limits), cut to the speech, recognise; raises AudioError / NoSpeechError."""
        started = time.perf_counter()
        samples = self.decode(audio)
        decoded = time.perf_counter()
        speech = self.trimmer.trim(samples)
        trimmed = time.perf_counter()
        transcript = self.recognizer.transcribe(speech, language=language, options=self.options)
        transcript.extra["decode_seconds"] = round(decoded - started, 4)
        transcript.extra["vad_seconds"] = round(trimmed - decoded, 4)
        transcript.extra["speech_seconds"] = round(speech.size / RECOGNITION_RATE, 3)
        return transcript

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        return await asyncio.to_thread(self.transcribe_sync, audio, language=language)

    def synthesize_sync(self, text: str, *, language: str | None = None, voice: str | None = None,
                        steady: bool = False) -> SpeechAudio:
        return self.voices.synthesize(speakable(text) or text, voice=voice, language=language, steady=steady)

    async def synthesize(self, text: str, language: str | None = None, *, voice: str | None = None) -> SpeechAudio:
        return await asyncio.to_thread(self.synthesize_sync, text, language=language, voice=voice)

    async def speak_stream(self, text_deltas: AsyncIterator[str] | Iterable[str], *, language: str | None = None,
                           voice: str | None = None) -> AsyncIterator[SpeechAudio]:
        """Audio for each sentence of a streamed reply, the first one before the reply is finished.

        The deltas are read by a separate task, so the text stream never waits on synthesis;
        each sentence is spoken in a worker thread, in order. The first piece may be a clause
        (`speech.first_clause_words`): on a CPU each word of a sentence costs ~50 ms to generate.
        """
        queue: asyncio.Queue[object] = asyncio.Queue()

        async def read() -> None:
            splitter = SentenceSplitter(first_clause_words=self.speech.first_clause_words)
            try:
                if hasattr(text_deltas, "__aiter__"):
                    async for delta in text_deltas:
                        for sentence in splitter.feed(delta):
                            queue.put_nowait(sentence)
                else:
                    for delta in text_deltas:
                        for sentence in splitter.feed(delta):
                            queue.put_nowait(sentence)
                for sentence in splitter.flush():
                    queue.put_nowait(sentence)
            except BaseException as exc:  # hand the failure to the consumer, which re-raises it
                queue.put_nowait(exc)
                raise
            finally:
                queue.put_nowait(_END)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                text = speakable(str(item))
                if not any(ch.isalnum() for ch in text):
                    continue  # a lone "```" or "---": nothing to say
                yield await asyncio.to_thread(self.voices.synthesize, text, voice=voice, language=language)
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def _trimmer(speech: SpeechConfig, storage: StorageConfig) -> SpeechTrimmer:
    """Silero when its model is provisioned; webrtc (worse in noise) otherwise, said once in the log."""
    from assistant.voice.silero import is_silero_ready, silero_model_path

    kind = speech.vad
    if kind == "silero" and not is_silero_ready(storage.models_dir):
        logger.warning("speech.vad = \"silero\" but its model is not provisioned (run `assistant models fetch`); "
                       "using the webrtc detector, which lets more noise through to whisper")
        kind = "webrtc"
    return SpeechTrimmer(kind, speech.min_speech_ms, silero_model_path(storage.models_dir))


def transcribe_file(config: Config, path: Path, *, language: str | None = None,
                    service: SpeechService | None = None) -> Transcript:
    """What `assistant transcribe` and `assistant ask --audio` do with a file."""
    service = service or SpeechService(config.speech, config.storage)
    return service.transcribe_sync(Path(path), language=language)


def synthesize_to_file(config: Config, text: str, out_path: Path, *, voice: str | None = None,
                       language: str | None = None, service: SpeechService | None = None) -> Path:
    """Speak `text` into a .wav or .ogg file (what `assistant say` and `ask --speak` do)."""
    service = service or SpeechService(config.speech, config.storage)
    audio = service.synthesize_sync(text, language=language, voice=voice)
    return write_audio(Path(out_path), audio.samples, audio.rate)


__all__ = ["SpeechService", "transcribe_file", "synthesize_to_file", "RECOGNITION_RATE"]
