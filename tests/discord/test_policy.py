"""Pure decisions of the bot: answering, splitting, pacing, rate limits, admins, history."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.discord.history import Said, to_turns
from assistant.discord.policy import (
    EditThrottle,
    Incoming,
    RateLimiter,
    TypingPacer,
    correction_text,
    is_admin,
    plan_updates,
    should_answer,
    split_message,
    strip_mentions,
)


def incoming(**kw) -> Incoming:
    base = dict(author_is_self=False, author_is_bot=False, is_dm=False, mentions_bot=False, replies_to_bot=False,
                channel_id=1, parent_channel_id=None)
    base.update(kw)
    return Incoming(**base)


@pytest.mark.parametrize("mode", ["mention", "channels", "all"])
def test_never_answers_itself_or_bots(mode):
    for msg in (incoming(author_is_self=True, mentions_bot=True), incoming(author_is_bot=True, is_dm=True)):
        assert not should_answer(msg, reply_mode=mode, allowed_channel_ids=[1], answer_dms=True)


def test_reply_modes():
    rules = dict(allowed_channel_ids=[5], answer_dms=True)
    assert should_answer(incoming(mentions_bot=True), reply_mode="mention", **rules)
    assert should_answer(incoming(replies_to_bot=True), reply_mode="mention", **rules)
    assert not should_answer(incoming(), reply_mode="mention", **rules)
    assert should_answer(incoming(channel_id=5), reply_mode="channels", **rules)
    assert should_answer(incoming(channel_id=9, parent_channel_id=5), reply_mode="channels", **rules)  # thread
    assert not should_answer(incoming(channel_id=9), reply_mode="channels", **rules)
    assert should_answer(incoming(channel_id=9), reply_mode="all", **rules)
    assert should_answer(incoming(is_dm=True), reply_mode="mention", **rules)
    assert not should_answer(incoming(is_dm=True, mentions_bot=True), reply_mode="all", allowed_channel_ids=[],
                             answer_dms=False)


def test_strip_mentions_and_correction_prefix():
    assert strip_mentions("<@42> hi <@!42>", 42) == "hi"
    assert strip_mentions("<@43> hi", 42) == "<@43> hi"
    assert correction_text("Correct: Paris") == "Paris"
    assert correction_text("  correct:   x ") == "x"
    assert correction_text("correct:") is None
    assert correction_text("incorrect: x") is None


@given(st.text(max_size=6000), st.integers(min_value=1, max_value=2500))
@settings(max_examples=300, deadline=None)
def test_split_message_is_lossless_and_fits(text, limit):
    pieces = split_message(text, limit)
    assert "".join(pieces) == text
    assert all(len(p) <= limit for p in pieces)
    assert all(pieces) or pieces == [""]


def test_split_prefers_line_then_word_boundaries():
    text = "a" * 1500 + "\n" + "b" * 1000
    assert split_message(text) == ["a" * 1500 + "\n", "b" * 1000]
    words = ("word " * 600).strip()
    assert all(not p.startswith(" ") and p.endswith(" ") for p in split_message(words)[:-1])
    assert split_message("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]


@given(st.lists(st.text(min_size=1, max_size=700), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_plan_updates_converges_to_the_text(deltas):
    shown: list[str] = []
    text = ""
    for delta in deltas:
        text += delta
        for index, content in plan_updates(shown, text, cursor=" ▌"):
            assert len(content) <= 2000
            if index < len(shown):
                shown[index] = content
            else:
                assert index == len(shown)
                shown.append(content)
    for index, content in plan_updates(shown, text):
        if index < len(shown):
            shown[index] = content
        else:
            shown.append(content)
    assert "".join(shown).replace(" ▌", "") == text.replace(" ▌", "") or not text.strip()
    assert plan_updates(shown, text) == []


def test_edit_throttle_paces_one_per_interval_and_five_per_window():
    throttle = EditThrottle(1.0)
    now = 100.0
    stamps = []
    for _ in range(20):
        now += throttle.reserve(7, now)
        stamps.append(now)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(stamps, stamps[1:]))
    assert all(sum(1 for t in stamps if s <= t < s + 5.0) <= 5 for s in stamps)
    assert throttle.delay(8, now) == 0.0  # other channels are not affected


def test_edit_throttle_window_rule_with_short_interval():
    throttle = EditThrottle(0.1)
    stamps = []
    now = 0.0
    for _ in range(12):
        now += throttle.reserve(1, now)
        stamps.append(now)
    assert all(sum(1 for t in stamps if s <= t < s + 5.0) <= 5 for s in stamps)


def test_edit_throttle_memory_is_bounded():
    throttle = EditThrottle(1.0, max_channels=10)
    for channel in range(1000):
        throttle.record(channel, 0.0)
    assert len(throttle._stamps) == 10


def test_rate_limiter_window_warn_once_and_bounded():
    limiter = RateLimiter(3, 60.0, max_users=50)
    assert [limiter.allow(1, t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert limiter.retry_after(1, 3) == pytest.approx(57.0)
    assert limiter.should_warn(1, 3) and not limiter.should_warn(1, 10) and limiter.should_warn(1, 70)
    assert limiter.allow(1, 60.5)  # the first hit left the window
    assert limiter.allow(2, 3)  # per user
    for user in range(1000):
        limiter.allow(user, 100)
    assert len(limiter._hits) <= 50


def test_is_admin_needs_a_listed_user_or_role():
    assert is_admin(1, [], admin_user_ids=[1], admin_role_ids=[])
    assert is_admin(2, [9, 10], admin_user_ids=[], admin_role_ids=[10])
    assert not is_admin(2, [9], admin_user_ids=[1], admin_role_ids=[10])
    assert not is_admin(1, [], admin_user_ids=[], admin_role_ids=[])


def test_to_turns_skips_bots_commands_corrections_and_merges():
    said = [Said(True, True, "earlier bot text"), Said(False, False, "hello"), Said(False, False, "anyone?"),
            Said(False, True, "another bot"), Said(False, False, "!hi"), Said(True, True, "Hi there"),
            Said(False, False, "correct: Hello there"), Said(False, False, "   ")]
    assert to_turns(said, command_prefix="!") == [
        {"role": "user", "content": "hello\nanyone?"}, {"role": "assistant", "content": "Hi there"}]


def test_questions_to_the_bot_still_waiting_for_their_answers_are_left_out():
    """Bob and Carol ask at the same moment: Dana's prompt holds the earlier exchange, not their questions."""
    said = [Said(False, False, "what is 2+2?", to_me=True, id=1), Said(False, False, "Who wrote Hamlet?", to_me=True, id=2),
            Said(True, True, "4.", id=3, reply_to=1), Said(False, False, "nice weather today", id=4),
            Said(False, False, "What is the capital of Peru?", to_me=True, id=5)]
    assert to_turns(said, command_prefix="!") == [
        {"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": "4."},
        {"role": "user", "content": "nice weather today"}]


