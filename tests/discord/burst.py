"""A mixed burst from many users at once, shared by the resilience test and bench/bench_hardening.py.

Each user has a channel of their own and, all at the same moment, mentions the bot, runs
commands (one with "@everyone" in it), replies "correct: ..." to an answer, reacts 👍 and
runs a small `test`; one of them also attaches a 1 MB `test` array. Afterwards every message
must have an answer, a polite refusal, or a ⏳ reaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakediscord import FakeDiscord, Message

CURSOR = "▌"
SMALL_TEST = json.dumps([{"prompt": "What is 2+2?", "expected": "4"}])


@dataclass
class Burst:
    users: list[Any]
    channels: list[Any]
    sent: list[Message] = field(default_factory=list)  # messages that expect an answer
    reactions: int = 0
    started: float = 0.0

    def outcome(self, server: FakeDiscord, message: Message) -> str | None:
        """'answered', 'throttled' (⏳ or a polite text) or None while nothing came back yet."""
        if server.bot.id in message.reactions.get("⏳", []):
            return "throttled"
        replies = [m for m in server.bot_messages(message.channel_id) if m.id > message.id]
        mine = [m for m in replies if m.reference and int(m.reference["message_id"]) == message.id]
        if any(is_polite(m.content) for m in mine):
            return "throttled"
        if any(not m.content.endswith(CURSOR) for m in mine):
            return "answered"
        return None

    def outcomes(self, server: FakeDiscord) -> dict[str, int]:
        """Per kind of outcome, counted per channel: a command's answer is not a reply, so in
        each channel the bot's unreferenced messages account for the commands in order."""
        counts = {"answered": 0, "throttled": 0, "pending": 0}
        for channel in self.channels:
            mine = [m for m in self.sent if m.channel_id == channel.id]
            plain = [m for m in server.bot_messages(channel) if m.reference is None and not m.content.endswith(CURSOR)]
            budget = len(plain)
            for message in mine:
                state = self.outcome(server, message)
                if state is None and budget > 0 and not message.content.startswith("<@"):
                    budget -= 1
                    state = "answered"
                counts[state or "pending"] += 1
        return counts

    def all_handled(self, server: FakeDiscord) -> bool:
        return self.outcomes(server)["pending"] == 0


def is_polite(text: str) -> bool:
    return any(words in text for words in ("faster than I can answer", "answering a lot of people",
                                            "runs many generations", "limit is", "more than"))


async def prepare(server: FakeDiscord, users: int) -> Burst:
    """Users, their channels, and one bot message per channel to correct and react to."""
    burst = Burst([server.add_user(f"burst{i}") for i in range(users)],
                  [server.add_text_channel(f"burst-{i}") for i in range(users)])
    for user, channel in zip(burst.users, burst.channels):
        asked = server.send_message(channel, user, "!hi")
        await server.wait_for_bot_message(channel, lambda m, asked=asked: m.id > asked.id, timeout=60)
    return burst


def fire(server: FakeDiscord, burst: Burst, *, big_test: bool = True) -> None:
    """Everyone at once: ten things per user."""
    burst.started = time.monotonic()
    bot = server.bot.id
    for n, (user, channel) in enumerate(zip(burst.users, burst.channels)):
        target = next(m for m in server.bot_messages(channel))
        actions = [f"<@{bot}> Say hi #{n}.", "!hi", f"<@{bot}> What is 2+2?", "!status @everyone",
                   f"!test {SMALL_TEST}", "!stats", f"<@{bot}> Name a colour."]
        for text in actions:
            burst.sent.append(server.send_message(channel, user, text))
        burst.sent.append(server.send_message(channel, user, f"correct: the right answer #{n}", reference=target))
        server.add_reaction(target, "👍", user)
        burst.reactions += 1
        if big_test and n == 0:
            item = json.dumps({"prompt": "a" * 640, "expected": "b"})
            data = ("[" + ",".join([item] * 1500) + "]").encode()
            attachment = server.upload("big.json", data, "application/json", channel=channel)
            burst.sent.append(server.send_message(channel, user, "!test", attachments=[attachment]))
        else:
            burst.sent.append(server.send_message(channel, user, "!hi"))
