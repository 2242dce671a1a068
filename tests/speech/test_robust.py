"""Recognition of voices other than Piper: stable text on a shared model, no words from noise,
accuracy against faster-whisper, repeated-phrase guard, Russian. Clips are made by espeak-ng
at test time (bench/speech_set.py); nothing large is committed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Config
from assistant.errors import ConfigError, NoSpeechError
from assistant.speech.decoding import (RecognitionOptions, compression_ratio, cut_repeats, first_repeat,
                                       is_repetitive)
from assistant.speech.provision import whisper_file
from assistant.speech.recognizer import WhisperCppRecognizer, remove_repeats
from assistant.speech.service import SpeechService
from assistant.speech.trim import SpeechTrimmer
from assistant.speech.wer import word_errors
from bench.speech_set import SENTENCES, evaluation_set, have_espeak, russian_clip
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed (scripts/setup.sh installs it)")
HALLUCINATION = "The library opens at the island of the morning and closes at five. The library opens at five."


def test_repeated_phrases_are_found_and_cut() -> None:
    assert first_repeat(HALLUCINATION) is not None
    assert cut_repeats(HALLUCINATION) == "The library opens at the island of the morning and closes at five."
    # the recogniser drops repeated sentences first, then cuts a phrase that starts over
    assert remove_repeats(cut_repeats("Thank you. Thank you. Thank you. Thank you.")) == "Thank you."
    options = RecognitionOptions()
    assert is_repetitive("yes " * 40, options) and compression_ratio("yes " * 40) > 2.4
    for sentence in SENTENCES:  # real requests never trip the guard
        assert not is_repetitive(sentence, options) and cut_repeats(sentence) == sentence


def test_an_english_only_model_refuses_another_language(tiny_en: Path) -> None:
    with pytest.raises(ConfigError, match="multilingual"):
        WhisperCppRecognizer(tiny_en, threads=1, options=RecognitionOptions(language="ru"))


def test_the_vad_keeps_every_spoken_clip_and_refuses_noise(speech_config: Config) -> None:
    from assistant.voice.silero import provision_silero

    trimmer = SpeechTrimmer("silero", 200, provision_silero(speech_config.storage.models_dir))
    for clip in evaluation_set(("clean", "5dB", "noise"), limit=12):
        if clip.subset == "noise":
            with pytest.raises(NoSpeechError):
                trimmer.trim(clip.audio)
            continue
        kept = trimmer.trim(clip.audio)
        assert 1.0 < kept.size / 16000 <= clip.audio.size / 16000, clip.name


@pytest.mark.slow
def test_noise_only_clips_give_no_text(service: SpeechService) -> None:
    for clip in evaluation_set(("noise",)):
        with pytest.raises(NoSpeechError):
            text = service.transcribe_sync(clip.audio).text
            pytest.fail(f"{clip.name} was heard as {text!r}")


FRESH = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from assistant.speech.decoding import RecognitionOptions
    from assistant.speech.recognizer import WhisperCppRecognizer, remove_repeats
    model, options, *clips = sys.argv[1:]
    for clip in clips:  # a freshly loaded model for every clip
        recognizer = WhisperCppRecognizer(Path(model), threads=1, options=eval(options))
        print(recognizer.transcribe(np.load(clip)).text)
""")


@pytest.mark.slow
@pytest.mark.parametrize("beam_size", [1, 5])
def test_same_audio_same_text_on_a_shared_model_and_in_fresh_processes(speech_config: Config, tmp_path: Path,
                                                                       beam_size: int) -> None:
    """The bot keeps one model for every message and call; what it decoded before (a longer clip
    especially) must not change what it hears next. Beam search draws its candidates at random
    in whisper.cpp: on the shared model the 5 dB clips came back different on every call."""
    import dataclasses

    clips = evaluation_set(("15dB", "5dB"), limit=4)
    options = dataclasses.replace(SpeechService(speech_config.speech, speech_config.storage).options,
                                  beam_size=beam_size)
    path = whisper_file(speech_config.storage.models_dir, "tiny.en")
    shared = WhisperCppRecognizer(path, threads=1, options=options)
    first = [shared.transcribe(c.audio).text for c in clips]
    shared.transcribe(np.concatenate([c.audio for c in clips])[: 16000 * 12])  # a long clip in between
    again = [shared.transcribe(c.audio).text for c in reversed(clips)][::-1]
    assert [shared.transcribe(clips[-1].audio).text for _ in range(2)] == [first[-1]] * 2
    files = []
    for i, clip in enumerate(clips):
        np.save(tmp_path / f"{i}.npy", clip.audio)
        files.append(str(tmp_path / f"{i}.npy"))
    done = subprocess.run([sys.executable, "-c", FRESH, str(path), repr(options), *files], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=True)
    fresh = done.stdout.splitlines()
    assert first == again == fresh


