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
from assistant.voice.turns import (SHORT_TURN_PAUSE_S, AnswerPolicy, Event, is_backchannel, needs_longer_pause,
                                   should_barge_in, sounds_unfinished)

logger = logging.getLogger(__name__)

_END = object()


BACKCHANNEL_MAX_S = 1.0  # speech longer than this while the bot talks is a real interruption


@dataclass
class _Hold:
    """An answer paused because `user_id` started speaking over it."""

    user_id: int
    speech_start: float  # the interrupting utterance: only its own transcript may release the hold
    timer: asyncio.TimerHandle
    quiet: bool = False  # the interrupter has paused (their utterance may be over)
    overdue: bool = False  # BACKCHANNEL_MAX_S has passed since they started


@dataclass
class _Attempt:
    """Recognition + generation for one utterance (speculative until confirmed)."""

    user_id: int
    speech_start: float
    speech_end: float
    timing: VoiceTurnTiming
    deltas: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    answering: bool | None = None  # None until the policy decided
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    first_words: asyncio.Event = field(default_factory=asyncio.Event)  # the answer's first token, or no answer
    go: asyncio.Event = field(default_factory=asyncio.Event)  # set at ENDED: playback may start
    speaking: asyncio.Task[None] | None = None  # synthesis (then playback) of this attempt's answer
    judging: asyncio.Task[None] | None = None  # the turn model's verdict on the pause (end_of_turn = "model")
    next_check: tuple[np.ndarray, float] | None = None  # a check that came while a verdict was pending
    text: str = ""
    words: asyncio.Task[float | None] | None = None  # the chat model's reading of `text`, asked once


