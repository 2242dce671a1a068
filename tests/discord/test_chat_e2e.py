"""End-to-end chat: a real bot on the real model, talking through the local fake Discord."""

from __future__ import annotations

import pytest

from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord

pytestmark = [pytest.mark.slow]


async def test_mention_gets_streamed_answer(tmp_path, repo_config, backend):
    async with FakeDiscord() as server:
        config = bot_config(tmp_path, repo_config, server, model={"max_new_tokens": 60})
        async with running_bot(server, config, backend):
            asked = server.send_message(server.general, server.bob, f"<@{server.bot.id}> Tell me about the sea.")
            reply = await server.wait_for_bot_message(server.general, timeout=60)
            await server.wait_until(lambda: not reply.content.endswith("▌"), timeout=180, what="the answer")
            assert await server.wait_for_typing(server.general) <= reply.created_at
            assert reply.reference and int(reply.reference["message_id"]) == asked.id
            assert not reply.content.endswith("▌")
            assert reply.edit_count >= 2  # streamed: several visible states
            stamps = [r.at for r in reply.revisions]
            assert all(sum(1 for t in stamps if s <= t < s + 5.0) <= 5 for s in stamps)  # Discord's edit limit
            shown = [h.removesuffix(" ▌").strip() for h in reply.history]
            assert all(b.startswith(a) for a, b in zip(shown, shown[1:])), reply.history
            assert not server.rate_limits.violations  # never needed a 429 to slow down