@pytest.mark.slow
def test_clean_speech_is_recognised_as_well_as_faster_whisper(speech_config: Config) -> None:
    """Our greedy path against faster-whisper on the same weights, on 18 clean sentences.

    The issue's goal (within 2 points of faster-whisper beam 5) is NOT met on this subset:
    29 errors in 129 words against beam 5's 24 and greedy's 22 (measured 2026-12-02; the
    6-sentence benchmark run, where we lead, is too small to say otherwise). whisper.cpp runs
    the converted weights in float16, faster-whisper in float32. Guarded here against getting
    worse: within 6 points of either reference.
    """
    import dataclasses

    from bench.speech_reference import FasterWhisper

    # one thread: this suite shares the CPU with other tests, where two spinning threads run ~5x slower
    service = SpeechService(dataclasses.replace(speech_config.speech, threads=1), speech_config.storage)
    clips = evaluation_set(("clean",), limit=18)
    references = {beam: FasterWhisper(speech_config.storage.models_dir, "tiny.en", beam_size=beam, threads=1)
                  for beam in (1, 5)}
    ours, words, ref = 0, 0, {1: 0, 5: 0}
    for clip in clips:
        e, n = word_errors(clip.text, service.transcribe_sync(clip.audio).text)
        ours, words = ours + e, words + n
        for beam, model in references.items():
            ref[beam] += word_errors(clip.text, model.transcribe(clip.audio))[0]
    summary = f"ours {ours}/{words} errors, faster-whisper greedy {ref[1]}, beam 5 {ref[5]}"
    assert ours / words <= min(ref.values()) / words + 0.06, summary


@pytest.mark.slow
def test_russian_is_heard_in_russian(speech_config: Config) -> None:
    """Configured "ru": Cyrillic text with the key words (never an English translation);
    "auto": the language is detected as Russian."""
    text, keys, audio = russian_clip()
    path = whisper_file(speech_config.storage.models_dir, "base")
    recognizer = WhisperCppRecognizer(path, threads=1, options=RecognitionOptions(language="ru"))
    heard = recognizer.transcribe(audio)
    assert heard.language == "ru"
    assert any("\u0400" <= ch <= "\u04ff" for ch in heard.text), heard.text
    for key in keys:
        assert key in heard.text.lower(), heard.text
    detected = recognizer.transcribe(audio, language="auto")
    assert detected.language == "ru", detected.text


class Recording:
    """The real recogniser, noting the options each call brings."""

    def __init__(self, inner: WhisperCppRecognizer) -> None:
        self.inner, self.name, self.multilingual = inner, inner.name, inner.multilingual
        self.calls: list[RecognitionOptions | None] = []

    def transcribe(self, audio: np.ndarray, *, language: str | None = None,
                   options: RecognitionOptions | None = None):  # type: ignore[no-untyped-def]
        self.calls.append(options)
        return self.inner.transcribe(audio, language=language, options=options)


@pytest.mark.slow
async def test_voice_messages_and_live_voice_share_one_recogniser_and_its_options(
        speech_config: Config, tiny_en: Path, speech_ogg: bytes) -> None:
    recording = Recording(WhisperCppRecognizer(tiny_en, threads=1))
    service = SpeechService(speech_config.speech, speech_config.storage, recognizer=recording)
    message = await service.transcribe(speech_ogg)  # what the voice-message cog sends: the file's bytes
    live = await service.transcribe(service.decode(speech_ogg))  # what a voice call sends: 16 kHz samples
    assert message.text == live.text
    assert recording.calls == [service.options, service.options]
    assert service.options == RecognitionOptions.from_config(speech_config.speech)


def test_a_russian_reply_needs_a_russian_voice(service: SpeechService) -> None:
    from assistant.errors import VoiceNotAvailableError
    from assistant.speech.synth import has_voice_for, language_of_text

    assert language_of_text("Сегодня в Москве солнечно.") == "ru"
    assert language_of_text("It is sunny in Moscow (Москва) today.") is None
    voices = ["en_US-joe-medium", "ru_RU-irina-medium"]
    assert has_voice_for("ru", default="en_US-joe-medium", by_language={}, available=voices)
    assert not has_voice_for("ru", default="en_US-joe-medium", by_language={}, available=voices[:1])
    assert has_voice_for(None, default="en_US-joe-medium", by_language={}, available=voices[:1])
    if not any(v.startswith("ru") for v in service.voices.available()):
        with pytest.raises(VoiceNotAvailableError, match="No Russian voice is installed"):
            service.synthesize_sync("Сегодня в Москве солнечно.")


def test_models_list_says_which_model_serves_which_language(speech_config: Config) -> None:
    import dataclasses

    from assistant.speech.quality import MEASURED_WER, describe

    english = describe(speech_config.speech, "tiny.en")
    assert "English only" in english and "in use for speech.language = 'en'" in english
    russian = dataclasses.replace(speech_config.speech, language="ru")
    assert "in use for speech.language = 'ru'" in describe(russian, "base")
    assert "in use" not in describe(russian, "tiny.en")
    pinned = dataclasses.replace(speech_config.speech, whisper_model="base")
    assert "serves every language" in describe(pinned, "base") and "serves" not in describe(pinned, "tiny.en")
    for name in MEASURED_WER:
        assert "WER" in describe(speech_config.speech, name)
