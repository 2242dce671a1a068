"""Speech fixtures: the repository's provisioned whisper models and voice, and a round-trip set.

`assistant models fetch` (run by the setup script) provisions models/whisper and voices/; when
they are missing these fixtures provision them the same way, so a clean clone also works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.audio import RECOGNITION_RATE, AudioLimits, decode_audio, encode_ogg_opus
from assistant.config import Config
from assistant.speech.provision import (is_voice_ready, is_whisper_ready, provision_voice, provision_whisper,
                                        whisper_file)
from assistant.speech.service import SpeechService
from assistant.speech.wer import ROUND_TRIP_SENTENCES

ROUND_TRIP = list(ROUND_TRIP_SENTENCES)


@pytest.fixture(scope="session")
def speech_config(repo_config: Config) -> Config:
    """The shipped config, with tiny.en, base and the default voice provisioned in the repo."""
    for name in ("tiny.en", "base"):
        if not is_whisper_ready(repo_config.storage.models_dir, name):
            provision_whisper(repo_config.storage.models_dir, name)
    if not is_voice_ready(repo_config.storage.voices_dir, repo_config.speech.voice):
        provision_voice(repo_config.storage.voices_dir, repo_config.speech.voice)
    return repo_config


@pytest.fixture(scope="session")
def tiny_en(speech_config: Config) -> Path:
    return whisper_file(speech_config.storage.models_dir, "tiny.en")


@pytest.fixture(scope="session")
def service(speech_config: Config) -> SpeechService:
    return SpeechService(speech_config.speech, speech_config.storage)


@pytest.fixture(scope="session")
def round_trip_clips(service: SpeechService) -> list[tuple[str, np.ndarray]]:
    """Each sentence spoken by Piper, sent through OGG/Opus as a voice message would be, decoded to 16 kHz.
    Steady (no prosody noise): the same clips every run, so a comparison that passes once always does."""
    clips = []
    for text in ROUND_TRIP:
        spoken = service.synthesize_sync(text, steady=True)
        ogg = encode_ogg_opus(spoken.samples, spoken.rate)
        clips.append((text, decode_audio(ogg, AudioLimits(60, 1 << 24))))
    return clips


@pytest.fixture(scope="session")
def speech_ogg(service: SpeechService) -> bytes:
    spoken = service.synthesize_sync("Hello there. This is a short voice message for the test.")
    return encode_ogg_opus(spoken.samples, spoken.rate)


def seconds(audio: np.ndarray) -> float:
    return audio.size / RECOGNITION_RATE
