"""Turn taking with an injected clock: utterance boundaries, answer modes, barge-in timing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.voice.turns import (
    FRAME_SECONDS, AnswerPolicy, Event, UtteranceSegmenter, addressed_at_start, mentions_wake_word,
    should_barge_in, sounds_unfinished, is_backchannel)
from assistant.voice.vad import WebRtcVad, make_vad


def run(segmenter: UtteranceSegmenter, flags: str, t0: float = 0.0) -> list[tuple[Event, float, float, float]]:
    """Feed frames written as '#' (speech) and '.' (silence); '_' = no packet at all (ticks only)."""
    out = []
    for i, flag in enumerate(flags):
        at = t0 + i * FRAME_SECONDS
        events = segmenter.tick(at + FRAME_SECONDS) if flag == "_" else segmenter.frame(flag == "#", at)
        out += [(e.kind, round(e.at, 3), round(e.speech_start, 3), round(e.speech_end, 3)) for e in events]
    return out


def test_an_utterance_ends_after_the_configured_silence() -> None:
    events = run(UtteranceSegmenter(silence_s=0.6, speculative_s=0.2), "#" * 10 + "." * 40)
    assert events == [
        (Event.STARTED, 0.06, 0.0, 0.06),
        (Event.PAUSED, 0.4, 0.0, 0.2),
        (Event.ENDED, 0.8, 0.0, 0.2),
    ]


def test_missing_packets_count_as_silence() -> None:
    events = run(UtteranceSegmenter(silence_s=0.6), "#" * 10 + "_" * 40)
    assert events[-1] == (Event.ENDED, 0.8, 0.0, 0.2)


def test_speech_resuming_during_trailing_silence_cancels_speculation() -> None:
    events = run(UtteranceSegmenter(silence_s=0.6, speculative_s=0.2), "#" * 5 + "." * 15 + "#" * 5 + "." * 40)
    kinds = [e[0] for e in events]
    assert kinds == [Event.STARTED, Event.PAUSED, Event.RESUMED, Event.PAUSED, Event.ENDED]
    assert events[-1][2:] == (0.0, 0.5), "one utterance from the first to the last voiced frame"


def test_clicks_shorter_than_the_onset_are_ignored() -> None:
    assert run(UtteranceSegmenter(), "##." * 20) == []


@given(st.text(alphabet="#._", max_size=300))
def test_events_always_alternate_sensibly(flags: str) -> None:
    state = "idle"
    for kind, *_ in run(UtteranceSegmenter(silence_s=0.3, speculative_s=0.1), flags):
        allowed = {"idle": {Event.STARTED}, "talk": {Event.PAUSED, Event.ENDED},
                   "pause": {Event.RESUMED, Event.ENDED}}[state]
        assert kind in allowed
        state = {Event.STARTED: "talk", Event.PAUSED: "pause", Event.RESUMED: "talk", Event.ENDED: "idle"}[kind]


@pytest.mark.parametrize(("text", "expected"), [
    ("Assistant, what time is it?", True),
    ("hey ASSISTANT", True),
    ("the assistants are here", False),
    ("assistantship", False),
    ("", False),
])
def test_wake_word_is_a_whole_word(text: str, expected: bool) -> None:
    assert mentions_wake_word(text, ["assistant"]) is expected


def test_multi_word_wake_word() -> None:
    assert mentions_wake_word("OK, hey robot! tell me", ["hey robot"])
    assert not mentions_wake_word("hey, the robot", ["hey robot"])


def test_answer_modes() -> None:
    everyone = AnswerPolicy("everyone", ["assistant"], 30)
    assert everyone.should_answer(1, "what is the weather", 0) and not everyone.should_answer(1, "  ", 0)
    wake = AnswerPolicy("wake_word", ["assistant"], 30)
    assert not wake.should_answer(1, "what is the weather", 0)
    assert wake.should_answer(1, "assistant what is the weather", 0)
    wake.answered(1, 5)
    assert not wake.should_answer(1, "and tomorrow?", 6), "wake_word mode has no follow-up"


def test_follow_up_window_is_per_person_and_expires() -> None:
    policy = AnswerPolicy("follow_up", ["assistant"], 30)
    assert not policy.should_answer(1, "hello", 0)
    assert policy.should_answer(1, "assistant, hello", 1)
    policy.answered(1, 4)
    assert policy.should_answer(1, "and then?", 20)
    assert not policy.should_answer(2, "me too?", 20), "someone else still has to say the name"
    policy.answered(1, 25)
    assert policy.should_answer(1, "more", 54.9), "each answer extends the window"
    assert not policy.should_answer(1, "more", 55.1)
    policy.forget(1)
    assert not policy.should_answer(1, "more", 26)


@pytest.mark.parametrize(("mode", "speaker", "answering", "playing", "expected"), [
    ("speaker", 1, 1, True, True),
    ("speaker", 2, 1, True, False),
    ("anyone", 2, 1, True, True),
    ("off", 1, 1, True, False),
    ("anyone", 1, 1, False, False),
])
def test_barge_in_decision(mode: str, speaker: int, answering: int, playing: bool, expected: bool) -> None:
    assert should_barge_in(mode, speaker, answering, playing) is expected


def test_barge_in_is_decided_well_within_200_ms_of_speech_onset() -> None:
    """Logic-level: the STARTED event that triggers barge-in comes after ONSET_FRAMES frames."""
    segmenter = UtteranceSegmenter()
    onset = 10.0
    for i in range(20):
        events = segmenter.frame(True, onset + i * FRAME_SECONDS)
        if events:
            assert events[0].kind is Event.STARTED
            assert events[0].at - onset <= 0.1
            break
    else:
        pytest.fail("speech never started")


def test_webrtc_vad_finds_a_voiced_burst_in_silence() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    voiced = 0.4 * np.sign(np.sin(2 * np.pi * 150 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))  # buzzy, voice-like
    audio = np.concatenate([np.zeros(rate, np.float32), voiced.astype(np.float32), np.zeros(rate, np.float32)])
    vad = make_vad("webrtc", 2)
    flags = [speech for chunk in np.array_split(audio, 37) for _, speech in vad.frames(chunk)]
    assert len(flags) == len(audio) // 320
    assert not any(flags[:45]) and not any(flags[-45:])
    assert sum(flags[50:100]) > 40


def test_an_unknown_vad_or_a_silero_without_its_model_is_a_config_error() -> None:
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match="webrtc"):
        make_vad("energy", 2)
    with pytest.raises(ConfigError, match="model file"):
        make_vad("silero", 2)
    assert isinstance(make_vad("webrtc", 0), WebRtcVad)


def test_quiet_tail_gate_ends_speech_where_the_voice_fades() -> None:
    from assistant.voice.vad import QuietTailGate

    gate = QuietTailGate(40.0)
    loud, faded = np.full(320, 0.3, np.float32), np.full(320, 0.002, np.float32)  # -43.5 dB below
    assert gate(loud, True, speaking=False) and gate(loud, True, speaking=True)
    assert not gate(faded, True, speaking=True), "the VAD's faded tail counts as silence"
    assert gate(np.full(320, 0.01, np.float32), True, speaking=True), "-29.5 dB is still speech"
    assert not gate(loud, False, speaking=True), "the VAD's silence is never overruled"
    # between utterances the level resets: a quiet speaker's next utterance is not gated away
    assert not gate(faded, False, speaking=False)
    assert gate(faded, True, speaking=False) and gate(faded, True, speaking=True)
    off = QuietTailGate(0)
    assert off(loud, True, speaking=True) and off(faded, True, speaking=True)



def test_a_vad_fed_less_than_a_frame_waits_for_the_rest() -> None:
    vad = make_vad("webrtc", 2)
    assert vad.frames(np.zeros(100, np.float32)) == []
    assert len(vad.frames(np.zeros(700, np.float32))) == 2  # 800 samples: two frames, 160 carried
    assert len(vad.frames(np.zeros(160, np.float32))) == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("Assistant, what is the capital of France?", True),
    ("Hey assistant what time is it", True),
    ("Okay, hey Assistant: tell me a joke.", True),
    ("My assistant said the capital is Paris.", False),
    ("What is the capital of France, assistant?", False),
    ("Hey Big Bot, hello", True),
    ("", False),
])
def test_a_recording_is_addressed_only_when_it_opens_with_a_name(text: str, expected: bool) -> None:
    assert addressed_at_start(text, ["assistant", "Big Bot"]) is expected


def test_joining_opens_the_follow_up_window_of_the_joiner_only() -> None:
    policy = AnswerPolicy("follow_up", ["assistant"], follow_up_s=30)
    policy.address(1, now=100.0)
    assert policy.should_answer(1, "What is the capital of France?", 129.0)
    assert not policy.should_answer(1, "What is the capital of France?", 131.0)
    assert not policy.should_answer(2, "What is the capital of France?", 101.0)
    assert AnswerPolicy("wake_word", ["assistant"], 30).should_answer(2, "assistant, hi", 0.0)


def test_model_mode_checks_after_turn_check_and_ends_only_when_told_or_after_max_pause() -> None:
    seg = UtteranceSegmenter(silence_s=0.6, speculative_s=0.15, end_of_turn="model", turn_check_s=0.2,
                             max_pause_s=1.6)
    events = run(seg, "#" * 10 + "_" * 12)
    assert [e[0] for e in events] == [Event.STARTED, Event.PAUSED, Event.CHECK]
    assert events[2][1] == 0.4 and events[2][3] == 0.2, "checked 200 ms after the end of speech"
    assert seg.end_now(0.1, 0.45) == [], "a verdict on an older pause is stale"
    (ended,) = seg.end_now(0.2, 0.45)
    assert ended.kind is Event.ENDED and ended.by_model and ended.at == 0.45
    assert seg.end_now(0.2, 0.5) == [], "an utterance ends once"


def test_model_mode_survives_a_pause_longer_than_silence_ms_and_ends_at_max_pause() -> None:
    seg = UtteranceSegmenter(silence_s=0.6, speculative_s=0.15, end_of_turn="model", turn_check_s=0.2,
                             max_pause_s=1.6)
    events = run(seg, "#" * 10 + "_" * 40 + "#" * 10 + "_" * 90)  # an 800 ms pause, then more words
    kinds = [e[0] for e in events]
    check = [Event.CHECK] * 3  # after 200, 400 and 800 ms of silence
    assert kinds == [Event.STARTED, Event.PAUSED, *check, Event.RESUMED, Event.PAUSED, *check, Event.ENDED]
    assert [round(e[1] - e[3], 3) for e in events if e[0] is Event.CHECK][:3] == [0.2, 0.4, 0.8]
    assert events[-1][2:] == (0.0, 1.2) and not seg.speaking
    assert round(events[-1][1] - events[-1][3], 3) == 1.6


@given(st.text(alphabet="#._", max_size=300))
def test_model_mode_events_alternate_sensibly(flags: str) -> None:
    state = "idle"
    seg = UtteranceSegmenter(silence_s=0.3, speculative_s=0.1, end_of_turn="model", turn_check_s=0.14,
                             max_pause_s=0.5)
    for kind, *_ in run(seg, flags):
        allowed = {"idle": {Event.STARTED}, "talk": {Event.PAUSED, Event.ENDED},
                   "pause": {Event.RESUMED, Event.ENDED, Event.CHECK}}[state]
        assert kind in allowed
        state = {Event.STARTED: "talk", Event.PAUSED: "pause", Event.RESUMED: "talk", Event.ENDED: "idle",
                 Event.CHECK: "pause"}[kind]


@pytest.mark.parametrize(("text", "unfinished"), [
    ("What is the capital of", True), ("What is the capital of France?", False), ("Tell me about the", True),
    ("Where is it?", False), ("How far is it from", True), ("I want a pizza and...", True), ("I think, um", True), ("", False),
])
def test_a_transcript_that_trails_off_sounds_unfinished(text: str, unfinished: bool) -> None:
    assert sounds_unfinished(text) is unfinished


@pytest.mark.parametrize(("text", "expected"), [
    ("Yeah.", True), ("Mhm", True), ("Yeah. Yeah. Yeah. Yeah. Yeah.", True), ("[coughing]", True), ("", True),
    ("uh-huh, okay", True), ("Wait, stop!", False), ("Yeah, but what about Spain?", False),
])
def test_backchannels_are_a_few_listening_words_or_none(text: str, expected: bool) -> None:
    assert is_backchannel(text) is expected


def test_listen_settings_come_from_the_voice_config() -> None:
    from assistant.config import VoiceConfig
    from assistant.voice.receiver import ListenSettings

    s = ListenSettings.from_config(VoiceConfig(end_of_turn="silence", speculate_after_ms=0, turn_check_ms=150,
                                               max_pause_ms=2000))
    assert (s.end_of_turn, s.turn_check_s, s.max_pause_s, s.silence_s) == ("silence", 0.15, 2.0, 0.6)
    seg = UtteranceSegmenter(s.silence_s, s.speculative_s, end_of_turn=s.end_of_turn)
    assert seg.speculative_s == seg.silence_s == 0.6, "speculation off: recognise once the utterance ended"
