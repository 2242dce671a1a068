"""Test-facing controls for people, messages, reactions and interactions.

A mixin of :class:`~tests.fakediscord.server.FakeDiscord`; it only acts on the
shared :class:`World`, which dispatches the gateway events Discord would.
Simulated users act instantly (no REST, no rate limits); only the bot talks
through the real API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from . import interactions
from .models import (
    CB_AUTOCOMPLETE,
    IS_VOICE_MESSAGE,
    LOADING,
    Attachment,
    Channel,
    Command,
    InteractionRecord,
    Message,
    User,
)
from .state import ChannelRef, UserRef, World


class ChatControls:
    world: World

    # -- people and places ------------------------------------------------------------------
    @property
    def bot(self) -> User:
        return self.world.bot

    @property
    def alice(self) -> User:
        """Guild owner with the Admin role."""
        return self.world.alice

    @property
    def bob(self) -> User:
        """Plain member."""
        return self.world.bob

    @property
    def general(self) -> Channel:
        return self.world.general

    @property
    def random(self) -> Channel:
        return self.world.random

    @property
    def voice_channel(self) -> Channel:
        return self.world.voice

    @property
    def thread(self) -> Channel:
        return self.world.thread

    def user(self, ref: UserRef) -> User:
        return self.world.find_user(ref)

    def channel(self, ref: ChannelRef) -> Channel:
        return self.world.find_channel(ref)

    def add_user(
        self, name: str, *, roles: Iterable[str | int] = ("Member",), global_name: str | None = None,
        bot: bool = False,
    ) -> User:
        return self.world.add_user(name, roles=roles, global_name=global_name, bot=bot)

    def add_text_channel(self, name: str) -> Channel:
        return self.world.add_channel(name, 0, parent=self.world.category)

    def add_guild(self, name: str, *, members: Iterable[User] = ()) -> Channel:
        """The bot is added to another server; returns that server's text channel."""
        return self.world.add_guild(name, members=members)

    @property
    def left_guilds(self) -> list[int]:
        """Ids of the guilds the bot left, in order."""
        return [g.id for g in self.world.left_guilds]

    def add_voice_channel(self, name: str) -> Channel:
        return self.world.add_channel(name, 2, parent=self.world.category)

    def dm_channel(self, user: UserRef) -> Channel:
        return self.world.dm_channel(user)

    # -- attachments ------------------------------------------------------------------------
    def upload(
        self, filename: str, data: bytes, content_type: str | None = None, *,
        channel: ChannelRef | None = None, description: str | None = None,
        duration_secs: float | None = None, waveform: str | None = None,
    ) -> Attachment:
        """Put a file on the fake CDN (to attach to a user message or a slash option)."""
        cid = self.world.find_channel(channel).id if channel is not None else self.world.general.id
        return self.world.create_attachment(
            cid, filename, data, content_type, description=description,
            duration_secs=duration_secs, waveform=waveform,
        )

    def voice_message_attachment(
        self, ogg: bytes, duration_secs: float, waveform: str = "AAAAAAAAAAAA", *,
        channel: ChannelRef | None = None,
    ) -> Attachment:
        return self.upload("voice-message.ogg", ogg, "audio/ogg", channel=channel,
                           duration_secs=duration_secs, waveform=waveform)

    # -- messages ---------------------------------------------------------------------------
    def send_message(
        self, channel: ChannelRef, author: UserRef, content: str = "", *,
        attachments: Iterable[Attachment] = (), reference: Message | None = None,
        embeds: list[dict[str, Any]] | None = None, mention_author: bool = True,
        voice_message: bool = False, components: list[dict[str, Any]] | None = None,
    ) -> Message:
        """A user posts (dispatches MESSAGE_CREATE). ``voice_message`` sets flag 1<<13;
        pass exactly one audio attachment made with :meth:`voice_message_attachment`."""
        return self.world.create_message(
            channel, author, content, attachments=list(attachments), reference=reference,
            embeds=embeds, mention_author=mention_author, components=components,
            flags=IS_VOICE_MESSAGE if voice_message else 0,
        )

    def send_voice_message(self, channel: ChannelRef, author: UserRef, ogg: bytes,
                           duration_secs: float, *, reference: Message | None = None) -> Message:
        att = self.voice_message_attachment(ogg, duration_secs, channel=channel)
        return self.send_message(channel, author, attachments=[att], reference=reference,
                                 voice_message=True)

    def edit_message(self, message: Message, content: str) -> Message:
        """A user edits their own message (dispatches MESSAGE_UPDATE)."""
        return self.world.edit_message(message, content=content)

    def delete_message(self, message: Message) -> None:
        self.world.delete_message(message)

    def add_reaction(self, message: Message, emoji: str, user: UserRef) -> None:
        """``emoji`` is a unicode emoji or ``name:id`` for a custom one."""
        self.world.react(message, emoji, user)

    def remove_reaction(self, message: Message, emoji: str, user: UserRef) -> None:
        self.world.react(message, emoji, user, add=False)

    def messages(self, channel: ChannelRef, *, include_deleted: bool = False) -> list[Message]:
        """Every message in the channel, oldest first, each with its edit history."""
        return self.world.messages_in(channel, include_deleted=include_deleted)

    def bot_messages(self, channel: ChannelRef | None = None) -> list[Message]:
        cid = self.world.find_channel(channel).id if channel is not None else None
        return [
            m for m in self.world.messages.values()
            if m.author.id == self.world.bot.id and not m.deleted and cid in (None, m.channel_id)
        ]

    async def wait_for_bot_message(
        self, channel: ChannelRef | None = None, predicate: Callable[[Message], Any] | None = None,
        *, after: Message | None = None, timeout: float = 10.0,
    ) -> Message:
        """First bot message (in ``channel``, newer than ``after``) for which ``predicate``
        holds; re-checked on every edit, so it can wait for a streamed reply's end."""
        def check() -> Message | None:
            for m in self.bot_messages(channel):
                if (after is None or m.id > after.id) and (predicate is None or predicate(m)):
                    return m
            return None

        return await self.world.wait_until(check, timeout, f"a bot message in {channel!r}")

    async def wait_for_settled(self, message: Message, *, quiet: float = 0.5, timeout: float = 15.0) -> Message:
        """Wait until ``message`` has not been edited for ``quiet`` seconds."""
        return await self.world.wait_until(
            lambda: message if time.monotonic() - message.updated_at >= quiet else None,
            timeout, f"message {message.id} to stop changing",
        )

    async def wait_for_reaction(
        self, message: Message, emoji: str | None = None, *, user: UserRef | None = None,
        timeout: float = 10.0,
    ) -> str:
        uid = self.world.find_user(user if user is not None else self.world.bot).id
        def check() -> str | None:
            for key, users in message.reactions.items():
                if uid in users and emoji in (None, key):
                    return key
            return None

        return await self.world.wait_until(check, timeout, f"a reaction on message {message.id}")

    async def wait_for_typing(self, channel: ChannelRef, *, timeout: float = 10.0) -> float:
        cid = self.world.find_channel(channel).id
        return await self.world.wait_until(
            lambda: next((t for t, c, _ in self.world.typing if c == cid), None),
            timeout, f"the bot typing in {channel!r}",
        )

    # -- application commands and interactions ---------------------------------------------
    def commands(self, *, guild_only: bool | None = None) -> list[Command]:
        found = list(self.world.commands.values())
        if guild_only is not None:
            found = [c for c in found if (c.guild_id is not None) == guild_only]
        return found

    async def wait_for_commands(self, *names: str, timeout: float = 10.0) -> list[Command]:
        def check() -> list[Command] | None:
            have = {c.name: c for c in self.world.commands.values()}
            return [have[n] for n in names] if all(n in have for n in names) else None

        return await self.world.wait_until(check, timeout, f"commands {names} to be registered")

    def _deliver(self, rec: InteractionRecord) -> InteractionRecord:
        self.world.dispatch("INTERACTION_CREATE", rec.payload)
        self.world.notify()
        return rec

    def invoke_slash(
        self, name: str, options: dict[str, Any] | None = None, *, user: UserRef | None = None,
        channel: ChannelRef | None = None,
    ) -> InteractionRecord:
        """Run ``/name`` (``"group sub"`` for sub-commands) as ``user`` (default alice)."""
        u, c = self._who_where(user, channel)
        return self._deliver(interactions.slash(self.world, name, options or {}, u, c))

    def invoke_autocomplete(
        self, name: str, options: dict[str, Any], focused: str, *, user: UserRef | None = None,
        channel: ChannelRef | None = None,
    ) -> InteractionRecord:
        u, c = self._who_where(user, channel)
        return self._deliver(interactions.slash(self.world, name, options, u, c, focused=focused))

    def invoke_context_menu(self, name: str, target: User | Message, *, user: UserRef | None = None,
                            channel: ChannelRef | None = None) -> InteractionRecord:
        u, c = self._who_where(user, channel)
        return self._deliver(interactions.context_menu(self.world, name, target, u, c))

    def click_button(self, message: Message, custom_id: str, *, user: UserRef | None = None) -> InteractionRecord:
        u, _ = self._who_where(user, None)
        return self._deliver(interactions.component(self.world, message, custom_id, u))

    def choose(self, message: Message, custom_id: str, values: list[str], *,
               user: UserRef | None = None) -> InteractionRecord:
        """Pick ``values`` in a select menu."""
        u, _ = self._who_where(user, None)
        return self._deliver(interactions.component(self.world, message, custom_id, u, values))

    def submit_modal(self, opened_by: InteractionRecord, values: dict[str, str], *,
                     user: UserRef | None = None) -> InteractionRecord:
        u, _ = self._who_where(user if user is not None else opened_by.user, None)
        return self._deliver(interactions.modal_submit(self.world, opened_by, values, u))

    async def wait_for_response(
        self, interaction: InteractionRecord, *, complete: bool = True, timeout: float = 10.0,
    ) -> InteractionRecord:
        """Wait for the bot's callback; with ``complete`` also for a deferred
        ("thinking...") response to be replaced by real content."""
        def check() -> InteractionRecord | None:
            if not interaction.callbacks:
                return None
            if complete and interaction.original is not None and interaction.original.flags & LOADING:
                return None
            return interaction

        return await self.world.wait_until(check, timeout, f"a response to interaction {interaction.id}")

    async def wait_for_choices(
        self, interaction: InteractionRecord, *, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        await self.world.wait_until(
            lambda: any(cb.type == CB_AUTOCOMPLETE for cb in interaction.callbacks),
            timeout, "autocomplete choices",
        )
        return interaction.choices or []

    def _who_where(self, user: UserRef | None, channel: ChannelRef | None) -> tuple[User, Channel]:
        u = self.world.find_user(user if user is not None else self.world.alice)
        c = self.world.find_channel(channel if channel is not None else self.world.general)
        return u, c
