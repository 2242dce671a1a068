"""Voice turns: utterance events in, spoken answers out, with speculation and barge-in.

Everything slow is injected so this logic is testable with any engines:

- `recognize(audio) -> text` (16 kHz mono float32; whisper.cpp in production);
- `answer(text, user_id) -> async iterator of text deltas` (the caller names the speaker in the prompt);
- `speak(deltas, on_first_audio, go) -> awaitable` turns the deltas into sound as they come
  (sentence splitter → TTS → Opus) but plays nothing before the event `go` is set, then calls
  `on_first_audio()` when the first packet goes out; `stop_playback()` cuts it.

Recognition, generation *and synthesis* begin when the trailing silence reaches the
speculative threshold (PAUSED), so the first words are ready to play the moment the silence
confirms the end of the utterance (ENDED opens `go`). If the speaker goes on (RESUMED) that
work is cancelled, which also keeps a half-generated answer out of the conversation history.
Nothing is heard before the utterance has really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any
from dataclasses import dataclass, field

import numpy as np

from assistant.voice.latency import VoiceLatencyLog, VoiceTurnTiming
from assistant.voice.receiver import SpeechEvent
from assistant.voice.turns import AnswerPolicy, Event, should_barge_in

logger = logging.getLogger(__name__)

_END = object()


@dataclass
class _Attempt:
    """Recognition + generation for one utterance (speculative until confirmed)."""

    user_id: int
    speech_end: float
    timing: VoiceTurnTiming
    deltas: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    answering: bool | None = None  # None until the policy decided
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)  # set at ENDED: playback may start
    speaking: asyncio.Task[None] | None = None  # synthesis (then playback) of this attempt's answer


class VoiceDialog:
    def __init__(self, *, recognize: Callable[[np.ndarray], Awaitable[str]],
                 answer: Callable[[str, int], AsyncIterator[str]],
                 speak: Callable[[AsyncIterator[str], Callable[[], None], asyncio.Event], Coroutine[Any, Any, None]],
                 stop_playback: Callable[[], None], policy: AnswerPolicy,
                 barge_in: str = "speaker", latency: VoiceLatencyLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recognize, self.answer, self.speak = recognize, answer, speak
        self.stop_playback, self.policy = stop_playback, policy
        self.barge_in, self.clock = barge_in, clock
        self.latency = latency or VoiceLatencyLog()
        self._speculative: dict[int, _Attempt] = {}
        self._playing: asyncio.Task[None] | None = None
        self.answering_user: int | None = None
        self.barge_ins = 0
        self.discarded = 0

    @property
    def playing(self) -> bool:
        return self._playing is not None and not self._playing.done()

    def on_event(self, event: SpeechEvent) -> None:
        """Feed every SpeechEvent here (from the listener, on the event loop)."""
        if event.kind is Event.STARTED:
            if should_barge_in(self.barge_in, event.user_id, self.answering_user, self.playing):
                self.barge_ins += 1
                self.stop_playback()
                if self._playing is not None:
                    self._playing.cancel()
        elif event.kind is Event.PAUSED and event.audio is not None:
            self._discard(event.user_id)
            self._speculative[event.user_id] = self._start(event, speculative=True)
        elif event.kind is Event.RESUMED:
            self._discard(event.user_id)
        elif event.kind is Event.ENDED and event.audio is not None:
            attempt = self._speculative.pop(event.user_id, None)
            if attempt is None or abs(attempt.speech_end - event.speech_end) > 1e-6:
                if attempt is not None:
                    self._cancel(attempt)
                attempt = self._start(event, speculative=False)
            asyncio.get_running_loop().create_task(self._deliver(attempt))

    def close(self) -> None:
        """Stop everything in flight: the answer being spoken and every speculative attempt (on `leave`)."""
        if self._playing is not None:
            self._playing.cancel()
        for attempt in list(self._speculative.values()):
            self._stop_tasks(attempt)
        self._speculative.clear()

    def _discard(self, user_id: int) -> None:
        attempt = self._speculative.pop(user_id, None)
        if attempt is not None:
            self._cancel(attempt)

    def _cancel(self, attempt: _Attempt) -> None:
        self.discarded += 1
        self._stop_tasks(attempt)

    @staticmethod
    def _stop_tasks(attempt: _Attempt) -> None:
        for task in (attempt.task, attempt.speaking):
            if task is not None:
                task.cancel()

    def _start(self, event: SpeechEvent, *, speculative: bool) -> _Attempt:
        timing = VoiceTurnTiming(event.user_id, event.speech_end, speculative=speculative)
        attempt = _Attempt(event.user_id, event.speech_end, timing)
        assert event.audio is not None
        attempt.task = asyncio.get_running_loop().create_task(self._think(attempt, event.audio))
        return attempt

    async def _think(self, attempt: _Attempt, audio: np.ndarray) -> None:
        try:
            text = (await self.recognize(audio)).strip()
            attempt.timing.recognised = self.clock()
            attempt.answering = self.policy.should_answer(attempt.user_id, text, self.clock())
            if attempt.answering:  # synthesis starts now, during the silence; playback waits for `go`
                attempt.speaking = asyncio.get_running_loop().create_task(
                    self.speak(self._deltas(attempt), lambda: self._first_audio(attempt), attempt.go))
            attempt.decided.set()
            if not attempt.answering:
                return
            async for delta in self.answer(text, attempt.user_id):
                if attempt.timing.first_token is None:
                    attempt.timing.first_token = self.clock()
                attempt.deltas.put_nowait(delta)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("voice turn failed")
        finally:
            attempt.decided.set()
            attempt.deltas.put_nowait(_END)

    def _first_audio(self, attempt: _Attempt) -> None:
        if attempt.timing.first_audio is None:
            attempt.timing.first_audio = self.clock()

    async def _deltas(self, attempt: _Attempt) -> AsyncIterator[str]:
        while (item := await attempt.deltas.get()) is not _END:
            assert isinstance(item, str)
            yield item

    async def _deliver(self, attempt: _Attempt) -> None:
        await attempt.decided.wait()
        if attempt.speaking is None:  # not answered (policy, failure): nothing was prepared
            return
        if self._playing is not None and not self._playing.done():  # a newer turn replaces the old answer
            self.stop_playback()
            self._playing.cancel()
        self.answering_user = attempt.user_id
        self._playing = attempt.speaking
        attempt.go.set()
        self.latency.add(attempt.timing)
        with contextlib.suppress(asyncio.CancelledError):
            await self._playing
        if attempt.task is not None and not attempt.task.done():
            attempt.task.cancel()  # interrupted: stop generating too
        self.policy.answered(attempt.user_id, self.clock())
