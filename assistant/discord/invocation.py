"""One shape for "a user ran a command", whether typed (`!train`) or a slash command (`/train`).

Each command is written once against `Invocation`; the prefix and slash entry points only
build one. A slash interaction is deferred at once (Discord wants an answer within 3 s,
and commands may load files or start jobs), then answered with follow-ups, which, like
channel messages, can be edited later (for live training progress).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import nextcord
from nextcord.ext import commands

from assistant.discord.policy import split_message

logger = logging.getLogger(__name__)

Sender = Callable[..., Awaitable[Any]]


@dataclass
class Invocation:
    """Who ran a command, where, and how to answer them."""

    user: nextcord.User | nextcord.Member
    channel: Any
    guild: nextcord.Guild | None
    _send: Sender
    reference: nextcord.MessageReference | None = None  # the message the command replied to
    message: nextcord.Message | None = None  # the typed command (None for slash)
    attachments: list[nextcord.Attachment] = field(default_factory=list)

    @property
    def role_ids(self) -> list[int]:
        return [role.id for role in getattr(self.user, "roles", [])]

    async def send(self, content: str | None = None, **kwargs: Any) -> Any:
        """Send one message (content must fit; use `send_long` for text that may not)."""
        return await self._send(content=content, **kwargs)

    async def send_long(self, text: str) -> list[Any]:
        """Send text of any length as as many messages as it takes."""
        return [await self._send(content=piece) for piece in split_message(text) if piece.strip()]

    @classmethod
    def from_context(cls, ctx: commands.Context) -> "Invocation":
        async def send(**kwargs: Any) -> Any:
            return await ctx.send(**_drop_none(kwargs))

        ref = ctx.message.reference
        return cls(ctx.author, ctx.channel, ctx.guild, send, reference=ref, message=ctx.message,
                   attachments=list(ctx.message.attachments))

    @classmethod
    def from_context_message(cls, message: nextcord.Message) -> "Invocation":
        """For messages handled outside the command framework (a "correct:" reply)."""
        async def send(**kwargs: Any) -> Any:
            return await message.channel.send(**_drop_none(kwargs))

        return cls(message.author, message.channel, message.guild, send, reference=message.reference,
                   message=message, attachments=list(message.attachments))

    @classmethod
    async def from_interaction(cls, interaction: nextcord.Interaction,
                               attachments: list[nextcord.Attachment] | None = None) -> "Invocation":
        if not interaction.response.is_done():
            await interaction.response.defer()

        async def send(**kwargs: Any) -> Any:
            return await interaction.followup.send(wait=True, **_drop_none(kwargs))

        assert interaction.user is not None
        return cls(interaction.user, interaction.channel, interaction.guild, send,
                   attachments=[a for a in (attachments or []) if a is not None])


def _drop_none(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}
