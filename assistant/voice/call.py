"""One live voice conversation, whatever carries the audio: utterance events in, frames out.

    SpeechEvents (from `VoiceReceiver`) → VoiceDialog (speculative recognition, answer policy,
    end of turn, barge-in) → Conversation.reply("<name> says: <transcript>") → sentence
    splitter → Piper → one `FrameQueue` per answer → the transport's `AudioSink`

Why here and not in the transport: recognising, answering and speaking are the assistant's
own abilities. A transport (Discord today) supplies only the sink, the speaker names, and a
way to end a speaker's utterance early (`end_turn`, the receiver's). A whole voice turn is
therefore testable without any Discord library.

One `Conversation` per call keeps the spoken history (each user turn names its speaker,
`SPOKEN_TURN`, so the model knows who said what); finished turns are also recorded in the
store under `conversation_key`, with the speaker's id. Raw audio lives in memory only; with
`debug_dir` set each finished utterance is written as a WAV there (for diagnosing
recognition, never on by default).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.audio import RECOGNITION_RATE
from assistant.config import ModelConfig, VoiceConfig
from assistant.conversation import Conversation
from assistant.errors import NoSpeechError
from assistant.llm import default_options
from assistant.llm.base import ChatBackend
from assistant.voice.dialog import VoiceDialog
from assistant.voice.latency import VoiceLatencyLog
from assistant.voice.playback import AudioSink, FrameQueue, speak_deltas, until_played
from assistant.voice.receiver import SpeechEvent
from assistant.voice.smart_turn import SmartTurn, smart_turn_path
from assistant.voice.turns import CHECKS, AnswerPolicy, Event

logger = logging.getLogger(__name__)

# How a spoken turn names its speaker. Measured with SmolLM2-135M at temperature 0: "Alice: What is
# the capital of France?" derails it (it answers "Allemagne, France..."), "Alice says: ..." does not.
SPOKEN_TURN = "{name} says: {text}"

RECOGNITION_BACKLOG = 3  # utterances of one call that may wait for recognition; past it the oldest is dropped


class Limiter(Protocol):
    """A per-speaker budget of answered utterances (`security.voice_rate_limit`)."""

    def allow(self, key: int) -> bool: ...

    def retry_after(self, key: int) -> float: ...


class _Waiting:
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = False


class VoiceCall:
    """Listening and answering in one call; feed `on_event`, `close()` ends it at once."""

    def __init__(self, sink: AudioSink, *, channel_id: int, model: ModelConfig, voice: VoiceConfig,
                 models_dir: Path, backend: ChatBackend, speech: Any, store: Any = None,
                 conversation_key: str = "", latency: VoiceLatencyLog | None = None,
                 name_of: Callable[[int], str] | None = None, system_prompt: str | None = None,
                 limiter: Limiter | None = None, notes: Callable[[str], list[str]] | None = None,
                 end_turn: Callable[[int, float], None] | None = None, debug_dir: Path | None = None) -> None:
        """`speech` is a `SpeechService` (transcribe + speak_stream); `end_turn(user, speech_end)` ends
        that speaker's utterance now in the receiver (needed for `voice.end_of_turn = "model"`)."""
        self.sink, self.model, self.speech, self.store = sink, model, speech, store
        self.channel_id, self.conversation_key = channel_id, conversation_key
        self.limiter, self.debug_dir, self._end_turn_in_receiver = limiter, debug_dir, end_turn
        self.conversation = Conversation(backend, system_prompt=model.system_prompt if system_prompt is None
                                         else system_prompt, context_tokens=model.context_tokens,
                                         reply_tokens=model.max_new_tokens, notes=notes)
        self._display_name = name_of or (lambda user_id: f"user {user_id}")
        turn_model = SmartTurn(smart_turn_path(models_dir)) if voice.end_of_turn == "model" else None
        self.dialog = VoiceDialog(
            recognize=self._recognize, answer=self._answer, speak=self._speak, stop_playback=self.stop_playback,
            policy=AnswerPolicy(voice.answer_mode, voice.wake_words, voice.follow_up_s),
            barge_in=voice.barge_in, latency=latency,
            judge_turn=turn_model.probability_async if turn_model else None,
            end_turn=self._end_turn, turn_threshold=turn_model.threshold if turn_model else 0.5,
            pause_playback=self._pause_playback, resume_playback=self._resume_playback,
            judge_words=self._words_end_turn if turn_model and (voice.text_turn_threshold > 0
                                                                 or voice.text_turn_confident > 0) else None,
            words_threshold=voice.text_turn_threshold, words_confident=voice.text_turn_confident,
            confident_pause_s=voice.turn_check_ms * 2 ** (CHECKS - 1) / 1000)
        self.transcripts: list[tuple[int, str]] = []  # (user id, text) of every answered utterance
        self.frames: FrameQueue | None = None  # the answer being played (barge-in and close cut it)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiting: deque[_Waiting] = deque()  # utterances waiting for the recogniser, oldest first
        self._recognizing = asyncio.Lock()
        self.active = True

    @property
    def latency(self) -> VoiceLatencyLog:
        return self.dialog.latency

    def address(self, user_id: int) -> None:
        """`user_id` addressed the bot outside the call (typed `join`): open their follow-up window now."""
        self.dialog.policy.address(user_id, self.dialog.clock())

    def close(self) -> None:
        """Cut playback and cancel every pending turn (the transport stops hearing first)."""
        if not self.active:
            return
        self.active = False
        self.stop_playback()
        for task in list(self._tasks):
            task.cancel()
        self.dialog.close()

    async def until_quiet(self, timeout: float = 120.0) -> None:
        """Return once no live answer is being spoken (or after `timeout`): a typed answer spoken
        in this call waits here rather than cutting the conversation off."""
        deadline = time.monotonic() + timeout
        while self.active and self.dialog.playing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- events ----------------------------------------------------------------------------
    def on_event(self, event: SpeechEvent) -> None:
        """Every SpeechEvent of the call, on the event loop."""
        if not self.active or self._throttled(event):
            return
        if event.kind is Event.ENDED and event.audio is not None and self.debug_dir is not None:
            self._spawn(asyncio.to_thread(self._record, event))
        self.dialog.on_event(event)

    def _throttled(self, event: SpeechEvent) -> bool:
        """Whether this utterance goes unanswered because its speaker is over the voice limit.
        Counted once per utterance, when it ends; a speaker already over the limit gets no
        speculative recognition either."""
        if self.limiter is None:
            return False
        if event.kind is Event.PAUSED:
            return self.limiter.retry_after(event.user_id) > 0
        if event.kind is not Event.ENDED or self.limiter.allow(event.user_id):
            return False
        self.dialog.on_event(dataclasses.replace(event, kind=Event.RESUMED, audio=None))  # drop its speculation
        logger.info("Not answering user %s in voice: over security.voice_rate_limit", event.user_id)
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, event: SpeechEvent) -> Path:
        from assistant.audio import write_audio

        assert self.debug_dir is not None and event.audio is not None
        self.debug_dir.mkdir(parents=True, exist_ok=True)
        path = self.debug_dir / f"{self.channel_id}-{event.user_id}-{time.time():.3f}.wav"
        write_audio(path, event.audio, RECOGNITION_RATE)
        logger.debug("recorded an utterance to %s (voice.debug_record_audio)", path)
        return path

    # -- the dialog's capabilities ---------------------------------------------------------
    def _end_turn(self, user_id: int, speech_end: float) -> None:
        if self.active and self._end_turn_in_receiver is not None:
            self._end_turn_in_receiver(user_id, speech_end)

    async def _words_end_turn(self, text: str, answer_follows: bool) -> float | None:
        """P(`text` is a finished message) by the chat model, with this call's system prompt."""
        conversation = self.conversation
        return await conversation.backend.end_of_turn_probability(text, system_prompt=conversation.system_prompt,
                                                                  answer_follows=answer_follows)

    async def _recognize(self, audio: np.ndarray) -> str:
        """Recognise one utterance. The recogniser serves one at a time, so a call where people talk
        faster than it keeps up would pile utterances up without end: beyond RECOGNITION_BACKLOG
        waiting ones the oldest is dropped (heard as nothing) and the log says so."""
        ticket = _Waiting()
        self._waiting.append(ticket)
        if len(self._waiting) > RECOGNITION_BACKLOG:
            self._waiting.popleft().dropped = True
            logger.info("Voice channel %s: more than %d utterances waiting for recognition; dropped the oldest",
                        self.channel_id, RECOGNITION_BACKLOG)
        try:
            async with self._recognizing:
                if ticket.dropped:
                    return ""
                self._waiting.remove(ticket)
                try:
                    transcript = await self.speech.transcribe(audio)
                except NoSpeechError:
                    return ""
                return str(transcript.text)
        finally:
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    async def _answer(self, text: str, user_id: int) -> AsyncIterator[str]:
        """The conversation's streamed answer; stored once it finished (a cancelled,
        speculative or interrupted answer is never stored). The speaker is known by id: two
        members may share a display name."""
        parts: list[str] = []
        turn = SPOKEN_TURN.format(name=self._display_name(user_id), text=text)
        async for delta in self.conversation.reply(turn, default_options(self.model, spoken=True)):
            parts.append(delta)
            yield delta
        self.transcripts.append((user_id, text))
        if self.store is not None:
            await asyncio.to_thread(self.store.record_turn, self.conversation_key, prompt=turn,
                                    reply="".join(parts).strip(), user_id=str(user_id) if user_id else None)

    async def _speak(self, deltas: AsyncIterator[str], on_first_audio: Callable[[], None], go: asyncio.Event) -> None:
        """Synthesise at once, play once `go` is set (the utterance really ended); only then does
        this answer's frames become the stream that barge-in and `close` cut."""
        frames = FrameQueue(on_first_frame=on_first_audio)

        async def released() -> None:
            await go.wait()
            self.frames = frames

        try:
            if await speak_deltas(self.sink, self.speech, deltas, frames, before_play=released):
                frames.close()
                await until_played(self.sink, frames)
        finally:
            frames.close()
            if self.frames is frames:
                self.stop_playback()
                self.frames = None

    def stop_playback(self) -> None:
        """Cut the answer being spoken, for good."""
        frames = self.frames
        if frames is not None:
            frames.close()
            self.sink.stop(frames)

    def _pause_playback(self) -> None:
        """Silent at once (no frame is sent while paused) but resumable: a barge-in that proves
        to be "mhm" or a cough lets the answer go on where it stopped."""
        if self.frames is not None:
            self.sink.pause(self.frames)

    def _resume_playback(self) -> None:
        if self.frames is not None:
            self.sink.resume(self.frames)
