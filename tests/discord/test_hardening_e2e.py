"""What a hostile or careless Discord user can send, end to end through the fake Discord:
huge `test` payloads, @everyone in echoed text and in model output, floods of commands,
reactions and corrections. One bot for the module; each test uses its own users."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from assistant.config import Config
from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CURSOR = "▌"


@dataclass
class Env:
    server: FakeDiscord
    bot: Any
    config: Config


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, repo_config, backend) -> AsyncIterator[Env]:
    root = tmp_path_factory.mktemp("hardening")
    async with FakeDiscord() as server:
        config = bot_config(root, repo_config, server, model={"max_new_tokens": 8},
                            security={"command_rate_limit": 4, "reaction_rate_limit": 3,
                                      "rate_limit_window_s": 600.0})
        async with running_bot(server, config, backend) as bot:
            yield Env(server, bot, config)
        assert not server.server_errors


def after(env: Env, sent, channel=None):
    return lambda m: m.id > sent.id and (channel is None or m.channel_id == channel.id)


async def reply_to(env: Env, sent, *, timeout: float = 30.0):
    return await env.server.wait_for_bot_message(sent.channel_id, lambda m: m.id > sent.id, timeout=timeout)


# -- High 1: a huge `test` payload never stalls the bot -------------------------------------
async def test_a_megabyte_test_array_is_refused_while_others_are_answered(env: Env):
    server = env.server
    attacker, other = server.add_user("big-tester"), server.add_user("bystander")
    item = json.dumps({"prompt": "a" * 640, "expected": "b"})
    big = ("[" + ",".join([item] * 1500) + "]").encode()  # 1 MB
    assert len(big) > 1_000_000
    attachment = server.upload("big.json", big, "application/json")
    channel = server.add_text_channel("big-test")
    sent = server.send_message(channel, attacker, "!test", attachments=[attachment])
    hello = server.send_message(server.random, other, "!hi")
    # The other user is answered at once (a bot parsing on its event loop answers nobody
    # until the parse is over: about two minutes here with the old quadratic line numbering).
    await server.wait_for_bot_message(server.random, lambda m: m.id > hello.id and "HI!" in m.content, timeout=10)
    refusal = await reply_to(env, sent, timeout=30)
    assert "limit" in refusal.content and not refusal.attachments


async def test_a_long_typed_test_array_is_refused_by_its_item_count(env: Env):
    server = env.server
    user = server.add_user("many-items")
    channel = server.add_text_channel("many-items")
    items = ",".join(['{"prompt": "p", "expected": "e"}'] * 55)
    sent = server.send_message(channel, user, f"!test [{items}]")
    refusal = await reply_to(env, sent)
    assert "more than 50 items" in refusal.content


# -- Medium 2: nothing the bot writes pings anyone ------------------------------------------
async def test_echoed_everyone_and_user_mentions_ping_nobody(env: Env):
    server = env.server
    user = server.add_user("pinger")
    channel = server.add_text_channel("pings")
    sent = server.send_message(channel, user, "!status @everyone")
    reply = await reply_to(env, sent)
    assert "@everyone" in reply.content  # the text is shown as typed ...
    assert not reply.mention_everyone  # ... but pings nobody
    sent = server.send_message(channel, user, f"!status <@{server.alice.id}>")
    reply = await reply_to(env, sent)
    assert f"<@{server.alice.id}>" in reply.content and server.alice not in reply.mentions
    slash = server.invoke_slash("status", {"job_id": "@here"}, user=user, channel=channel)
    await server.wait_for_response(slash)
    assert slash.messages and all(not m.mention_everyone for m in slash.messages)
    assert all(not m.mention_everyone and not m.mentions for m in server.bot_messages(channel)
               if m.reference is None)


async def test_model_output_with_everyone_pings_nobody(env: Env):
    server = env.server
    user = server.add_user("echo-asker")
    channel = server.add_text_channel("echo")
    sent = server.send_message(channel, user, f"<@{server.bot.id}> Repeat exactly: @everyone @here")
    reply = await server.wait_for_bot_message(
        channel, lambda m: m.reference and int(m.reference["message_id"]) == sent.id and not m.content.endswith(CURSOR),
        timeout=60)
    assert not reply.mention_everyone and user not in reply.mentions  # a reply, without a ping
    for request in server.requests("POST /channels/{channel_id}/messages"):
        body = request.body if isinstance(request.body, dict) else {}
        if body.get("content") is not None:
            assert body.get("allowed_mentions", {}).get("parse") == [], body


async def test_test_echo_of_a_role_mention_pings_nobody(env: Env):
    server = env.server
    user = server.add_user("role-pinger")
    channel = server.add_text_channel("role-echo")
    role = server.world.guild.roles and next(iter(server.world.guild.roles.values()))
    data = json.dumps([{"prompt": f"Say <@&{role.id}> @everyone", "expected": "x"}])
    sent = server.send_message(channel, user, f"!test {data}")
    await server.wait_until(lambda: any("Score:" in m.content for m in server.bot_messages(channel)), timeout=60,
                            what="the test report")
    assert all(not m.mention_everyone and not m.mention_roles for m in server.bot_messages(channel))
    assert sent.id


# -- Medium 3: every way in is rate-limited ---------------------------------------------------
async def test_a_command_flood_is_throttled_politely_then_with_a_reaction(env: Env):
    server = env.server
    user = server.add_user("command-flooder")
    channel = server.add_text_channel("command-flood")
    sent = [server.send_message(channel, user, "!hi") for _ in range(6)]
    await server.wait_until(lambda: server.bot.id in sent[-1].reactions.get("⏳", []), timeout=30,
                            what="the last command to get ⏳")
    await server.wait_until(lambda: sum("HI!" in m.content for m in server.bot_messages(channel)) == 4, timeout=30,
                            what="four answers")
    polite = [m for m in server.bot_messages(channel) if "faster than I can answer" in m.content]
    assert len(polite) == 1 and int(polite[0].reference["message_id"]) == sent[4].id
    slash = server.invoke_slash("hi", user=user, channel=channel)
    await server.wait_for_response(slash)
    assert slash.callbacks[0].data.get("flags", 0) & 64  # ephemeral: only the flooder sees it
    assert "faster than I can answer" in slash.callbacks[0].data["content"]


async def test_test_counts_as_expensive(env: Env):
    server = env.server
    user = server.add_user("tester")
    channel = server.add_text_channel("expensive")
    data = json.dumps([{"prompt": "What is 2+2?", "expected": "4"}])
    for _ in range(2):
        sent = server.send_message(channel, user, f"!test {data}")
        await server.wait_for_bot_message(channel, lambda m: m.id > sent.id and "Score:" in m.content, timeout=60)
    third = server.send_message(channel, user, f"!test {data}")
    refusal = await reply_to(env, third)
    assert "runs many generations" in refusal.content


async def test_correction_replies_and_reactions_are_limited(env: Env):
    server = env.server
    user = server.add_user("feedback-flooder")
    channel = server.add_text_channel("feedback-flood")
    answers = []
    for n in range(5):
        asked = server.send_message(channel, user, f"<@{server.bot.id}> Say {n}.")
        answers.append(await server.wait_for_bot_message(
            channel, lambda m: m.reference and int(m.reference["message_id"]) == asked.id
            and not m.content.endswith(CURSOR), timeout=60))
    store = env.bot.services.store
    for answer in answers:
        server.add_reaction(answer, "👍", user)
    fixes = [server.send_message(channel, user, f"correct: fix {n}", reference=answers[n]) for n in range(5)]
    polite = await server.wait_for_bot_message(channel, lambda m: m.reference and int(m.reference["message_id"])
                                               == fixes[-1].id, timeout=30)
    assert "corrections faster than I can answer" in polite.content
    await server.wait_until(lambda: sum("saved" in m.content for m in server.bot_messages(channel)) == 4,
                            timeout=30, what="four corrections saved")
    saved = [c.correction for c in store.corrections() if c.correction.startswith("fix ")]
    # command_rate_limit = 4: four of the five are saved; which four depends on the order the
    # concurrent replies are handled in.
    assert len(saved) == 4 and set(saved) <= {f"fix {n}" for n in range(5)} and len(set(saved)) == 4
    rated = {r.reply for r in store.labelled_replies()} & {a.content for a in answers}
    assert len(rated) <= 3  # reaction_rate_limit = 3; the rest were ignored


async def test_generation_slots_are_bounded_bot_wide(env: Env):
    server = env.server
    gate = env.bot.services.limits.generations
    channel = server.add_text_channel("busy")
    users = [server.add_user(f"busy{i}") for i in range(3)]
    gate.limit = 1
    try:
        sent = [server.send_message(channel, u, f"<@{server.bot.id}> Hello number {i}.") for i, u in enumerate(users)]
        await server.wait_until(lambda: len({m.id for m in server.bot_messages(channel)}) >= 3
                                and all(not m.content.endswith(CURSOR) for m in server.bot_messages(channel)),
                                timeout=60, what="three replies")
    finally:
        gate.limit = env.config.security.max_concurrent_generations
    busy = [m for m in server.bot_messages(channel) if "answering a lot of people" in m.content]
    assert len(busy) == 2 and sent
    await server.wait_until(lambda: gate.held == 0, timeout=30, what="the slot to be given back")


# -- Low ---------------------------------------------------------------------------------------
async def test_getfile_autocomplete_lists_exports_to_admins_only(env: Env):
    server = env.server
    exports = env.config.storage.exports_dir
    exports.mkdir(parents=True, exist_ok=True)
    (exports / "private-report.txt").write_text("for admins", encoding="utf-8")
    asked = server.invoke_autocomplete("getfile", {"name": "priv"}, "name", user=server.bob)
    assert await server.wait_for_choices(asked) == []
    asked = server.invoke_autocomplete("getfile", {"name": "priv"}, "name", user=server.alice)
    assert [c["value"] for c in await server.wait_for_choices(asked)] == ["private-report.txt"]
