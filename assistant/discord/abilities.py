"""What one cog does for another, as typed abilities on `BotServices` instead of `bot.get_cog("Name")`.

Why: a cog that looked another up by name got an untyped object (every call needed a
`type: ignore`) and failed only at run time when the other was renamed. Each providing cog
registers itself on the services when it is created; a consumer sees `None` when the ability
is absent (speech not set up, a cog not loaded) and a type checker sees every call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import nextcord

if TYPE_CHECKING:
    from assistant.discord.invocation import Invocation
    from assistant.discord.latency import TurnTiming


class CallSpeaker(Protocol):
    """Speaks one streamed text answer into the voice call its asker is in."""

    def feed(self, delta: str) -> None: ...

    async def finish(self) -> float | None: ...


class VoiceCalls(Protocol):
    """The bot's voice calls (the Voice cog)."""

    def speaker_for(self, message: nextcord.Message) -> CallSpeaker | None: ...

    async def refresh_persona(self, guild_id: int) -> None: ...

    async def disconnect_all(self) -> None: ...


class VoiceMessages(Protocol):
    """Hearing audio attachments and answering with Discord voice messages (the VoiceMessages cog)."""

    async def transcribe_attachment(self, attachment: nextcord.Attachment) -> str: ...

    async def addressed_transcript(self, attachment: nextcord.Attachment, names: list[str]) -> str | None: ...

    async def reply_with_voice(self, message: nextcord.Message, text: str, timing: TurnTiming) -> None: ...


class AdapterSwitch(Protocol):
    """Activating an adapter with the reply the admin sees (the Adapters cog)."""

    async def activate(self, inv: Invocation, name: str, *, force: bool = False) -> None: ...
