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

_WORD = re.compile(r"[\w']+")
_NOISE = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")  # whisper's "[coughs]", "(laughing)", "*sigh*"


def _spoken_words(text: str) -> list[str]:
    """The transcript's words, lower-cased, without whisper's sound notes ("[coughs]")."""
    return [w.lower() for w in _WORD.findall(_NOISE.sub(" ", text))]


ONSET_FRAMES = 3  # voiced 20 ms frames in a row before we call it speech (60 ms): ignores clicks
CHECKS = 3  # turn-model checks per pause: after turn_check_s, twice and four times that


class Event(Enum):
    STARTED = "started"  # speech began (barge-in is decided here)
    PAUSED = "paused"  # trailing silence reached the speculative threshold: recognise now
    CHECK = "check"  # (end_of_turn = "model") trailing silence reached turn_check_s: ask the turn model
    RESUMED = "resumed"  # speech went on after PAUSED: discard the speculative work
    ENDED = "ended"  # the utterance is complete (silence ran out, or the turn model said so: `end_now`)


@dataclass(frozen=True)
class SegmentEvent:
    kind: Event
    at: float  # when the decision was made
    speech_start: float  # first voiced frame of the utterance
    speech_end: float  # end of the last voiced frame so far (the real end of speech)
    by_model: bool = False  # ENDED because the turn model heard a finished sentence


class UtteranceSegmenter:
    """One speaker's utterance boundaries from per-frame speech flags.

    `end_of_turn = "silence"`: an utterance ends after `silence_s` of silence. `"model"`: after
    `turn_check_s` of silence a CHECK asks the owner to consult the turn model, whose "complete"
    comes back as `end_now()`; it asks again after twice and four times that silence (the model
    grows surer as the silence grows: a finished question that scores 0.4 after 200 ms scores
    0.9 after 400 ms); without a "complete" the utterance ends after `max_pause_s`, so a person
    who pauses mid-sentence is not answered half-way.
    """

    def __init__(self, silence_s: float = 0.6, speculative_s: float = 0.2, onset_frames: int = ONSET_FRAMES, *,
                 end_of_turn: str = "silence", turn_check_s: float = 0.2, max_pause_s: float = 1.6) -> None:
        if end_of_turn not in ("silence", "model"):
            raise ValueError(f"unknown end_of_turn {end_of_turn!r}")
        self.model = end_of_turn == "model"
        self.silence_s = max_pause_s if self.model else silence_s  # the longest pause an utterance survives
        self.turn_check_s = min(turn_check_s, self.silence_s)
        self.speculative_s = min(speculative_s, self.turn_check_s if self.model else self.silence_s)
        self.onset_frames = onset_frames
        self._run = 0
        self._run_start = 0.0
        self.speaking = False
        self._start = 0.0
        self._last_voice = 0.0
        self._paused = False
        self._checks = 0  # CHECKs sent during the current pause

    def frame(self, is_speech: bool, at: float) -> list[SegmentEvent]:
        """One 20 ms frame that started at `at`."""
        events: list[SegmentEvent] = []
        if is_speech:
            if self._run == 0:
                self._run_start = at
            self._run += 1
            if self.speaking:
                self._last_voice = at + FRAME_SECONDS
                self._checks = 0
                if self._paused:
                    self._paused = False
                    events.append(SegmentEvent(Event.RESUMED, at, self._start, self._last_voice))
            elif self._run >= self.onset_frames:
                self.speaking, self._paused, self._checks = True, False, 0
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
            return [self._end(now, by_model=False)]
        events = []
        if quiet >= self.speculative_s - 1e-9 and not self._paused:
            self._paused = True
            events.append(SegmentEvent(Event.PAUSED, now, self._start, self._last_voice))
        if self.model and self._checks < CHECKS and quiet >= self.turn_check_s * 2 ** self._checks - 1e-9:
            self._checks += 1
            events.append(SegmentEvent(Event.CHECK, now, self._start, self._last_voice))
        return events

    def end_now(self, speech_end: float, now: float) -> list[SegmentEvent]:
        """The turn model judged the pause after `speech_end` the end of the turn: end the
        utterance now, unless the speaker has gone on since (then the verdict is stale)."""
        if not self.speaking or not self._checks or abs(self._last_voice - speech_end) > 1e-6:
            return []
        return [self._end(now, by_model=True)]

    def _end(self, now: float, *, by_model: bool) -> SegmentEvent:
        self.speaking = self._paused = False
        self._checks = 0
        self._run = 0
        return SegmentEvent(Event.ENDED, now, self._start, self._last_voice, by_model)


