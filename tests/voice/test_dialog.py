"""Voice turns at the logic level: speculation kept or discarded, answer policy, barge-in,
latency records. Engines are plain async functions here; the real ones are tested elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from assistant.voice.dialog import VoiceDialog
from assistant.voice.latency import VoiceLatencyLog, VoiceTurnTiming, percentile
from assistant.voice.receiver import SpeechEvent
from assistant.voice.turns import AnswerPolicy, Event

class Rig:
    def __init__(self, mode: str = "everyone", barge_in: str = "speaker", transcripts: dict[float, str] | None = None,
                 hold_playback: bool = False) -> None:
        self.recognised: list[float] = []
        self.asked: list[tuple[str, int]] = []
        self.prepared: list[str] = []  # synthesised (may happen during the silence)
        self.spoken: list[str] = []  # heard (only after `go`)
        self.stops = 0
        self.hold = hold_playback
        self.transcripts = transcripts or {}
        self.dialog = VoiceDialog(recognize=self.recognize, answer=self.answer, speak=self.speak,
                                  stop_playback=self.stop,
                                  policy=AnswerPolicy(mode, ["assistant"], 30), barge_in=barge_in)

    async def recognize(self, audio: np.ndarray) -> str:
        self.recognised.append(len(audio))
        await asyncio.sleep(0)
        return self.transcripts.get(len(audio), "assistant what time is it")

    async def answer(self, text: str, user_id: int) -> AsyncIterator[str]:
        self.asked.append((text, user_id))
        for word in ("It ", "is ", "noon."):
            await asyncio.sleep(0)
            yield word

    async def speak(self, deltas: AsyncIterator[str], first_audio: Callable[[], None], go: asyncio.Event) -> None:
        async for delta in deltas:
            self.prepared.append(delta)
            await go.wait()
            first_audio()
            self.spoken.append(delta)
        if self.hold:
            await asyncio.Event().wait()  # a long answer still playing

    def stop(self) -> None:
        self.stops += 1

    def event(self, kind: Event, user: int = 1, end: float = 1.0, samples: int = 1600, start: float = 0.0) -> None:
        audio = np.zeros(samples, np.float32) if kind in (Event.PAUSED, Event.ENDED) else None
        self.dialog.on_event(SpeechEvent(user, kind, end + 0.1, start, end, audio))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_speculative_recognition_is_used_when_the_silence_confirms_it() -> None:
    rig = Rig()
    rig.event(Event.PAUSED)
    await settle()
    assert rig.asked and not rig.spoken, "generation starts during the silence, speaking does not"
    assert rig.prepared == ["It "], "synthesis starts during the silence too"
    rig.event(Event.ENDED)
    await settle()
    assert rig.recognised == [1600] and rig.spoken == ["It ", "is ", "noon."]
    assert rig.asked == [("assistant what time is it", 1)]
    (turn,) = rig.dialog.latency.turns
    assert turn.speculative and turn.first_audio is not None and turn.first_token is not None


async def test_speech_going_on_discards_the_speculative_turn() -> None:
    rig = Rig()
    rig.event(Event.PAUSED, end=1.0, samples=1600)
    await settle()
    rig.event(Event.RESUMED)
    rig.event(Event.PAUSED, end=2.0, samples=3200)
    rig.event(Event.ENDED, end=2.0, samples=3200)
    await settle()
    assert rig.dialog.discarded == 1
    assert rig.spoken == ["It ", "is ", "noon."], "only the final utterance is answered"
    assert rig.prepared == ["It ", "It ", "is ", "noon."], "the discarded attempt was synthesised, never heard"


async def test_ended_without_speculation_still_answers() -> None:
    rig = Rig()
    rig.event(Event.ENDED)
    await settle()
    assert rig.spoken and not rig.dialog.latency.turns[0].speculative


async def test_wake_word_mode_ignores_unaddressed_speech() -> None:
    rig = Rig(mode="wake_word", transcripts={1600: "what time is it"})
    rig.event(Event.ENDED)
    await settle()
    assert rig.recognised == [1600] and not rig.asked and not rig.spoken


@pytest.mark.parametrize(("mode", "speaker", "expected_stops"), [("speaker", 1, 1), ("speaker", 2, 0),
                                                                  ("anyone", 2, 1), ("off", 1, 0)])
async def test_barge_in_stops_playback(mode: str, speaker: int, expected_stops: int) -> None:
    rig = Rig(barge_in=mode, hold_playback=True)
    rig.event(Event.ENDED, user=1)
    await settle()
    assert rig.dialog.playing and rig.dialog.answering_user == 1
    rig.event(Event.STARTED, user=speaker)
    await settle()
    assert rig.stops == expected_stops
    assert rig.dialog.playing is (expected_stops == 0)


def test_latency_summary_and_percentiles() -> None:
    log = VoiceLatencyLog()
    for i in range(20):
        log.add(VoiceTurnTiming(1, 10.0, recognised=10.1, first_token=10.2 + i / 100, first_audio=10.5 + i / 100))
    log.add(VoiceTurnTiming(1, 10.0))  # a turn that was never answered
    summary = log.summary()
    assert summary["recognised"]["n"] == 20
    assert summary["first_audio"]["p50"] == pytest.approx(0.59)
    assert summary["first_audio"]["p95"] == pytest.approx(0.68)
    assert "p95" in log.format() and VoiceLatencyLog().format().startswith("voice: no")
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([5.0], 95) == 5.0


async def test_close_cancels_the_answer_and_every_speculative_attempt() -> None:
    """`leave` must stop a spoken answer and any thinking at once."""
    rig = Rig(hold_playback=True)
    rig.event(Event.ENDED, user=1)
    await settle()
    assert rig.dialog.playing
    rig.event(Event.PAUSED, user=2, end=2.0)  # user 2 pauses: a speculative attempt starts
    rig.dialog.close()
    await settle()
    assert not rig.dialog.playing
    assert rig.dialog._speculative == {}  # noqa: SLF001


@pytest.mark.parametrize(("p", "text", "ends"), [
    (0.9, "assistant what time is it", True),
    (0.2, "assistant what time is it", False),  # the model hears an unfinished sentence
    (0.9, "assistant what is the capital of", False),  # the words trail off, whatever the pitch did
])
async def test_the_turn_model_ends_a_turn_only_when_it_sounds_and_reads_finished(p: float, text: str,
                                                                               ends: bool) -> None:
    rig = Rig(transcripts={1600: text})
    ended: list[tuple[int, float]] = []
    judged: list[int] = []

    async def judge(audio: np.ndarray) -> float:
        judged.append(len(audio))
        return p

    rig.dialog.judge_turn, rig.dialog.end_turn = judge, lambda user, end: ended.append((user, end))
    rig.event(Event.PAUSED)
    rig.dialog.on_event(SpeechEvent(1, Event.CHECK, 1.2, 0.0, 1.0, np.zeros(4800, np.float32)))
    await settle()
    dangling = text.endswith(" of")  # the words trail off: no model is asked
    assert judged == ([] if dangling else [4800]), "the model hears the utterance with its trailing silence"
    assert ended == ([(1, 1.0)] if ends else [])
    assert rig.dialog.verdicts == [(None if dangling else p, text, ends)] and not rig.spoken, \
        "nothing plays before ENDED"


def words_rig(text: str, p: float, words: Callable[[str, bool], Awaitable[float | None]]) -> tuple[Rig, list[tuple[int, float]]]:
    """A turn of `text` that Smart Turn scores `p`, with the chat model's reading `words` on
    (the defaults: veto below 0.005, confident from 0.5 at 800 ms of silence); and the turns it ends."""
    rig = Rig(transcripts={1600: text})
    ended: list[tuple[int, float]] = []

    async def judge(audio: np.ndarray) -> float:
        return p

    rig.dialog.judge_turn, rig.dialog.end_turn = judge, lambda user, end: ended.append((user, end))
    rig.dialog.judge_words, rig.dialog.words_threshold = words, 0.005
    rig.dialog.words_confident, rig.dialog.confident_pause_s = 0.5, 0.8
    rig.event(Event.PAUSED)
    return rig, ended


async def check(rig: Rig, *ats: float) -> None:
    """Turn checks at these clock readings (the utterance ended at 1.0)."""
    for at in ats:
        rig.dialog.on_event(SpeechEvent(1, Event.CHECK, at, 0.0, 1.0, np.zeros(4800, np.float32)))
        await settle()


@pytest.mark.parametrize(("q", "ends"), [(0.9, True), (0.001, False), (None, True)])
async def test_words_the_chat_model_would_not_end_keep_the_turn_open(q: float | None, ends: bool) -> None:
    """Smart Turn heard a finished sentence (p = 0.97) in "Which season comes." said on a falling
    pitch; the chat model gives those words almost no chance of ending there, so the turn waits.
    None (a backend that cannot tell) leaves the audio's verdict alone; asked once per transcript."""
    asked: list[str] = []

    async def words(text: str, answer_follows: bool = False) -> float | None:
        asked.append(text)
        return q

    rig, ended = words_rig("Which season comes.", 0.97, words)
    await check(rig, 1.2, 1.4)  # the second check (400 ms) reuses the first reading of the same words
    assert asked == ["Which season comes."]
    assert set(ended) == ({(1, 1.0)} if ends else set())  # (the rig's receiver does not end it: asked again)
    # the words alone decide a veto: Smart Turn is then not asked (None)
    assert rig.dialog.verdicts[-1] == (None if q == 0.001 else 0.97, "Which season comes.", ends)


