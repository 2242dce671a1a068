"""Plain records of what the fake Discord knows and what happened on it.

Tests read these directly, so they keep full history (every edit of a message,
every interaction callback) with ``time.monotonic()`` stamps: the questions we
ask in end-to-end tests are usually "did the reply stream through several
edits" or "how long after the prompt did the first audio packet arrive".
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types)
GUILD_TEXT, DM, GUILD_VOICE, GUILD_CATEGORY, PUBLIC_THREAD = 0, 1, 2, 4, 11

# Message flags
EPHEMERAL, LOADING, IS_VOICE_MESSAGE = 1 << 6, 1 << 7, 1 << 13

# Interaction types and callback types
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE = 4, 5, 6, 7
CB_AUTOCOMPLETE, CB_MODAL = 8, 9


class Snowflakes:
    """Discord-shaped ids: strictly increasing, with a real creation time inside,
    so ``nextcord.utils.snowflake_time`` and ``before=``/``after=`` paging work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._increment = 0

    def next(self) -> int:
        with self._lock:
            ms = max(int(time.time() * 1000), self._last_ms)
            if ms == self._last_ms:
                self._increment += 1
                if self._increment >= 4096:
                    ms, self._increment = ms + 1, 0
            else:
                self._increment = 0
            self._last_ms = ms
            return ((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17) | (1 << 12) | self._increment


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()


@dataclass(eq=False)
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"


@dataclass
class Member:
    user: User
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: float = field(default_factory=time.time)


@dataclass(eq=False)
class Channel:
    id: int
    type: int
    name: str
    guild_id: int | None = None
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    owner_id: int | None = None
    recipients: list[User] = field(default_factory=list)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass
class VoiceState:
    user_id: int
    guild_id: int
    channel_id: int | None
    session_id: str
    self_mute: bool = False
    self_deaf: bool = False


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    voice_states: dict[int, VoiceState] = field(default_factory=dict)


@dataclass(eq=False)
class Attachment:
    """A file on the fake CDN; ``data`` holds the exact bytes that were uploaded."""

    id: int
    filename: str
    data: bytes = field(repr=False)
    content_type: str
    url: str
    description: str | None = None
    duration_secs: float | None = None
    waveform: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Revision:
    """One visible state of a message; the first is the creation."""

    at: float
    content: str
    embeds: list[dict[str, Any]]
    attachments: list[Attachment]
    components: list[dict[str, Any]]
    flags: int


@dataclass(eq=False)
class Message:
    id: int
    channel_id: int
    guild_id: int | None
    author: User
    revisions: list[Revision]
    type: int = 0
    reference: dict[str, Any] | None = None
    referenced: Message | None = None
    mentions: list[User] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    tts: bool = False
    nonce: str | int | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction: dict[str, Any] | None = None
    reactions: dict[str, list[int]] = field(default_factory=dict)
    pinned: bool = False
    created_wall: float = field(default_factory=time.time)
    edited_wall: float | None = None
    deleted_at: float | None = None

    @property
    def content(self) -> str:
        return self.revisions[-1].content

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.revisions[-1].embeds

    @property
    def attachments(self) -> list[Attachment]:
        return self.revisions[-1].attachments

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.revisions[-1].components

    @property
    def flags(self) -> int:
        return self.revisions[-1].flags

    @property
    def created_at(self) -> float:
        return self.revisions[0].at

    @property
    def updated_at(self) -> float:
        return self.revisions[-1].at

    @property
    def edit_count(self) -> int:
        return len(self.revisions) - 1

    @property
    def history(self) -> list[str]:
        """Every content the message ever showed, oldest first."""
        return [r.content for r in self.revisions]

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def is_voice_message(self) -> bool:
        return bool(self.flags & IS_VOICE_MESSAGE)


@dataclass
class Command:
    """An application command as registered by the bot (``raw`` is what it sent)."""

    id: int
    application_id: int
    guild_id: int | None
    name: str
    type: int
    description: str
    options: list[dict[str, Any]]
    raw: dict[str, Any]
    version: int


@dataclass
class Callback:
    """One ``POST /interactions/{id}/{token}/callback`` the bot made."""

    at: float
    type: int
    data: dict[str, Any]


@dataclass(eq=False)
class InteractionRecord:
    id: int
    token: str
    type: int
    user: User
    channel_id: int | None
    guild_id: int | None
    payload: dict[str, Any] = field(repr=False)
    created_at: float = field(default_factory=time.monotonic)
    command: Command | None = None
    message: Message | None = None
    callbacks: list[Callback] = field(default_factory=list)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)

    @property
    def responded(self) -> bool:
        return bool(self.callbacks)

    @property
    def response_type(self) -> int | None:
        return self.callbacks[0].type if self.callbacks else None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete answer, if the bot gave one."""
        for cb in self.callbacks:
            if cb.type == CB_AUTOCOMPLETE:
                return list(cb.data.get("choices", []))
        return None

    @property
    def messages(self) -> list[Message]:
        """Original response (if any) then followups: what the user sees."""
        return ([self.original] if self.original else []) + list(self.followups)
