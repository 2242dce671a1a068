"""Both voice detectors on real (Piper) speech: where an utterance starts and ends, noise, and the
whole receive chain with Silero. webrtc VAD alone lags the voice by ~150 ms at the end; with the
quiet-tail gate the utterance ends where the voice fades."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.audio import resample
from assistant.errors import ModelNotAvailableError
from assistant.speech.service import SpeechService
from assistant.voice.silero import SileroVad, is_silero_ready, provision_silero, silero_model_path
from assistant.voice.vad import QuietTailGate, make_vad

SENTENCES = ("Could you please tell me what the capital city of France is?",
             "What is the opposite of hot, when we talk about the weather?",
             "Which season of the year comes right after the winter?")
LEAD_S = 0.5


@pytest.fixture(scope="module")
def silero(repo_config):  # type: ignore[no-untyped-def]
    models_dir = repo_config.storage.models_dir
    if not is_silero_ready(models_dir):
        provision_silero(models_dir)
    return silero_model_path(models_dir)


@pytest.fixture(scope="module")
def clips(service: SpeechService) -> list[np.ndarray]:
    """16 kHz speech with 0.5 s of silence before and 1 s after."""
    out = []
    for text in SENTENCES:
        spoken = service.synthesize_sync(text, steady=True)
        audio = resample(spoken.samples, spoken.rate, 16000).astype(np.float32)
        out.append(np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), audio, np.zeros(16000, np.float32)]))
    return out


def audible_end(audio: np.ndarray, rate: int = 16000) -> float:
    """End of the last 10 ms window whose mean level is above -40 dBFS."""
    window = rate // 100
    loud = [i for i in range(0, len(audio) - window, window) if np.abs(audio[i:i + window]).mean() > 0.01]
    return (loud[-1] + window) / rate


def voiced_span(vad: object, audio: np.ndarray, floor_db: float) -> tuple[float, float]:
    gate, first, last, speaking = QuietTailGate(floor_db), None, 0.0, False
    frames = [f for chunk in np.array_split(audio, 11) for f in vad.frames(chunk)]  # type: ignore[attr-defined]
    for i, (frame, speech) in enumerate(frames):
        speech = gate(frame, speech, speaking)
        speaking = speaking or speech
        if speech:
            first = i * 0.02 if first is None else first
            last = (i + 1) * 0.02
    assert first is not None, "no speech found"
    return first, last


@pytest.mark.parametrize("kind", ["webrtc", "silero"])
def test_speech_is_found_and_the_gate_ends_it_where_the_voice_fades(kind: str, clips: list[np.ndarray],
                                                                     silero: object) -> None:
    gated, plain = [], []
    for audio in clips:
        end = audible_end(audio)
        start, stop = voiced_span(make_vad(kind, 2, silero), audio, 40.0)  # type: ignore[arg-type]
        assert LEAD_S - 0.06 <= start <= LEAD_S + 0.1
        gated.append(stop - end)
        plain.append(voiced_span(make_vad(kind, 2, silero), audio, 0.0)[1] - end)  # type: ignore[arg-type]
    assert max(gated) <= 0.08, gated
    assert np.mean(plain) - np.mean(gated) >= 0.05, (plain, gated)


def test_silero_ignores_noise_that_is_not_speech(silero: object) -> None:
    noise = (0.03 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    flags = [speech for _, speech in SileroVad(silero).frames(noise)]  # type: ignore[arg-type]
    assert len(flags) == 150 and sum(flags) <= 3


def test_silero_without_its_model_says_how_to_get_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelNotAvailableError, match="models fetch"):
        make_vad("silero", 2, tmp_path / "silero_vad.onnx")


def test_the_receive_chain_with_silero_hears_one_utterance(service: SpeechService, silero: object) -> None:
    from assistant.voice.receiver import VoiceReceiver
    from tests.voice.test_receiver import Call

    call = Call()
    call.receiver = VoiceReceiver(lambda: call.cipher, call.bot.receiver, call.events.append, silence_s=0.6,
                                  vad="silero", vad_model=silero)  # type: ignore[arg-type]
    spoken = service.synthesize_sync(SENTENCES[0], steady=True)
    pcm = resample(spoken.samples, spoken.rate, 48000, fmt="s16")
    call.play(call.member(2, 20).talk(pcm))
    (utterance,) = call.utterances()
    assert utterance.user_id == 2 and utterance.audio is not None
    assert abs((utterance.speech_end - utterance.speech_start) - len(pcm) / 48000) <= 0.4
    text = service.transcribe_sync(utterance.audio).text.lower()
    assert "capital" in text and "france" in text
