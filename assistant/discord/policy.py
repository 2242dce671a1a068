"""Pure decisions of the bot: when to answer, how to split and pace replies, who may do what.

Everything here takes plain values (ids, strings, clock readings) rather than nextcord
objects, so each rule is unit-tested exhaustively without a Discord connection.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Iterable

MESSAGE_LIMIT = 2000  # Discord's maximum message length, in characters
EDITS_PER_WINDOW = 5  # Discord: 5 message edits ...
EDIT_WINDOW_S = 5.0  # ... per 5 seconds per channel
CORRECTION_PREFIX = "correct:"  # a reply to a bot message starting with this is a correction


@dataclass(frozen=True)
class Incoming:
    """What `should_answer` needs to know about a message."""

    author_is_self: bool
    author_is_bot: bool
    is_dm: bool
    mentions_bot: bool
    replies_to_bot: bool
    channel_id: int
    parent_channel_id: int | None = None  # a thread's parent channel


def should_answer(msg: Incoming, *, reply_mode: str, allowed_channel_ids: Iterable[int], answer_dms: bool) -> bool:
    """Whether the bot answers this message with a generated reply."""
    if msg.author_is_self or msg.author_is_bot:
        return False
    if msg.is_dm:
        return answer_dms
    if msg.mentions_bot or msg.replies_to_bot or reply_mode == "all":
        return True
    if reply_mode == "channels":
        allowed = set(allowed_channel_ids)
        return msg.channel_id in allowed or (msg.parent_channel_id is not None and msg.parent_channel_id in allowed)
    return False


def strip_mentions(content: str, bot_id: int) -> str:
    """The message text without the bot's own mention (`<@id>` / `<@!id>`)."""
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def correction_text(content: str) -> str | None:
    """The correction in a reply like `correct: the right answer`, else None."""
    stripped = content.strip()
    if stripped[: len(CORRECTION_PREFIX)].casefold() == CORRECTION_PREFIX:
        text = stripped[len(CORRECTION_PREFIX):].strip()
        return text or None
    return None


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split `text` into pieces of at most `limit` characters whose concatenation is `text`.

    Cuts prefer the last newline, then the last space, in the second half of a piece, so
    words and lines stay whole when they can; a long word is cut hard.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        cut = cut + 1 if cut >= limit // 2 else limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def plan_updates(shown: list[str], text: str, *, limit: int = MESSAGE_LIMIT,
                 cursor: str = "") -> list[tuple[int, str]]:
    """Which messages to (re)write so the streamed `text` is on screen: (index, content) pairs.

    `shown` is what each message of the reply currently shows; an index equal to
    len(shown) (or more) means "send a new message". Pieces already shown are not
    touched; `cursor` is appended to the last piece while the reply is still growing.
    """
    pieces = split_message(text, limit - len(cursor)) if text else []
    updates = []
    for i, piece in enumerate(pieces):
        content = piece + cursor if i == len(pieces) - 1 else piece
        if not content.strip():
            continue
        if i >= len(shown) or shown[i] != content:
            updates.append((i, content))
    return updates


