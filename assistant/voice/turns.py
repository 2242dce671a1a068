"""Turn taking, as pure clock-injected logic: when an utterance starts and ends, whether to
answer it, and whether a new voice interrupts the bot's answer.

Times are seconds on any monotonic clock, passed in by the caller, so every rule can be
tested exhaustively without waiting. Discord clients stop sending packets when their user
is silent, so silence is both "frames the VAD calls silent" and "no frames at all": the
owner calls `tick(now)` regularly to let the second kind end an utterance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from assistant.voice.frames import FRAME_SECONDS

ONSET_FRAMES = 3  # voiced 20 ms frames in a row before we call it speech (60 ms): ignores clicks


class Event(Enum):
    STARTED = "started"  # speech began (barge-in is decided here)
    PAUSED = "paused"  # trailing silence reached the speculative threshold: recognise now
    RESUMED = "resumed"  # speech went on after PAUSED: discard the speculative work
    ENDED = "ended"  # silence lasted `silence_s`: the utterance is complete


@dataclass(frozen=True)
class SegmentEvent:
    kind: Event
    at: float  # when the decision was made
    speech_start: float  # first voiced frame of the utterance
    speech_end: float  # end of the last voiced frame so far (the real end of speech)


class UtteranceSegmenter:
    """One speaker's utterance boundaries from per-frame speech flags."""

    def __init__(self, silence_s: float = 0.6, speculative_s: float = 0.2, onset_frames: int = ONSET_FRAMES) -> None:
        self.silence_s, self.speculative_s, self.onset_frames = silence_s, min(speculative_s, silence_s), onset_frames
        self._run = 0
        self._run_start = 0.0
        self.speaking = False
        self._start = 0.0
        self._last_voice = 0.0
        self._paused = False

    def frame(self, is_speech: bool, at: float) -> list[SegmentEvent]:
        """One 20 ms frame that started at `at`."""
        events: list[SegmentEvent] = []
        if is_speech:
            if self._run == 0:
                self._run_start = at
            self._run += 1
            if self.speaking:
                self._last_voice = at + FRAME_SECONDS
                if self._paused:
                    self._paused = False
                    events.append(SegmentEvent(Event.RESUMED, at, self._start, self._last_voice))
            elif self._run >= self.onset_frames:
                self.speaking, self._paused = True, False
                self._start, self._last_voice = self._run_start, at + FRAME_SECONDS
                events.append(SegmentEvent(Event.STARTED, at + FRAME_SECONDS, self._start, self._last_voice))
        else:
            self._run = 0
        return events + self.tick(at + FRAME_SECONDS)

    def tick(self, now: float) -> list[SegmentEvent]:
        if not self.speaking:
            return []
        quiet = now - self._last_voice
        if quiet >= self.silence_s - 1e-9:
            self.speaking = False
            self._paused = False
            self._run = 0
            return [SegmentEvent(Event.ENDED, now, self._start, self._last_voice)]
        if quiet >= self.speculative_s - 1e-9 and not self._paused:
            self._paused = True
            return [SegmentEvent(Event.PAUSED, now, self._start, self._last_voice)]
        return []


_WORD = re.compile(r"[\w']+")


def mentions_wake_word(text: str, wake_words: list[str] | tuple[str, ...]) -> bool:
    """Whole-word, case-insensitive match; a multi-word wake word matches as a phrase."""
    words = [w.lower() for w in _WORD.findall(text)]
    joined = f" {' '.join(words)} "
    return any(f" {' '.join(w.lower() for w in _WORD.findall(wake))} " in joined
               for wake in wake_words if _WORD.findall(wake))


class AnswerPolicy:
    """Whom to answer: everyone, only when addressed, or addressed-then-follow-up."""

    def __init__(self, mode: str, wake_words: list[str] | tuple[str, ...], follow_up_s: float) -> None:
        if mode not in ("everyone", "wake_word", "follow_up"):
            raise ValueError(f"unknown answer mode {mode!r}")
        self.mode, self.wake_words, self.follow_up_s = mode, tuple(wake_words), follow_up_s
        self._until: dict[int, float] = {}

    def should_answer(self, user_id: int, text: str, now: float) -> bool:
        if not text.strip():
            return False
        if self.mode == "everyone" or mentions_wake_word(text, self.wake_words):
            return True
        return self.mode == "follow_up" and now <= self._until.get(user_id, float("-inf"))

    def answered(self, user_id: int, now: float) -> None:
        """An answer to `user_id` finished at `now`: open (or extend) their follow-up window."""
        if self.mode == "follow_up":
            self._until[user_id] = now + self.follow_up_s

    def forget(self, user_id: int) -> None:
        self._until.pop(user_id, None)


def should_barge_in(mode: str, speaker_id: int, answering_id: int | None, playing: bool) -> bool:
    """Does `speaker_id` starting to speak stop the answer being played to `answering_id`?"""
    if not playing or mode == "off":
        return False
    return mode == "anyone" or speaker_id == answering_id