@pytest.mark.parametrize(("q", "ends_at_last_check"), [(0.8, True), (0.3, False), (None, False)])
async def test_words_that_read_clearly_finished_end_a_flat_sounding_turn_at_the_last_check(
        q: float | None, ends_at_last_check: bool) -> None:
    """Smart Turn hears many flat or accented finished questions as unfinished (p = 0.01-0.2);
    words the chat model reads as surely finished end the turn at the last check (800 ms of
    silence) instead of max_pause_ms; less sure words, or no reading, keep waiting."""
    asked: list[str] = []

    async def words(text: str, answer_follows: bool = False) -> float | None:
        asked.append(text)
        return q

    rig, ended = words_rig("Could you please tell me what the capital city of France is?", 0.02, words)
    await check(rig, 1.2, 1.4)  # 200 and 400 ms of silence: the audio's doubt stands
    assert ended == [] and len(asked) == 1
    await check(rig, 1.8)
    assert ended == ([(1, 1.0)] if ends_at_last_check else []) and len(asked) == 1


@pytest.mark.parametrize(("text", "q", "at", "ends"), [
    ("What is the capital of", 0.9, 1.2, False),  # a dangling last word: no model is asked
    ("Which season comes", 0.001, 1.2, False),  # the words veto whatever the audio says
    ("How many legs does a spider have?", 0.8, 1.8, True),  # surely finished, at the last check
])
async def test_smart_turn_is_not_asked_when_the_words_decide(text: str, q: float, at: float, ends: bool) -> None:
    """On 2 cores Smart Turn's ~75 ms of CPU slows the answer's first words; where its verdict
    could not change the outcome it is not run."""
    judged: list[int] = []
    asked: list[str] = []

    async def words(words_text: str, answer_follows: bool = False) -> float | None:
        asked.append(words_text)
        return q

    rig, ended = words_rig(text, 0.5, words)

    async def judge(audio: np.ndarray) -> float:
        judged.append(len(audio))
        return 0.5

    rig.dialog.judge_turn = judge
    await check(rig, at)
    assert judged == [] and ended == ([(1, 1.0)] if ends else [])
    assert asked == ([] if text.endswith(" of") else [text])
    assert rig.dialog.verdicts == [(None, text, ends)]


