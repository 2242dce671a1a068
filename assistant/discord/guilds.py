"""Which servers the bot serves (`security.allowed_guild_ids`) and who may DM it.

Why at the event dispatch rather than in each cog: a Public Bot can be added to any server,
and everything that arrives from one the operator did not choose (messages, commands,
reactions, interactions) must be dropped before any cog sees it, including cogs added later.
DMs pass only from members of an allowed server when the list is set; membership is looked
up once (REST, since the bot has no member list without the privileged intent) and cached.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import nextcord

logger = logging.getLogger(__name__)

MEMBER_CACHE_S = 600.0  # how long a DM sender's membership answer is trusted
MEMBER_CACHE_USERS = 4096


def event_origin(event: str, args: tuple[Any, ...]) -> tuple[bool, int | None, int | None] | None:
    """(is DM, guild id, user id) for the events a user can cause, None for every other event."""
    if not args:
        return None
    first = args[0]
    if event == "message" and isinstance(first, nextcord.Message):
        return first.guild is None, first.guild.id if first.guild else None, first.author.id
    if event in ("raw_reaction_add", "raw_reaction_remove") and isinstance(first, nextcord.RawReactionActionEvent):
        return first.guild_id is None, first.guild_id, first.user_id
    if event == "interaction" and isinstance(first, nextcord.Interaction):
        user = first.user
        return first.guild_id is None, first.guild_id, user.id if user is not None else None
    return None


class GuildGate:
    """Allowed guilds, and a bounded cache of "is this DM sender a member of one?"."""

    def __init__(self, allowed_guild_ids: list[int]) -> None:
        self.allowed = frozenset(allowed_guild_ids)
        self._members: OrderedDict[int, tuple[float, bool]] = OrderedDict()

    def allows_guild(self, guild_id: int) -> bool:
        return not self.allowed or guild_id in self.allowed

    def known_member(self, user_id: int) -> bool | None:
        """The cached answer for a DM sender, or None when it must be looked up."""
        if not self.allowed:
            return True
        hit = self._members.get(user_id)
        if hit is None or time.monotonic() - hit[0] > MEMBER_CACHE_S:
            return None
        return hit[1]

    async def is_member(self, client: nextcord.Client, user_id: int) -> bool:
        """Whether `user_id` belongs to one of the allowed guilds (asked of Discord, then cached)."""
        known = self.known_member(user_id)
        if known is not None:
            return known
        found = False
        for guild_id in self.allowed:
            guild = client.get_guild(guild_id)
            if guild is None:
                continue
            if guild.get_member(user_id) is not None:
                found = True
                break
            try:
                await guild.fetch_member(user_id)
                found = True
                break
            except nextcord.HTTPException:
                continue
        self._members[user_id] = (time.monotonic(), found)
        self._members.move_to_end(user_id)
        while len(self._members) > MEMBER_CACHE_USERS:
            self._members.popitem(last=False)
        return found

    async def leave_if_not_allowed(self, guild: nextcord.Guild) -> bool:
        """Leave `guild` unless it is allowed; True when the bot left."""
        if self.allows_guild(guild.id):
            return False
        logger.warning("Leaving server %s (%s): not in security.allowed_guild_ids", guild.name, guild.id)
        try:
            await guild.leave()
        except nextcord.HTTPException as exc:
            logger.warning("Could not leave server %s: %s", guild.id, exc)
        return True