def test_typing_pacer_one_request_per_period_per_channel():
    pacer = TypingPacer(8.0, max_channels=3)
    assert pacer.due(1, 0.0) and not pacer.due(1, 7.9) and pacer.due(1, 8.0)
    assert pacer.due(2, 1.0)
    for channel in range(10):
        pacer.due(channel, 20.0)
    assert len(pacer._last) == 3


def test_late_writes_push_the_next_slot_back():
    throttle = EditThrottle(1.0)
    booked = throttle.reserve(3, 10.0) + 10.0
    throttle.confirm(3, booked, 10.7)  # the write finished late
    assert throttle.delay(3, 11.0) == pytest.approx(0.7)


def test_the_listening_notice_names_the_answer_mode_and_the_wake_words() -> None:
    from assistant.config import VoiceConfig
    from assistant.discord.cogs.voice import listening_notice

    follow = listening_notice("Voice", VoiceConfig(wake_words=["assistant", "computer"]), "Alice")
    assert "Alice" in follow and "“assistant” or “computer”" in follow and "30 s" in follow
    assert "“bot”" in listening_notice("Voice", VoiceConfig(answer_mode="wake_word", wake_words=["bot"]), "A")
    assert "everything" in listening_notice("Voice", VoiceConfig(answer_mode="everyone"), "A")