async def test_the_words_are_read_alongside_the_answer() -> None:
    """Read after the answer's first token, the words' prefill stalled the answer's next words on
    2 cores; awaited before the answer, it delayed the first token by its own prefill. Their
    request goes in first, saying an answer follows, and the answer is asked at once, so the engine
    prefills both in one batch and the verdict is ready when the answer begins (model mode only)."""
    order: list[str] = []
    answered = asyncio.Event()

    async def words(text: str, answer_follows: bool = False) -> float | None:
        order.append(f"words (answer follows: {answer_follows})")
        try:  # an engine holds the reading until the answer's request comes
            await asyncio.wait_for(answered.wait(), 2.0)
        except TimeoutError:
            order.append("the answer never came")
        order.append("words read")
        return 0.9

    rig, ended = words_rig("How many legs does a spider have?", 0.9, words)
    answer = rig.answer

    async def recorded(text: str, user_id: int) -> AsyncIterator[str]:
        order.append("answer")
        answered.set()
        async for delta in answer(text, user_id):
            yield delta

    rig.dialog.answer = recorded
    await settle()  # PAUSED came in words_rig: recognition, then the words and the answer
    await check(rig, 1.2)
    assert order == ["words (answer follows: True)", "answer", "words read"] and ended == [(1, 1.0)]
    silence = Rig()  # end_of_turn = "silence": no turn model, no reading of the words
    silence.dialog.judge_words = words
    order.clear()
    silence.event(Event.PAUSED)
    await settle()
    assert silence.asked and not any(step.startswith("words") for step in order)