# Words an English sentence hardly ever ends on: a transcript ending on one is a pause for
# thought ("What is the capital of ..."), whatever the intonation sounded like.
DANGLING = frozenset("""a an the my your his her our their and or but nor because if whether than of with
about from in into at to for by very many um uh er erm""".split())
# Not "is", "on", "up", "this": questions end on those. A question that does end on a word
# here ("Where are you from?") waits for max_pause_ms: slower, but never cut off.


def sounds_unfinished(text: str) -> bool:
    """The transcript trails off (an ellipsis, a comma, or a dangling last word)."""
    stripped = text.strip()
    if stripped.endswith(("...", "…", ",", "-")):
        return True
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] in DANGLING


SHORT_TURN_WORDS = 2
SHORT_TURN_PAUSE_S = 0.5


def needs_longer_pause(text: str) -> bool:
    """One or two words ("Wait," "So," "Hey,"), a backchannel, or nothing recognised at all.

    People say such a word, breathe, and go on, and Smart Turn hears a finished sentence in a
    lone word (p = 0.99 for "Wait" after 200 ms). Ended there, "Wait" would be answered as a
    question, or, heard as nothing while the person interrupts, would let the answer resume.
    So such a turn ends by the model only after SHORT_TURN_PAUSE_S of silence."""
    return len(_spoken_words(text)) <= SHORT_TURN_WORDS or is_backchannel(text)


def mentions_wake_word(text: str, wake_words: list[str] | tuple[str, ...]) -> bool:
    """Whole-word, case-insensitive match; a multi-word wake word matches as a phrase."""
    words = [w.lower() for w in _WORD.findall(text)]
    joined = f" {' '.join(words)} "
    return any(f" {' '.join(w.lower() for w in _WORD.findall(wake))} " in joined
               for wake in wake_words if _WORD.findall(wake))


# Words a person may say before the name they address ("hey assistant, ...").
_GREETINGS = frozenset({"hey", "hi", "hello", "ok", "okay", "oh", "so", "um", "uh", "yo", "excuse", "me", "dear"})
_LEAD_WORDS = 3  # at most this many greeting words before the name


def addressed_at_start(text: str, names: list[str] | tuple[str, ...]) -> bool:
    """Does `text` open by addressing one of `names` ("Assistant, ...", "Hey assistant ...")?

    Why only the start: a recording that merely mentions the word somewhere ("my assistant
    said ...") is talk among people, not a question for the bot."""
    words = [w.lower() for w in _WORD.findall(text)]
    for skip in range(min(_LEAD_WORDS, len(words)) + 1):
        if skip and words[skip - 1] not in _GREETINGS:
            break
        rest = words[skip:]
        for name in names:
            phrase = [w.lower() for w in _WORD.findall(name)]
            if phrase and rest[:len(phrase)] == phrase:
                return True
    return False


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

    def address(self, user_id: int, now: float) -> None:
        """`user_id` spoke to the bot some other way (typed `join`): answer them without the
        wake word for the follow-up window from `now`."""
        self.answered(user_id, now)

    def answered(self, user_id: int, now: float) -> None:
        """An answer to `user_id` finished at `now`: open (or extend) their follow-up window."""
        if self.mode == "follow_up":
            self._until[user_id] = now + self.follow_up_s

    def forget(self, user_id: int) -> None:
        self._until.pop(user_id, None)


BACKCHANNELS = frozenset("""yeah yes yep yup mhm mm mmm hmm hm uh huh um uhm ah oh okay ok right sure cool nice
wow alright aha ha""".split())


def is_backchannel(text: str) -> bool:
    """Words that only say "I'm listening" (or no words at all: a cough, a laugh).

    Why words and not the turn model: "yeah" is a finished turn to Smart Turn, and a cough has
    no intonation to judge; what separates them from "wait, stop" is what was said."""
    words = set(_spoken_words(text))
    return len(words) <= 3 and words <= BACKCHANNELS  # a set: whisper may hear "Yeah. Yeah. Yeah." in "yeah"


def should_barge_in(mode: str, speaker_id: int, answering_id: int | None, playing: bool) -> bool:
    """Does `speaker_id` starting to speak stop the answer being played to `answering_id`?"""
    if not playing or mode == "off":
        return False
    return mode == "anyone" or speaker_id == answering_id
