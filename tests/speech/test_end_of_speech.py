"""Where the voice receive path puts the end of real (Piper) speech: webrtc VAD alone lags the
voice by ~150 ms; with the quiet-tail gate the utterance ends where the voice fades."""

from __future__ import annotations

import numpy as np

from assistant.audio import resample
from assistant.speech.service import SpeechService
from assistant.voice.vad import QuietTailGate, make_vad

SENTENCES = ("Could you please tell me what the capital city of France is?",
             "What is the opposite of hot, when we talk about the weather?",
             "Which season of the year comes right after the winter?")


def audible_end(audio: np.ndarray, rate: int = 16000) -> float:
    """End of the last 10 ms window whose mean level is above -40 dBFS."""
    window = rate // 100
    loud = [i for i in range(0, len(audio) - window, window) if np.abs(audio[i:i + window]).mean() > 0.01]
    return (loud[-1] + window) / rate


def vad_end(audio: np.ndarray, floor_db: float) -> float:
    vad, gate, last, speaking = make_vad("webrtc", 2), QuietTailGate(floor_db), 0.0, False
    for i, (frame, speech) in enumerate(vad.frames(audio)):
        speech = gate(frame, speech, speaking)
        speaking = speaking or speech
        if speech:
            last = (i + 1) * 0.02
    return last


def test_the_gate_ends_speech_where_the_voice_fades(service: SpeechService) -> None:
    gated, plain = [], []
    for text in SENTENCES:
        spoken = service.synthesize_sync(text)
        audio = resample(spoken.samples, spoken.rate, 16000).astype(np.float32)
        end = audible_end(audio)
        gated.append(vad_end(audio, 40.0) - end)
        plain.append(vad_end(audio, 0.0) - end)
    assert max(gated) <= 0.08, gated
    assert np.mean(plain) - np.mean(gated) >= 0.06, (plain, gated)