async def test_a_check_that_comes_while_the_words_are_read_is_not_lost() -> None:
    """Under load the words' reading comes back after the 400 and 800 ms checks were due: the
    latest check is judged once the reading is in, so the turn ends then, not at max_pause_ms."""
    gate = asyncio.Event()

    async def words(text: str, answer_follows: bool = False) -> float | None:
        await gate.wait()
        return 0.8

    rig, ended = words_rig("Could you please tell me what the capital city of France is?", 0.02, words)
    await check(rig, 1.2, 1.4, 1.8)
    assert ended == []
    gate.set()
    await settle()
    assert ended == [(1, 1.0)]
    # the judging waits for the words: only the latest check is judged
    assert [v[2] for v in rig.dialog.verdicts] == [True]


async def test_a_failing_words_check_trusts_the_audio() -> None:
    async def words(text: str, answer_follows: bool = False) -> float | None:
        raise RuntimeError("engine busy")

    rig, ended = words_rig("What is the capital of France?", 0.97, words)
    await check(rig, 1.2)
    assert ended == [(1, 1.0)]


async def test_speech_going_on_cancels_the_turn_verdict() -> None:
    rig = Rig()
    ended: list[tuple[int, float]] = []
    gate = asyncio.Event()

    async def judge(audio: np.ndarray) -> float:
        await gate.wait()
        return 0.9

    rig.dialog.judge_turn, rig.dialog.end_turn = judge, lambda user, end: ended.append((user, end))
    rig.event(Event.PAUSED)
    rig.dialog.on_event(SpeechEvent(1, Event.CHECK, 1.2, 0.0, 1.0, np.zeros(4800, np.float32)))
    await settle()
    rig.event(Event.RESUMED)
    gate.set()
    await settle()
    assert ended == [] and rig.dialog.discarded == 1


