"""Smart Turn v3.2 end-of-turn model: its provisioned file, our Whisper log-mel against the
transformers reference, and complete vs. unfinished utterances from Piper and espeak-ng voices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from assistant.speech.service import SpeechService
from assistant.voice.logmel import log_mel
from assistant.voice.smart_turn import SMART_TURN, SmartTurn, is_smart_turn_ready, model_window, smart_turn_path
from tests.voice.utterances import espeak, espeak_available, espeak_paused, piper, piper_paused

TAIL = np.zeros(3200, np.float32)  # the 200 ms of silence after which the bot asks the model
COMPLETE = ("What is the capital of France?", "Tell me a joke about cats.", "Could you tell me the name of a big city?")
UNFINISHED = (("I would like to know the", "time in Tokyo."), ("I want to buy a", "new pair of shoes."),
              ("What is the weather like in", "Paris today?"), ("Remind me to call my", "mother tomorrow."))
VOICES = ("piper", "en-us", "en-us+f3")


@pytest.fixture(scope="module")
def model(repo_config: Any) -> SmartTurn:
    if not is_smart_turn_ready(repo_config.storage.models_dir):
        pytest.fail("Smart Turn is not provisioned: run `assistant models fetch`")
    return SmartTurn(smart_turn_path(repo_config.storage.models_dir))


@pytest.fixture(scope="module")
def speech(repo_config: Any) -> SpeechService:
    return SpeechService(repo_config.speech, repo_config.storage)


def test_the_provisioned_file_is_the_pinned_one(repo_config: Any) -> None:
    path = smart_turn_path(repo_config.storage.models_dir)
    assert path.stat().st_size == SMART_TURN.size == 8_679_182
    assert SMART_TURN.requirement == "pipecat-ai==1.14.0"


@pytest.mark.parametrize("seconds", [0.0, 0.7, 3.3, 8.0, 11.0])
def test_log_mel_equals_the_transformers_whisper_extractor(seconds: float) -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(int(seconds * 10))
    t = np.arange(int(seconds * 16_000)) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(len(t)))
    window = model_window(audio.astype(np.float32))
    reference = WhisperFeatureExtractor(chunk_length=8)(
        window, sampling_rate=16_000, padding="max_length", max_length=128_000, truncation=True,
        do_normalize=True, return_tensors="np").input_features[0]
    ours = log_mel(window)
    assert ours.shape == reference.shape == (80, 800)
    assert np.abs(ours - reference).max() < 1e-4


def test_the_window_keeps_the_newest_eight_seconds_left_padded() -> None:
    short = model_window(np.ones(16_000, np.float32))
    assert len(short) == 128_000 and short[:-16_000].max() == 0 and short[-16_000:].min() == 1
    long = model_window(np.arange(200_000, dtype=np.float32))
    assert long[0] == 72_000 and long[-1] == 199_999


def _say(speech: SpeechService, voice: str, text: str) -> np.ndarray:
    return piper(speech, text) if voice == "piper" else espeak(text, voice)


@pytest.mark.parametrize("voice", VOICES)
def test_finished_questions_are_complete_and_mid_sentence_pauses_are_not(model: SmartTurn, speech: SpeechService,
                                                                          voice: str) -> None:
    if voice != "piper" and not espeak_available():
        pytest.fail("espeak-ng is not installed (scripts/setup.sh installs it)")
    complete = {text: model.probability(np.concatenate([_say(speech, voice, text), TAIL])) for text in COMPLETE}
    unfinished = {}
    for first, rest in UNFINISHED:
        audio, cut = piper_paused(speech, first, rest, 0.8) if voice == "piper" else espeak_paused(
            first, rest, 0.8, voice)
        unfinished[first] = model.probability(np.concatenate([audio[:cut], TAIL]))
    assert all(p > 0.5 for p in complete.values()), complete
    assert all(p < 0.5 for p in unfinished.values()), unfinished


def test_our_session_hears_what_onnxruntimes_precise_int8_kernel_hears(model: SmartTurn, speech: SpeechService,
                                                                      repo_config: Any) -> None:
    """The precise kernel is asked for only on CPUs without VNNI (it costs ~50 % more time): on
    VNNI CPUs the fast kernel must give the very same probabilities."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.x64quantprecision", "1")
    precise = ort.InferenceSession(str(smart_turn_path(repo_config.storage.models_dir)), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    first, rest = UNFINISHED[3]
    audio, cut = piper_paused(speech, first, rest, 0.8)
    for clip in (np.concatenate([piper(speech, COMPLETE[0]), TAIL]), np.concatenate([audio[:cut], TAIL])):
        features = log_mel(model_window(clip))[None, :, :]
        (logits,) = precise.run(None, {"input_features": features})
        assert model.probability(clip) == pytest.approx(float(np.asarray(logits).reshape(-1)[0]), abs=1e-6)
