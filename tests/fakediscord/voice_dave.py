"""DAVE (protocol version 1) on the fake voice gateway: the gateway is the MLS external sender.

`DaveCall` runs one channel's group (`tests.davesim.group.DaveGroup`) between the bot, which
talks over its voice websocket (binary ops 25/27/29/30 out with a 2-byte sequence number,
ops 26/28 in; JSON ops 22 out and 23 in), and simulated members (`SimMember`, real
`dave.Session`s) that live in this process. Simulated members DAVE-encrypt what they say
and decrypt what the bot says, so captures hold plain Opus.

Enable it with ``server.voice.dave_protocol_version = 1`` before the bot joins, then
``await server.join_dave(user)`` for each simulated person in the call (after ``join_voice``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from tests.davesim.group import DaveGroup, Outgoing
from tests.davesim.member import OP_COMMIT_WELCOME, SimMember
from tests.davesim.network import deliver

log = logging.getLogger("fakediscord")

OP_KEY_PACKAGE = 26


class DaveCall:
    def __init__(self, channel_id: int, bot_id: int, send_to_bot: Callable[[Outgoing], Awaitable[None]]) -> None:
        self.channel_id, self.bot_id = channel_id, bot_id
        self.group = DaveGroup(channel_id)
        self.members: dict[int, SimMember] = {}
        self.send_to_bot = send_to_bot
        self.log: list[Outgoing] = []
        self.bot_frames_failed = 0
        self._lock = asyncio.Lock()

    # -- the bot, over its websocket ------------------------------------------------------
    async def from_bot(self, op: int, payload: bytes) -> None:
        """A binary message from the bot (op byte already split off)."""
        if op == OP_KEY_PACKAGE:
            await self._pump(self.group.join(self.bot_id) + self.group.key_package(self.bot_id, payload))
        elif op == OP_COMMIT_WELCOME:
            await self._pump(self.group.commit_welcome(self.bot_id, payload))
        else:
            log.warning("fakediscord: unexpected DAVE binary op %s from the bot", op)

    async def bot_ready(self, transition_id: int) -> None:
        await self._pump(self.group.transition_ready(self.bot_id, transition_id))

    # -- simulated people -----------------------------------------------------------------
    async def add_member(self, user_id: int, ssrc: int) -> SimMember:
        member = SimMember(user_id, self.channel_id, ssrc)
        member.recognise(self.bot_id, *self.members)
        for other in self.members.values():
            other.recognise(user_id)
        self.members[user_id] = member
        _, key_package = member.start()
        await self._pump(self.group.join(user_id) + self.group.key_package(user_id, key_package))
        return member

    async def remove_member(self, user_id: int) -> None:
        self.members.pop(user_id, None)
        await self._pump(self.group.leave(user_id))

    def decrypt_from_bot(self, frame: bytes) -> bytes | None:
        """The bot's DAVE frame as any member of the group hears it."""
        for member in self.members.values():
            if member.can_encrypt:
                plain = member.decrypt(self.bot_id, frame)
                if plain is None:
                    self.bot_frames_failed += 1
                return plain
        return None

    async def _pump(self, messages: list[Outgoing]) -> None:
        async with self._lock:  # one round at a time: the group's state is sequential
            queue = deque(messages)
            while queue:
                message = queue.popleft()
                self.log.append(message)
                if message.user_id == self.bot_id:
                    await self.send_to_bot(message)
                    continue
                member = self.members.get(message.user_id)
                if member is not None:
                    queue.extend(deliver(self.group, member, message))