class EditThrottle:
    """Paces message sends/edits per channel: one per `interval` s, at most 5 per 5 s.

    Shared by every reply in a channel, because Discord's limit is per channel.
    Memory is bounded: only the most recent `max_channels` channels are remembered.
    """

    def __init__(self, interval: float = 1.0, *, per_window: int = EDITS_PER_WINDOW,
                 window: float = EDIT_WINDOW_S, max_channels: int = 4096) -> None:
        self.interval = interval
        self.per_window = per_window
        self.window = window
        self.max_channels = max_channels
        self._stamps: OrderedDict[int, deque[float]] = OrderedDict()

    def delay(self, channel_id: int, now: float | None = None) -> float:
        """Seconds to wait before the next write in this channel (0 = now)."""
        now = time.monotonic() if now is None else now
        stamps = self._stamps.get(channel_id)
        if not stamps:
            return 0.0
        wait = stamps[-1] + self.interval - now
        recent = [t for t in stamps if t > now - self.window]
        if len(recent) >= self.per_window:
            wait = max(wait, recent[-self.per_window] + self.window - now)
        return max(wait, 0.0)

    def record(self, channel_id: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        stamps = self._stamps.setdefault(channel_id, deque(maxlen=self.per_window))
        stamps.append(now)
        self._stamps.move_to_end(channel_id)
        while len(self._stamps) > self.max_channels:
            self._stamps.popitem(last=False)

    def reserve(self, channel_id: int, now: float | None = None) -> float:
        """Book the next slot for a write and return how long to sleep until it.

        Booking before sleeping keeps concurrent replies in one channel from all waking
        at the same moment and bursting past the limit together.
        """
        now = time.monotonic() if now is None else now
        wait = self.delay(channel_id, now)
        self.record(channel_id, now + wait)
        return wait

    def confirm(self, channel_id: int, booked: float, done: float | None = None) -> None:
        """Move a booked slot to when the write really finished (late writes push later ones back).

        Pacing from completion times keeps the server-side spacing even when the event loop
        or the network delayed a write past its slot.
        """
        done = time.monotonic() if done is None else done
        stamps = self._stamps.get(channel_id)
        if not stamps or done <= booked:
            return
        for i, stamp in enumerate(stamps):
            if stamp == booked:
                stamps[i] = done
                break
        ordered = sorted(stamps)
        stamps.clear()
        stamps.extend(ordered)

    def pace(self, channel_id: int) -> "_Slot":
        """`async with throttle.pace(channel): await write()` — wait for a slot, confirm after."""
        return _Slot(self, channel_id)


class _Slot:
    def __init__(self, throttle: EditThrottle, channel_id: int) -> None:
        self.throttle = throttle
        self.channel_id = channel_id
        self.booked = 0.0

    async def __aenter__(self) -> None:
        now = time.monotonic()
        wait = self.throttle.reserve(self.channel_id, now)
        self.booked = now + wait
        await asyncio.sleep(wait)

    async def __aexit__(self, *_: object) -> None:
        self.throttle.confirm(self.channel_id, self.booked)


class TypingPacer:
    """One "typing…" request per channel per `every` seconds, however many answers are pending there."""

    def __init__(self, every: float = 8.0, *, max_channels: int = 4096) -> None:
        self.every = every
        self.max_channels = max_channels
        self._last: OrderedDict[int, float] = OrderedDict()

    def due(self, channel_id: int, now: float | None = None) -> bool:
        """True (and remembered) when this channel's indicator needs refreshing now."""
        now = time.monotonic() if now is None else now
        last = self._last.get(channel_id)
        if last is not None and now - last < self.every:
            return False
        self._last[channel_id] = now
        self._last.move_to_end(channel_id)
        while len(self._last) > self.max_channels:
            self._last.popitem(last=False)
        return True


class RateLimiter:
    """Per-user sliding-window limit: `limit` messages per `window` seconds (bounded memory)."""

    def __init__(self, limit: int, window: float, *, max_users: int = 10000) -> None:
        self.limit = limit
        self.window = window
        self.max_users = max_users
        self._hits: OrderedDict[int, deque[float]] = OrderedDict()
        self._warned: dict[int, float] = {}

    def allow(self, user_id: int, now: float | None = None) -> bool:
        """Count one message; False when the user is over the limit (that message is not counted)."""
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        self._hits.move_to_end(user_id)
        while len(self._hits) > self.max_users:
            old, _ = self._hits.popitem(last=False)
            self._warned.pop(old, None)
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def retry_after(self, user_id: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        hits = self._hits.get(user_id)
        if not hits or len(hits) < self.limit:
            return 0.0
        return max(hits[0] + self.window - now, 0.0)

    def should_warn(self, user_id: int, now: float | None = None) -> bool:
        """True once per window per user: the first refused message gets a polite reply,
        later ones only a reaction (answering spam with spam helps nobody)."""
        now = time.monotonic() if now is None else now
        last = self._warned.get(user_id)
        if last is not None and now - last < self.window:
            return False
        self._warned[user_id] = now
        return True


def is_admin(user_id: int, role_ids: Iterable[int], *, admin_user_ids: Iterable[int],
             admin_role_ids: Iterable[int]) -> bool:
    """Admins are listed by user id or hold a listed role. Nobody is an admin by default."""
    return user_id in set(admin_user_ids) or bool(set(role_ids) & set(admin_role_ids))



class Gate:
    """At most `limit` holders at once. Entering never waits: a bot that is already generating
    as much as it can refuses the next request politely instead of queueing it without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0

    def try_enter(self) -> bool:
        if self.held >= self.limit:
            self.refused += 1
            return False
        self.held += 1
        return True

    def leave(self) -> None:
        self.held = max(self.held - 1, 0)