@pytest.mark.parametrize("text", ["Wait.", "Hey", "No", "", "yeah", "[coughing]"])
async def test_a_lone_word_ends_the_turn_only_after_a_longer_pause(text: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Smart Turn hears a finished sentence in "Wait" (p = 0.99); people say it and go on."""
    monkeypatch.setattr("assistant.voice.dialog.SHORT_TURN_PAUSE_S", 0.25)
    now = [10.0]
    rig = Rig(transcripts={1600: text})
    rig.dialog.clock = lambda: now[0]
    ended: list[tuple[int, float]] = []

    async def judge(audio: np.ndarray) -> float:
        return 0.99

    rig.dialog.judge_turn, rig.dialog.end_turn = judge, lambda user, end: ended.append((user, end))
    for goes_on in (True, False):
        ended.clear()
        rig.event(Event.PAUSED)
        rig.dialog.on_event(SpeechEvent(1, Event.CHECK, 1.2, 0.0, 1.0, np.zeros(4800, np.float32)))
        await settle()
        assert ended == [], "not ended 200 ms after a lone word"
        if goes_on:  # "Wait, ... what is the capital of France?"
            rig.event(Event.RESUMED)
            await asyncio.sleep(0.1)
            assert ended == [] and rig.dialog.discarded >= 1
        else:  # nothing more: the turn ends once the longer pause has passed
            await asyncio.sleep(0.1)
            assert ended == [(1, 1.0)]


async def test_a_whole_sentence_ends_the_turn_at_once() -> None:
    rig = Rig(transcripts={1600: "What is the capital of France?"})
    ended: list[tuple[int, float]] = []

    async def judge(audio: np.ndarray) -> float:
        return 0.99

    rig.dialog.judge_turn, rig.dialog.end_turn = judge, lambda user, end: ended.append((user, end))
    rig.event(Event.PAUSED)
    rig.dialog.on_event(SpeechEvent(1, Event.CHECK, 1.2, 0.0, 1.0, np.zeros(4800, np.float32)))
    await settle()
    assert ended == [(1, 1.0)]


def held_rig(transcript: str) -> tuple[Rig, list[str]]:
    """Alice (user 1) is being answered at length; what she says next is `transcript` (1200 samples)."""
    rig = Rig(hold_playback=True, transcripts={1200: transcript})
    calls: list[str] = []
    rig.dialog.pause_playback, rig.dialog.resume_playback = lambda: calls.append("pause"), lambda: calls.append(
        "resume")
    return rig, calls


async def test_a_backchannel_or_a_cough_pauses_the_answer_and_lets_it_go_on() -> None:
    for said in ("yeah", "Mhm.", "[coughing]", ""):
        rig, calls = held_rig(said)
        rig.event(Event.ENDED, user=1)
        await settle()
        rig.event(Event.STARTED, user=1, end=2.0)
        assert calls == ["pause"] and rig.stops == 0, "silent at once, not stopped"
        rig.event(Event.PAUSED, user=1, end=2.3, samples=1200)
        rig.event(Event.ENDED, user=1, end=2.3, samples=1200)
        await settle()
        assert calls == ["pause", "resume"] and rig.stops == 0 and rig.dialog.playing, said
        assert rig.dialog.false_alarms == 1 and len(rig.asked) == 1, "the backchannel is not answered"


async def test_a_real_interruption_stops_the_answer_for_good() -> None:
    rig, calls = held_rig("wait, what is the capital of France?")
    rig.event(Event.ENDED, user=1)
    await settle()
    rig.event(Event.STARTED, user=1, end=2.0)
    rig.event(Event.PAUSED, user=1, end=2.3, samples=1200)
    rig.event(Event.ENDED, user=1, end=2.3, samples=1200)
    await settle()
    assert calls == ["pause"] and rig.stops >= 1 and rig.dialog.false_alarms == 0
    assert rig.asked[-1][0].startswith("wait"), "the interruption is answered"


async def test_a_late_transcript_of_an_earlier_backchannel_leaves_a_new_interruption_held() -> None:
    """Under load the tail of a "yeah" can be recognised only after the same person began to
    interrupt: that empty transcript must not release the hold the interruption set."""
    rig, calls = held_rig("wait, what is the capital of France?")
    rig.transcripts[1000] = "yeah"
    tail_heard = asyncio.Event()
    plain = rig.recognize

    async def recognize(audio: np.ndarray) -> str:
        if len(audio) == 800:  # the breathy tail, recognised late
            await tail_heard.wait()
            return ""
        return await plain(audio)

    rig.dialog.recognize = recognize
    rig.event(Event.ENDED, user=1)
    await settle()
    rig.event(Event.STARTED, user=1, end=2.0, start=1.8)  # "yeah"
    rig.event(Event.ENDED, user=1, end=2.3, samples=1000, start=1.8)
    rig.event(Event.STARTED, user=1, end=2.5, start=2.4)  # its tail, while the answer is still held
    rig.event(Event.ENDED, user=1, end=2.6, samples=800, start=2.4)
    await settle()
    assert calls == ["pause", "resume"] and rig.dialog.false_alarms == 1
    rig.event(Event.STARTED, user=1, end=3.2, start=3.0)  # the real interruption
    tail_heard.set()
    await settle()
    assert calls == ["pause", "resume", "pause"] and rig.dialog.false_alarms == 1, "the stale tail resumed it"
    rig.event(Event.ENDED, user=1, end=4.0, samples=1200, start=3.0)
    await settle()
    assert rig.stops >= 1 and rig.asked[-1][0].startswith("wait"), "the interruption is answered"
    assert rig.dialog.barge_ins == 2 and len(rig.asked) == 2


async def test_talking_on_past_a_backchannel_length_stops_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("assistant.voice.dialog.BACKCHANNEL_MAX_S", 0.01)
    rig, calls = held_rig("yeah")
    rig.event(Event.ENDED, user=1)
    await settle()
    rig.event(Event.STARTED, user=1, end=2.0)
    await asyncio.sleep(0.05)
    assert calls == ["pause"] and rig.stops == 1 and not rig.dialog.playing


async def test_an_answered_turn_is_judged_only_once_its_answer_has_a_first_token() -> None:
    """Ending the turn before the answer exists gains nothing (nothing can play) and its checks
    would compete with recognition and the prefill for the CPU; a turn nobody answers is judged at once."""
    rig = Rig(transcripts={1600: "What is the capital of France?"})
    first_token = asyncio.Event()
    judged: list[float] = []
    ended: list[tuple[int, float]] = []

    async def answer(text: str, user_id: int) -> AsyncIterator[str]:
        await first_token.wait()
        yield "Paris."

    async def judge(audio: np.ndarray) -> float:
        judged.append(audio.size)
        return 0.99

    rig.dialog.answer = answer
    rig.dialog.judge_turn, rig.dialog.end_turn = judge, lambda user, end: ended.append((user, end))
    rig.event(Event.PAUSED)
    rig.dialog.on_event(SpeechEvent(1, Event.CHECK, 1.2, 0.0, 1.0, np.zeros(4800, np.float32)))
    await settle()
    rig.dialog.on_event(SpeechEvent(1, Event.CHECK, 1.4, 0.0, 1.0, np.zeros(8000, np.float32)))
    await settle()
    assert judged == [] and ended == []
    first_token.set()
    await settle()
    assert judged == [8000] and ended == [(1, 1.0)]  # the latest check, judged once

    unanswered = Rig(mode="wake_word", transcripts={1600: "just talking to a friend"})
    unanswered.dialog.judge_turn = judge
    unanswered.dialog.end_turn = lambda user, end: ended.append((user, end))
    unanswered.event(Event.PAUSED, user=2)
    unanswered.dialog.on_event(SpeechEvent(2, Event.CHECK, 1.2, 0.0, 1.0, np.zeros(4800, np.float32)))
    await settle()
    assert ended[-1] == (2, 1.0)
