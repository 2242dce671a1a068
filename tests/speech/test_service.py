"""SpeechService: voices by name and language, streaming speech, files; the CLI as a user runs it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Config
from assistant.errors import AudioError, ModelNotAvailableError, NoSpeechError
from assistant.speech.service import SpeechService, synthesize_to_file, transcribe_file
from assistant.speech.synth import list_voices, voice_for_language
from assistant.speech.wer import wer
from tests.conftest import REPO, run_cli


def test_voice_for_language_prefers_the_map_then_an_installed_voice() -> None:
    available = ["en_US-joe-medium", "ru_RU-irina-medium"]
    pick = dict(default="en_US-joe-medium", available=available)
    assert voice_for_language("ru", by_language={}, **pick) == "ru_RU-irina-medium"
    assert voice_for_language("ru", by_language={"ru": "ru_RU-other"}, **pick) == "ru_RU-other"
    assert voice_for_language("de", by_language={}, **pick) == "en_US-joe-medium"
    assert voice_for_language(None, by_language={}, **pick) == "en_US-joe-medium"
    assert voice_for_language("en-GB", by_language={}, **pick) == "en_US-joe-medium"


def test_a_dropped_in_voice_is_listed_and_selectable(tmp_path: Path, speech_config: Config) -> None:
    src = speech_config.storage.voices_dir / "en_US-joe-medium.onnx"
    os.symlink(src, tmp_path / "ru_RU-test-medium.onnx")
    shutil.copy(src.with_name(src.name + ".json"), tmp_path / "ru_RU-test-medium.onnx.json")
    (tmp_path / "half.onnx").write_bytes(b"")  # no .json: not a voice
    assert list_voices(tmp_path) == ["ru_RU-test-medium"]
    storage = dataclasses.replace(speech_config.storage, voices_dir=tmp_path)
    service = SpeechService(dataclasses.replace(speech_config.speech, voices={"ru": "ru_RU-test-medium"}), storage)
    assert service.synthesize_sync("Hello.", language="ru").voice == "ru_RU-test-medium"
    with pytest.raises(ModelNotAvailableError, match="available: ru_RU-test-medium"):
        service.synthesize_sync("Hello.", voice="nope")


def test_nothing_to_say(service: SpeechService) -> None:
    with pytest.raises(AudioError, match="no text"):
        service.synthesize_sync("   ")


@pytest.mark.slow
async def test_first_audio_arrives_before_the_reply_is_finished(service: SpeechService) -> None:
    """The text stream stalls after the first sentence until audio for it exists (or 30 s pass)."""
    heard_first = asyncio.Event()
    stalled_in_vain: list[bool] = []

    async def deltas():
        yield "Hello there. This"
        try:
            await asyncio.wait_for(heard_first.wait(), timeout=30)
            stalled_in_vain.append(False)
        except TimeoutError:
            stalled_in_vain.append(True)
        for word in " reply is still being written by the model. And it goes on.".split(" "):
            yield word + " "

    chunks = []
    async for audio in service.speak_stream(deltas()):
        heard_first.set()
        chunks.append(audio)
    assert stalled_in_vain == [False]
    assert [c.text for c in chunks] == ["Hello there.", "This reply is still being written by the model.",
                                        "And it goes on."]
    assert all(c.rate == 22050 and c.samples.size > 0 for c in chunks)


@pytest.mark.slow
async def test_an_error_in_the_text_stream_reaches_the_caller(service: SpeechService) -> None:
    async def deltas():
        yield "One. "
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        async for _ in service.speak_stream(deltas()):
            pass


@pytest.mark.slow
def test_files_round_trip_through_the_plain_functions(tmp_path: Path, speech_config: Config) -> None:
    text = "Please remind me to call my sister tomorrow morning."
    out = synthesize_to_file(speech_config, text, tmp_path / "reply.ogg")
    assert out.read_bytes()[:4] == b"OggS"
    assert wer(text, transcribe_file(speech_config, out).text) <= 0.2


@pytest.mark.slow
def test_cli_say_then_transcribe(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    wav = tmp_path / "hello.wav"
    said = run_cli("--config", str(REPO / "config.toml"), "say", "Turn off the lights in the kitchen.",
                   "-o", str(wav), "--voice", "en_US-joe-medium", env=env)
    assert said.returncode == 0, said.stderr
    assert wav.read_bytes()[:4] == b"RIFF"
    heard = run_cli("--config", str(REPO / "config.toml"), "transcribe", str(wav), "--json", env=env)
    assert heard.returncode == 0, heard.stderr
    result = json.loads(heard.stdout)
    assert wer("Turn off the lights in the kitchen.", result["text"]) <= 0.2
    assert result["segments"] and result["language"] == "en" and result["elapsed_seconds"] > 0
    plain = run_cli("--config", str(REPO / "config.toml"), "transcribe", str(wav), env=env)
    assert plain.stdout.strip() == result["text"]
    # onnxruntime (under Piper) keeps one session-id file, `.ses`, in the temp dir; nothing else may remain.
    assert [name for name in os.listdir(tmp_path / "tmp") if name != ".ses"] == []


@pytest.mark.slow
def test_cli_bad_inputs_give_one_friendly_line(tmp_path: Path, speech_config: Config) -> None:
    fake = tmp_path / "fake.ogg"
    fake.write_text("not audio at all, just text renamed to .ogg\n" * 10)
    silent = tmp_path / "silent.wav"
    from assistant.audio import encode_wav
    import numpy as np
    silent.write_bytes(encode_wav(np.zeros(16000, np.float32), 16000))
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    for path, message in ((fake, "not audio we can read"), (silent, "No speech heard"), (empty, "empty")):
        result = run_cli("--config", str(REPO / "config.toml"), "transcribe", str(path))
        assert result.returncode == 1
        assert message in result.stderr and "Traceback" not in result.stderr
    bad_voice = run_cli("--config", str(REPO / "config.toml"), "say", "Hi.", "-o", str(tmp_path / "x.wav"),
                        "--voice", "nobody")
    assert bad_voice.returncode == 3 and "en_US-joe-medium" in bad_voice.stderr
    assert not (tmp_path / "x.wav").exists()
    with pytest.raises(NoSpeechError):
        transcribe_file(speech_config, silent)


def test_steady_synthesis_gives_the_same_samples_every_time(service: SpeechService) -> None:
    first = service.synthesize_sync("Turn off the lights in the kitchen.", steady=True)
    again = service.synthesize_sync("Turn off the lights in the kitchen.", steady=True)
    assert np.array_equal(first.samples, again.samples) and first.seconds > 1.0