class VoiceDialog:
    def __init__(self, *, recognize: Callable[[np.ndarray], Awaitable[str]],
                 answer: Callable[[str, int], AsyncIterator[str]],
                 speak: Callable[[AsyncIterator[str], Callable[[], None], asyncio.Event], Coroutine[Any, Any, None]],
                 stop_playback: Callable[[], None], policy: AnswerPolicy,
                 barge_in: str = "speaker", latency: VoiceLatencyLog | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 judge_turn: Callable[[np.ndarray], Awaitable[float]] | None = None,
                 end_turn: Callable[[int, float], None] | None = None, turn_threshold: float = 0.5,
                 pause_playback: Callable[[], None] | None = None,
                 resume_playback: Callable[[], None] | None = None,
                 judge_words: Callable[[str, bool], Awaitable[float | None]] | None = None,
                 words_threshold: float = 0.0, words_confident: float = 0.0, confident_pause_s: float = 0.8) -> None:
        """`judge_turn(audio) -> P(complete)` (Smart Turn) and `end_turn(user, speech_end)` (ends that
        speaker's utterance now, in the receiver) are given for `voice.end_of_turn = "model"`;
        `judge_words(text, answer_follows) -> P(finished message)` (the chat model, None: cannot
        tell; `answer_follows`: the answer is asked next, the engine may prefill both at once) vetoes an
        ending below `words_threshold` (`voice.text_turn_threshold`) and, from `words_confident`
        up (`voice.text_turn_confident`), ends a turn that sounded unfinished once the silence
        reaches `confident_pause_s` (the last turn check)."""
        self.recognize, self.answer, self.speak = recognize, answer, speak
        self.judge_turn, self.end_turn, self.turn_threshold = judge_turn, end_turn, turn_threshold
        self.judge_words, self.words_threshold = judge_words, words_threshold
        self.words_confident, self.confident_pause_s = words_confident, confident_pause_s
        self.pause_playback, self.resume_playback = pause_playback, resume_playback
        self._held: _Hold | None = None  # playback paused by a voice that may be only a backchannel
        self.stop_playback, self.policy = stop_playback, policy
        self.barge_in, self.clock = barge_in, clock
        self.latency = latency or VoiceLatencyLog()
        self._speculative: dict[int, _Attempt] = {}
        self._playing: asyncio.Task[None] | None = None
        self.answering_user: int | None = None
        self.barge_ins = 0
        self.discarded = 0
        self.unanswered = 0  # finished utterances the answer policy (or a failure) left unanswered
        # (Smart Turn's P(complete), None when the words decided alone; transcript; ended) per turn check
        self.verdicts: list[tuple[float | None, str, bool]] = []
        self.false_alarms = 0  # barge-ins that were a backchannel or a cough: the answer went on

    @property
    def playing(self) -> bool:
        return self._playing is not None and not self._playing.done()

    def on_event(self, event: SpeechEvent) -> None:
        """Feed every SpeechEvent here (from the listener, on the event loop)."""
        held = self._held
        if held is not None and held.user_id == event.user_id and event.kind in (
                Event.STARTED, Event.PAUSED, Event.RESUMED):
            held.quiet = event.kind is Event.PAUSED
            if held.overdue and not held.quiet:  # talking on past a backchannel's length
                self._cut()
        if event.kind is Event.STARTED:
            if self._held is None and should_barge_in(self.barge_in, event.user_id, self.answering_user,
                                                      self.playing):
                self.barge_ins += 1
                if self.pause_playback is None or self.resume_playback is None:
                    self._cut()
                else:  # silent at once; stopped for good unless it proves a backchannel
                    self.pause_playback()
                    timer = asyncio.get_running_loop().call_later(BACKCHANNEL_MAX_S, self._held_too_long)
                    self._held = _Hold(event.user_id, event.speech_start, timer)
        elif event.kind is Event.PAUSED and event.audio is not None:
            self._discard(event.user_id)
            self._speculative[event.user_id] = self._start(event, speculative=True)
        elif event.kind is Event.CHECK and event.audio is not None:
            attempt = self._speculative.get(event.user_id)
            if attempt is not None and abs(attempt.speech_end - event.speech_end) < 1e-6 and self.judge_turn:
                check = (event.audio, event.at - event.speech_end)
                if attempt.judging is None or attempt.judging.done():
                    attempt.judging = asyncio.get_running_loop().create_task(self._judge(attempt, *check))
                else:  # one verdict at a time; the latest check waits for it instead of being lost
                    attempt.next_check = check
        elif event.kind is Event.RESUMED:
            self._discard(event.user_id)
        elif event.kind is Event.ENDED and event.audio is not None:
            attempt = self._speculative.pop(event.user_id, None)
            if attempt is None or abs(attempt.speech_end - event.speech_end) > 1e-6:
                if attempt is not None:
                    self._cancel(attempt)
                attempt = self._start(event, speculative=False)
            attempt.timing.turn_ended, attempt.timing.ended_by_model = self.clock(), event.by_model
            asyncio.get_running_loop().create_task(self._deliver(attempt))

    def _cut(self) -> None:
        """A real interruption: stop the answer being spoken, for good."""
        if self._held is not None:
            self._held.timer.cancel()
            self._held = None
        self.stop_playback()
        if self._playing is not None:
            self._playing.cancel()

    def _held_too_long(self) -> None:
        """The interrupter is still talking after BACKCHANNEL_MAX_S: no backchannel is that long."""
        if self._held is not None:
            self._held.overdue = True
            if not self._held.quiet:
                logger.info("barge-in by %s confirmed: still talking", self._held.user_id)
                self._cut()

    def _backchannel(self, attempt: _Attempt) -> bool:
        """Did the held interruption turn out to be a backchannel ("yeah", "mhm") or a cough?
        If so, resume the answer and drop the utterance; otherwise stop the answer for good."""
        held = self._held
        if held is None or held.user_id != attempt.user_id:
            return False
        if attempt.speech_start < held.speech_start and is_backchannel(attempt.text):
            # An earlier "yeah" (or its breathy tail) recognised only now, under load, after the same
            # person began to interrupt: it says nothing about the interruption, which keeps the hold.
            return True
        if held.overdue and not held.quiet or not is_backchannel(attempt.text):
            logger.info("barge-in by %s confirmed: they said something", attempt.user_id)
            logger.debug("barge-in by %s confirmed: %r", attempt.user_id, attempt.text)  # words: DEBUG only
            self._cut()
            return False
        logger.info("barge-in by %s was a backchannel: the answer goes on", attempt.user_id)
        logger.debug("barge-in by %s was a backchannel (%r)", attempt.user_id, attempt.text)
        held.timer.cancel()
        self._held = None
        self.false_alarms += 1
        assert self.resume_playback is not None
        self.resume_playback()
        return True

    def close(self) -> None:
        """Stop everything in flight: the answer being spoken and every speculative attempt (on `leave`)."""
        if self._held is not None:
            self._held.timer.cancel()
            self._held = None
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
        for task in (attempt.task, attempt.speaking, attempt.judging, attempt.words):
            if task is not None:
                task.cancel()

    def _start(self, event: SpeechEvent, *, speculative: bool) -> _Attempt:
        timing = VoiceTurnTiming(event.user_id, event.speech_end, speculative=speculative)
        attempt = _Attempt(event.user_id, event.speech_start, event.speech_end, timing)
        assert event.audio is not None
        attempt.task = asyncio.get_running_loop().create_task(self._think(attempt, event.audio))
        return attempt

    async def _think(self, attempt: _Attempt, audio: np.ndarray) -> None:
        try:
            text = attempt.text = (await self.recognize(audio)).strip()
            attempt.timing.recognised = self.clock()
            held = self._held is not None and self._held.user_id == attempt.user_id
            attempt.answering = self.policy.should_answer(attempt.user_id, text, self.clock()) and not (
                held and is_backchannel(text))  # "mhm" over the answer is not a question
            if attempt.answering:  # synthesis starts now, during the silence; playback waits for `go`
                attempt.speaking = asyncio.get_running_loop().create_task(
                    self.speak(self._deltas(attempt), lambda: self._first_audio(attempt), attempt.go))
            attempt.decided.set()
            if not attempt.answering:
                return
            if self.judge_turn is not None and attempt.timing.speculative and not sounds_unfinished(text):
                # The words' reading (a short prefill on the same chat model) goes in just before the
                # answer and shares its prefill: asked after the first token it stalled the answer's
                # next words on 2 cores, asked and awaited first it delayed the first token by its
                # own prefill (~120 ms). The turn's verdict, usually the words' alone, is then ready
                # when the answer begins.
                self._read_words(attempt, answer_follows=True)
            async for delta in self.answer(text, attempt.user_id):
                if attempt.timing.first_token is None:
                    attempt.timing.first_token = self.clock()
                    attempt.first_words.set()
                attempt.deltas.put_nowait(delta)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("voice turn failed")
        finally:
            attempt.decided.set()
            attempt.first_words.set()
            attempt.deltas.put_nowait(_END)

    async def _judge(self, attempt: _Attempt, audio: np.ndarray, quiet: float) -> None:
        """Judge this check, then any check that came meanwhile (the last one, at the longest
        silence, is the one `text_turn_confident` acts on: waiting for the transcript or the
        words' reading must not lose it).

        An answered turn is judged only once its answer has a first token. Ending the turn
        sooner gains nothing: nothing can play before the answer exists. And judging sooner
        costs: Smart Turn and the words' probe then run during recognition and the answer's
        prefill, on the same cores. On 2 CPU cores that made the first audio ~300 ms later than
        with the plain silence timer (`bench/results/voice.md`). Where the answer comes fast
        (a GPU), this waits a few tens of milliseconds. The latest check waiting meanwhile is
        the one judged first."""
        await attempt.decided.wait()
        if attempt.answering:
            await attempt.first_words.wait()
        if attempt.words is not None:  # a reading under way: the checks that come meanwhile wait for it
            await asyncio.shield(attempt.words)
        if attempt.next_check is not None:
            (audio, quiet), attempt.next_check = attempt.next_check, None
        check: tuple[np.ndarray, float] | None = (audio, quiet)
        while check is not None and not await self._judge_check(attempt, *check):
            check, attempt.next_check = attempt.next_check, None

    async def _judge_check(self, attempt: _Attempt, audio: np.ndarray, quiet: float) -> bool:
        """End the turn now if it sounds finished *and* the words do not trail off.

        The transcript is awaited (it is needed before answering anyway, so this costs no
        latency): Smart Turn hears intonation, and a synthetic or flat voice can end
        "What is the capital of" on a falling pitch; a dangling last word, or words the chat model
        would not end there ("Which season comes"), still mean "wait".
        The words are read first, and Smart Turn is asked only when they leave the verdict open:
        on 2 cores its ~75 ms of CPU would otherwise slow the answer's first words.
        A lone word or a backchannel waits until SHORT_TURN_PAUSE_S of silence (`quiet` is the
        silence so far); speech going on meanwhile cancels this task (RESUMED). True when judging
        is over: the turn ended, or the turn model failed (then max_pause_ms ends it)."""
        assert self.judge_turn is not None
        asked = self.clock()
        p: float | None = None
        try:
            await attempt.decided.wait()
            complete = False if sounds_unfinished(attempt.text) else self._words_decide(
                await self._words_probability(attempt), quiet)
            if complete is None:
                p = attempt.timing.turn_probability = await self.judge_turn(audio)
                complete = p > self.turn_threshold
        except asyncio.CancelledError:
            raise
        except Exception:  # the silence timer (max_pause_ms) still ends the turn
            logger.exception("turn model failed")
            return True
        self.verdicts.append((p, attempt.text, complete))
        if complete and needs_longer_pause(attempt.text):
            await asyncio.sleep(max(0.0, SHORT_TURN_PAUSE_S - quiet - (self.clock() - asked)))
        if complete and self.end_turn is not None:
            self.end_turn(attempt.user_id, attempt.speech_end)
        return complete

    def _words_decide(self, q: float | None, quiet: float) -> bool | None:
        """The verdict the words give whatever the audio says, or None when the audio decides.

        Words the chat model would not end there (below `words_threshold`: "Which season comes",
        whatever the pitch did) mean "wait" (a dangling last word does, before any model is asked). Words it
        reads surely finished (`words_confident`) end the turn at the last check
        (`confident_pause_s` of silence) even where the audio sounds unfinished, not after
        max_pause_ms: Smart Turn hears flat or accented voices' finished questions as unfinished
        (half of the espeak-ng questions in the voice bench waited the full 1.6 s). Without a
        reading (no judge, a failure, "cannot tell") the audio decides."""
        if q is None:
            return None
        if q < self.words_threshold:
            return False
        if 0 < self.words_confident <= q and quiet >= self.confident_pause_s - 1e-9:
            return True
        return None

    async def _words_probability(self, attempt: _Attempt) -> float | None:
        """P(the words are a finished message), asked once per transcript (a judge that stops
        waiting, speech having resumed, leaves the reading running for the next check)."""
        task = self._read_words(attempt, answer_follows=False)
        return None if task is None else await asyncio.shield(task)

    def _read_words(self, attempt: _Attempt, *, answer_follows: bool) -> asyncio.Task[float | None] | None:
        """The reading's task, started on the first call. Started eagerly: its request reaches the
        engine before the answer's, which the engine then prefills with it."""
        if self.judge_words is None or not attempt.text:
            return None
        if attempt.words is None:
            attempt.words = asyncio.Task(self._ask_words(attempt, answer_follows), loop=asyncio.get_running_loop(),
                                         eager_start=True)
        return attempt.words

    async def _ask_words(self, attempt: _Attempt, answer_follows: bool) -> float | None:
        assert self.judge_words is not None
        try:
            attempt.timing.text_probability = await self.judge_words(attempt.text, answer_follows)
        except Exception:  # a cancellation is no Exception: it goes through
            logger.exception("the words' end-of-turn check failed")
        return attempt.timing.text_probability

    def _first_audio(self, attempt: _Attempt) -> None:
        if attempt.timing.first_audio is None:
            attempt.timing.first_audio = self.clock()

    async def _deltas(self, attempt: _Attempt) -> AsyncIterator[str]:
        while (item := await attempt.deltas.get()) is not _END:
            assert isinstance(item, str)
            yield item

    async def _deliver(self, attempt: _Attempt) -> None:
        await attempt.decided.wait()
        if self._backchannel(attempt):
            if attempt.task is not None:
                attempt.task.cancel()  # "mhm" is not a question: nothing of it is answered or kept
            if attempt.speaking is not None:
                attempt.speaking.cancel()
            return
        if attempt.speaking is None:  # not answered (policy, failure): nothing was prepared
            self.unanswered += 1
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
