"""The fake Discord's world: one guild with people, channels and history.

Everything that changes goes through :class:`World` so that (1) the matching
gateway event is dispatched exactly like Discord would, and (2) waiters in
tests wake up: tests never sleep, they wait for a condition on this state.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import cdn, payloads
from .models import (
    DM,
    EPHEMERAL,
    GUILD_CATEGORY,
    GUILD_TEXT,
    GUILD_VOICE,
    PUBLIC_THREAD,
    Attachment,
    Channel,
    Command,
    Guild,
    InteractionRecord,
    Member,
    Message,
    Revision,
    Role,
    Snowflakes,
    User,
    VoiceState,
)

T = TypeVar("T")
UserRef = User | int | str
ChannelRef = Channel | int | str

EVERYONE_PERMISSIONS = sum(
    1 << bit for bit in (6, 10, 11, 14, 15, 16, 18, 20, 21, 25, 31, 38, 46)
)  # reactions, view, send, embeds, files, history, ext. emoji, connect, speak, VAD, app cmds, threads, voice msgs
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | (1 << 13) | (1 << 12)  # + manage messages, TTS

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class World:
    """State plus change notification; the REST, gateway and test API all share it."""

    def __init__(self, *, bot_name: str = "Assistant", guild_name: str = "Test Guild") -> None:
        self.ids = Snowflakes()
        self.base_url = ""
        self.bot = User(self.ids.next(), bot_name, bot=True)
        self.application_id = self.bot.id
        self.users: dict[int, User] = {self.bot.id: self.bot}
        self.guilds: dict[int, Guild] = {}
        self.left_guilds: list[Guild] = []  # guilds the bot left, in order
        self.dm_channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.commands: dict[int, Command] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.typing: list[tuple[float, int, int]] = []
        self.interaction_deadline = 3.0  # seconds Discord gives for the first callback
        self.dispatch: Callable[[str, dict[str, Any]], None] = lambda event, data: None
        self._waiters: list[asyncio.Future[None]] = []
        self._build_default_guild(guild_name)

    # -- default world ---------------------------------------------------------------
    def _build_default_guild(self, name: str) -> None:
        self.alice = User(self.ids.next(), "alice", global_name="Alice")
        self.guild = Guild(self.ids.next(), name, owner_id=self.alice.id)
        g = self.guild
        self.guilds[g.id] = g
        g.roles[g.id] = Role(g.id, "@everyone", EVERYONE_PERMISSIONS, position=0)
        self.member_role = self.add_role("Member", position=1)
        self.bot_role = self.add_role("Assistant", BOT_PERMISSIONS, position=2)
        self.admin_role = self.add_role("Admin", payloads.ADMINISTRATOR, position=3)
        self.users[self.alice.id] = self.alice
        g.members[self.alice.id] = Member(self.alice, [self.admin_role.id])
        g.members[self.bot.id] = Member(self.bot, [self.bot_role.id])
        self.bob = self.add_user("bob", global_name="Bob", roles=["Member"])
        self.category = self.add_channel("Channels", GUILD_CATEGORY)
        self.general = self.add_channel("general", GUILD_TEXT, parent=self.category)
        self.random = self.add_channel("random", GUILD_TEXT, parent=self.category)
        self.voice = self.add_channel("Voice", GUILD_VOICE, parent=self.category)
        self.thread = self.add_channel("help-thread", PUBLIC_THREAD, parent=self.general)

    def add_guild(self, name: str, *, members: Iterable[User] = ()) -> Channel:
        """Another server the bot is added to (a Public Bot can be added anywhere): its
        members are ``members``, it has one text channel (returned), and the bot receives
        GUILD_CREATE as when it is invited."""
        owner = next(iter(members), self.alice)
        g = Guild(self.ids.next(), name, owner_id=owner.id)
        g.roles[g.id] = Role(g.id, "@everyone", EVERYONE_PERMISSIONS, position=0)
        g.members[self.bot.id] = Member(self.bot, [])
        for u in members:
            g.members[u.id] = Member(u, [])
        channel = Channel(self.ids.next(), GUILD_TEXT, "general", guild_id=g.id, position=0)
        g.channels[channel.id] = channel
        self.guilds[g.id] = g
        joined = payloads.guild_create(self, g, all_members=False)
        joined.pop("unavailable")  # a guild joined now, not one becoming available after READY
        self.dispatch("GUILD_CREATE", joined)
        self.notify()
        return channel

    def remove_bot_from(self, guild_id: int) -> None:
        """The bot left (or was removed from) a guild: GUILD_DELETE, and the guild is gone for it."""
        g = self.guilds.pop(guild_id)
        self.left_guilds.append(g)
        self.dispatch("GUILD_DELETE", {"id": str(g.id), "unavailable": False})
        self.notify()

    def add_role(self, name: str, permissions: int = 0, *, position: int | None = None) -> Role:
        g = self.guild
        r = Role(self.ids.next(), name, permissions, position=position or len(g.roles))
        g.roles[r.id] = r
        return r

    def add_user(
        self,
        name: str,
        *,
        global_name: str | None = None,
        bot: bool = False,
        roles: Iterable[str | int] = (),
        member: bool = True,
    ) -> User:
        u = User(self.ids.next(), name, global_name=global_name, bot=bot)
        self.users[u.id] = u
        if member:
            role_ids = [self.find_role(r).id for r in roles]
            self.guild.members[u.id] = Member(u, role_ids)
            self.dispatch(
                "GUILD_MEMBER_ADD",
                {**payloads.member(self.guild.members[u.id]), "guild_id": str(self.guild.id)},
            )
        self.notify()
        return u

    def add_channel(self, name: str, type: int, *, parent: Channel | None = None,
                    owner: User | None = None, channel_id: int | None = None) -> Channel:
        g = self.guild
        same_kind = [c for c in g.channels.values() if c.type == type]
        c = Channel(
            channel_id or self.ids.next(),
            type,
            name,
            guild_id=g.id,
            position=len(same_kind),
            parent_id=parent.id if parent else None,
            owner_id=(owner or self.alice).id if type == PUBLIC_THREAD else None,
        )
        g.channels[c.id] = c
        event = "THREAD_CREATE" if type == PUBLIC_THREAD else "CHANNEL_CREATE"
        self.dispatch(event, payloads.channel(c))
        return c

    def dm_channel(self, user: UserRef) -> Channel:
        u = self.find_user(user)
        for c in self.dm_channels.values():
            if c.recipients[0].id == u.id:
                return c
        c = Channel(self.ids.next(), DM, "", recipients=[u])
        self.dm_channels[c.id] = c
        return c

    # -- lookups ------------------------------------------------------------------------
    def find_user(self, ref: UserRef) -> User:
        if isinstance(ref, User):
            return ref
        for u in self.users.values():
            if u.id == ref or u.username == ref:
                return u
        raise KeyError(f"no user {ref!r}")

    def find_role(self, ref: str | int) -> Role:
        for r in self.guild.roles.values():
            if r.id == ref or r.name == ref:
                return r
        raise KeyError(f"no role {ref!r}")

    def find_channel(self, ref: ChannelRef) -> Channel:
        if isinstance(ref, Channel):
            return ref
        for g in self.guilds.values():
            for c in g.channels.values():
                if c.id == ref or c.name == ref:
                    return c
        if isinstance(ref, int) and ref in self.dm_channels:
            return self.dm_channels[ref]
        raise KeyError(f"no channel {ref!r}")

    def channel_or_none(self, channel_id: int) -> Channel | None:
        try:
            return self.find_channel(channel_id)
        except KeyError:
            return None

    def messages_in(self, channel: ChannelRef, *, include_deleted: bool = False) -> list[Message]:
        cid = self.find_channel(channel).id
        return [
            m
            for m in self.messages.values()
            if m.channel_id == cid and (include_deleted or not m.deleted)
        ]

    # -- change notification ------------------------------------------------------------
    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Re-check ``predicate`` after every change until it returns something truthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fakediscord: timed out after {timeout:.1f}s waiting for {what}")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            # Polling as well guards against predicates on state we don't track (time).
            await asyncio.wait({fut}, timeout=min(remaining, 0.25))
            fut.cancel()

    # -- attachments ----------------------------------------------------------------------
    def create_attachment(self, channel_id: int, filename: str, data: bytes,
                          content_type: str | None = None, **meta: Any) -> Attachment:
        """``meta``: description, duration_secs, waveform (see :func:`cdn.mint`)."""
        if not self.base_url:
            raise RuntimeError("start the server before creating attachments (URLs need its port)")
        a = cdn.mint(self.ids.next(), self.base_url, channel_id, filename, data, content_type, **meta)
        self.attachments[a.id] = a
        return a

    # -- messages -------------------------------------------------------------------------
    def create_message(
        self,
        channel: ChannelRef,
        author: UserRef,
        content: str = "",
        *,
        embeds: list[dict[str, Any]] | None = None,
        attachments: Iterable[Attachment] = (),
        components: list[dict[str, Any]] | None = None,
        flags: int = 0,
        reference: Message | None = None,
        mention_author: bool = True,
        tts: bool = False,
        nonce: str | int | None = None,
        webhook_id: int | None = None,
        interaction: dict[str, Any] | None = None,
        type: int | None = None,
        allowed_mentions: dict[str, Any] | None = None,
    ) -> Message:
        c = self.find_channel(channel)
        a = self.find_user(author)
        mentions, roles, everyone = self.parse_mentions(content, allowed_mentions)
        if reference is not None and mention_author and reference.author not in mentions:
            mentions.append(reference.author)
        m = Message(
            id=self.ids.next(),
            channel_id=c.id,
            guild_id=c.guild_id,
            author=a,
            revisions=[
                Revision(time.monotonic(), content, list(embeds or []), list(attachments),
                         list(components or []), flags)
            ],
            type=type if type is not None else (19 if reference is not None else 0),
            mentions=list(dict.fromkeys(mentions)),
            mention_roles=roles,
            mention_everyone=everyone,
            tts=tts,
            nonce=nonce,
            webhook_id=webhook_id,
            application_id=self.application_id if webhook_id else None,
            interaction=interaction,
        )
        if reference is not None:
            m.referenced = reference
            m.reference = {
                "type": 0,
                "message_id": str(reference.id),
                "channel_id": str(reference.channel_id),
                **({"guild_id": str(reference.guild_id)} if reference.guild_id else {}),
            }
        self.messages[m.id] = m
        if not flags & EPHEMERAL:
            self.dispatch("MESSAGE_CREATE", payloads.message(self, m, gateway=True))
        self.notify()
        return m

    def parse_mentions(self, content: str, allowed: dict[str, Any] | None) -> tuple[list[User], list[int], bool]:
        """Who a message pings, as Discord decides it: everything in the text unless the
        sender's ``allowed_mentions`` narrows it (``parse`` kinds, explicit ids)."""
        users = [int(i) for i in _USER_MENTION.findall(content) if int(i) in self.users]
        roles = [int(i) for i in _ROLE_MENTION.findall(content)]
        everyone = "@everyone" in content or "@here" in content
        if allowed is not None:
            parse = set(allowed.get("parse") or [])
            listed_users = {int(i) for i in allowed.get("users") or []}
            listed_roles = {int(i) for i in allowed.get("roles") or []}
            users = [u for u in users if "users" in parse or u in listed_users]
            roles = [r for r in roles if "roles" in parse or r in listed_roles]
            everyone = everyone and "everyone" in parse
        return [self.users[u] for u in users], roles, everyone

    def edit_message(self, m: Message, **changes: Any) -> Message:
        """Append a revision; ``changes`` keys: content, embeds, attachments, components, flags
        (and ``allowed_mentions``, which decides who the new content pings)."""
        allowed = changes.pop("allowed_mentions", None)
        if "content" in changes:
            users, m.mention_roles, m.mention_everyone = self.parse_mentions(changes["content"], allowed)
            replied = [u for u in m.mentions if m.referenced is not None and u is m.referenced.author]
            m.mentions = list(dict.fromkeys(replied + users))
        last = m.revisions[-1]
        m.revisions.append(
            Revision(
                time.monotonic(),
                changes.get("content", last.content),
                list(changes.get("embeds", last.embeds)),
                list(changes.get("attachments", last.attachments)),
                list(changes.get("components", last.components)),
                changes.get("flags", last.flags),
            )
        )
        m.edited_wall = time.time()
        if not m.flags & EPHEMERAL:
            self.dispatch("MESSAGE_UPDATE", payloads.message(self, m, gateway=True))
        self.notify()
        return m

    def delete_message(self, m: Message) -> None:
        m.deleted_at = time.monotonic()
        data = {"id": str(m.id), "channel_id": str(m.channel_id)}
        if m.guild_id:
            data["guild_id"] = str(m.guild_id)
        if not m.flags & EPHEMERAL:
            self.dispatch("MESSAGE_DELETE", data)
        self.notify()

    def react(self, m: Message, emoji: str, user: UserRef, *, add: bool = True) -> None:
        u = self.find_user(user)
        users = m.reactions.setdefault(emoji, [])
        if add == (u.id in users):
            return  # Discord answers 204 and dispatches nothing for a no-op
        data: dict[str, Any] = {
            "user_id": str(u.id),
            "channel_id": str(m.channel_id),
            "message_id": str(m.id),
            "emoji": payloads.emoji(emoji),
            "burst": False,
            "type": 0,
        }
        if m.guild_id:
            data["guild_id"] = str(m.guild_id)
        if add:
            users.append(u.id)
            data.update(message_author_id=str(m.author.id), burst_colors=[])
            if m.guild_id and u.id in self.guild.members:
                data["member"] = payloads.member(self.guild.members[u.id])
            self.dispatch("MESSAGE_REACTION_ADD", data)
        else:
            users.remove(u.id)
            if not users:
                del m.reactions[emoji]
            self.dispatch("MESSAGE_REACTION_REMOVE", data)
        self.notify()

    # -- voice states ---------------------------------------------------------------------
    def set_voice_state(
        self, user: UserRef, channel: ChannelRef | None, session_id: str, **flags: bool
    ) -> VoiceState:
        u = self.find_user(user)
        g = self.guild
        vs = VoiceState(
            u.id, g.id, self.find_channel(channel).id if channel is not None else None,
            session_id, **flags,
        )
        if vs.channel_id is None:
            g.voice_states.pop(u.id, None)
        else:
            g.voice_states[u.id] = vs
        self.dispatch("VOICE_STATE_UPDATE", payloads.voice_state(self, vs))
        self.notify()
        return vs

    # -- application commands -------------------------------------------------------------
    def upsert_command(self, guild_id: int | None, raw: dict[str, Any]) -> tuple[Command, bool]:
        ctype = int(raw.get("type", 1))
        for c in self.commands.values():
            if c.guild_id == guild_id and c.name == raw["name"] and c.type == ctype:
                c.raw, c.options = dict(raw), list(raw.get("options") or [])
                c.description, c.version = raw.get("description", ""), self.ids.next()
                self.notify()
                return c, False
        c = Command(
            self.ids.next(), self.application_id, guild_id, raw["name"], ctype,
            raw.get("description", ""), list(raw.get("options") or []), dict(raw), self.ids.next(),
        )
        self.commands[c.id] = c
        self.notify()
        return c, True

    def overwrite_commands(self, guild_id: int | None, raws: list[dict[str, Any]]) -> list[Command]:
        kept = [self.upsert_command(guild_id, raw)[0] for raw in raws]
        for c in list(self.commands.values()):
            if c.guild_id == guild_id and c not in kept:
                del self.commands[c.id]
        self.notify()
        return kept

    def commands_for(self, guild_id: int | None) -> list[Command]:
        return [c for c in self.commands.values() if c.guild_id == guild_id]

    def find_command(self, name: str, *, type: int = 1) -> Command:
        """Guild commands shadow global ones, as in the Discord client."""
        found = [c for c in self.commands.values() if c.name == name and c.type == type]
        found.sort(key=lambda c: c.guild_id is None)
        if not found:
            known = sorted(c.name for c in self.commands.values())
            raise KeyError(f"the bot registered no command {name!r} (registered: {known})")
        return found[0]

