"""A call where people talk faster than recognition keeps up: the backlog stays bounded."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace

import numpy as np

from assistant.voice.call import RECOGNITION_BACKLOG, VoiceCall


class SlowRecognizer:
    """Recognises one utterance at a time, only when the test lets it."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.heard: list[float] = []

    async def transcribe(self, audio: np.ndarray) -> SimpleNamespace:
        await self.go.wait()
        self.heard.append(float(audio[0]))
        return SimpleNamespace(text=f"utterance {int(audio[0])}")


async def test_beyond_the_backlog_the_oldest_waiting_utterance_is_dropped() -> None:
    speech = SlowRecognizer()
    session = SimpleNamespace(speech=speech, channel_id=1, _waiting=deque(), _recognizing=asyncio.Lock())
    utterances = [np.full(160, n, dtype=np.float32) for n in range(RECOGNITION_BACKLOG + 3)]
    tasks = [asyncio.create_task(VoiceCall._recognize(session, audio)) for audio in utterances]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert len(session._waiting) == RECOGNITION_BACKLOG  # one is being recognised, the rest wait, bounded
    speech.go.set()
    texts = await asyncio.gather(*tasks)
    # The first was already being recognised; of those waiting, the oldest two were dropped.
    assert texts[0] == "utterance 0" and texts[1:3] == ["", ""]
    assert texts[3:] == [f"utterance {n}" for n in range(3, RECOGNITION_BACKLOG + 3)]
    assert not session._waiting


def test_a_speaker_over_the_voice_limit_is_neither_recognised_nor_answered() -> None:
    from assistant.discord.policy import RateLimiter  # the bot's limiter, as the call gets it
    from assistant.voice.receiver import SpeechEvent
    from assistant.voice.turns import Event

    seen: list[SpeechEvent] = []
    session = SimpleNamespace(limiter=RateLimiter(1, 60.0), dialog=SimpleNamespace(on_event=seen.append))
    audio = np.zeros(160, np.float32)

    def event(kind: Event, user: int = 7) -> SpeechEvent:
        return SpeechEvent(user, kind, 1.0, 0.0, 1.0, audio)

    throttled = VoiceCall._throttled  # type: ignore[attr-defined]
    assert not throttled(session, event(Event.PAUSED)) and not throttled(session, event(Event.ENDED))  # 1st: answered
    assert throttled(session, event(Event.PAUSED))  # already over: no speculative recognition
    assert throttled(session, event(Event.ENDED))  # the 2nd utterance is not answered ...
    assert [e.kind for e in seen] == [Event.RESUMED]  # ... and its speculative work is dropped
    assert not throttled(session, event(Event.ENDED, user=8))  # other speakers are not affected
