"""`security.allowed_guild_ids` end to end: a Public Bot added to a server the operator did not
choose leaves it, and takes DMs only from members of an allowed server. Its own module: it
needs its own fake Discord (nextcord's REST base is process-wide)."""

from __future__ import annotations

import pytest

from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord

pytestmark = [pytest.mark.slow]


async def test_the_bot_leaves_servers_it_was_not_allowed_in_and_ignores_their_dms(tmp_path, repo_config, backend):
    async with FakeDiscord() as server:
        outsider = server.world.add_user("outsider", member=False)
        other = server.add_guild("Somebody else's server", members=[outsider])
        config = bot_config(tmp_path, repo_config, server,
                            security={"allowed_guild_ids": [server.world.guild.id]})
        async with running_bot(server, config, backend) as bot:
            await server.wait_until(lambda: other.guild_id in server.left_guilds, timeout=30,
                                    what="the bot to leave the other server")
            later = server.add_guild("Invited later", members=[outsider])
            await server.wait_until(lambda: later.guild_id in server.left_guilds, timeout=30,
                                    what="the bot to leave the server it was invited to")
            dm = server.send_message(server.dm_channel(outsider), outsider, "!hi")
            member_dm = server.send_message(server.dm_channel(server.bob), server.bob, "!hi")
            await server.wait_for_bot_message(server.dm_channel(server.bob), lambda m: m.id > member_dm.id, timeout=30)
            here = server.send_message(server.general, server.bob, "!hi")
            await server.wait_for_bot_message(server.general, lambda m: m.id > here.id, timeout=30)
            assert not [m for m in server.bot_messages(server.dm_channel(outsider)) if m.id > dm.id]
            assert bot.guild_gate.known_member(outsider.id) is False
