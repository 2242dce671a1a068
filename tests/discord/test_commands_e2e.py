"""Every text/slash command end to end through the fake Discord, with one bot for the module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from assistant.config import Config
from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Env:
    server: FakeDiscord
    bot: Any
    config: Config


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, repo_config, backend) -> AsyncIterator[Env]:
    root = tmp_path_factory.mktemp("bot")
    async with FakeDiscord() as server:
        config = bot_config(root, repo_config, server)
        async with running_bot(server, config, backend) as bot:
            yield Env(server, bot, config)


async def command(env: Env, text: str, user=None, channel=None, *, reference=None, timeout: float = 30.0):
    """Send `text` as `user` and return the bot's first message after it."""
    server = env.server
    sent = server.send_message(channel or server.general, user or server.alice, text, reference=reference)
    return await server.wait_for_bot_message(channel or server.general, after=sent, timeout=timeout)


async def ask(env: Env, question: str, user=None):
    """Mention the bot; return its settled reply."""
    server = env.server
    reply = await command(env, f"<@{server.bot.id}> {question}", user, timeout=60)
    await server.wait_until(lambda: not reply.content.endswith("▌"), timeout=60, what="the answer to finish")
    return reply


async def test_hi_prefix_and_slash(env: Env):
    assert "HI!" in (await command(env, "!hi")).content
    rec = env.server.invoke_slash("hi")
    await env.server.wait_for_response(rec)
    assert any("HI!" in m.content for m in rec.messages)


async def test_slash_commands_registered_with_descriptions(env: Env):
    names = ["hi", "join", "leave", "instruction", "train", "cancel", "status", "test", "archive",
             "select_dataset", "correct", "feedback", "getfile", "adapter", "stats"]
    registered = await env.server.wait_for_commands(*names)
    assert all(c.description and c.description != "No description provided" for c in registered)


async def test_instruction_is_split_into_messages_that_fit(env: Env):
    sent = env.server.send_message(env.server.general, env.server.bob, "!instruction")
    first = await env.server.wait_for_bot_message(env.server.general, after=sent)
    await env.server.wait_until(lambda: "stats" in "".join(
        m.content for m in env.server.bot_messages(env.server.general) if m.id >= first.id), what="the whole guide")
    pieces = [m for m in env.server.bot_messages(env.server.general) if m.id >= first.id]
    assert all(len(m.content) <= 2000 for m in pieces)
    assert "correct:" in "".join(m.content for m in pieces) and "{prefix}" not in first.content


@pytest.mark.parametrize("text", ["!getfile notes.txt", "!train", "!archive data", "!select_dataset data",
                                  "!adapter activate x", "!cancel", "!adapter rollback"])
async def test_admin_commands_refused_for_others(env: Env, text: str):
    reply = await command(env, text, env.server.bob)
    assert "Only the bot's admins" in reply.content


async def test_getfile_sends_exports_and_refuses_traversal(env: Env):
    exports = env.config.storage.exports_dir
    exports.mkdir(parents=True, exist_ok=True)
    (exports / "notes.txt").write_text("exported\n", encoding="utf-8")
    (exports.parent / "secret.txt").write_text("secret", encoding="utf-8")
    (exports / "link.txt").symlink_to(exports.parent / "secret.txt")
    ok = await command(env, "!getfile notes.txt")
    assert ok.attachments and ok.attachments[0].data == b"exported\n"
    for bad in ["../secret.txt", "/etc/passwd", "link.txt", "..／secret.txt", "C:\\secret.txt", "notes.txt\u202e"]:
        reply = await command(env, f"!getfile {bad}")
        assert not reply.attachments, bad
        assert "secret" not in reply.content or "secret.txt" in bad, bad
    listing = await command(env, "!getfile")
    assert "notes.txt" in listing.content and "link.txt" not in listing.content


async def test_correction_by_id_and_by_reply_is_stored_and_exported(env: Env):
    from finetune.datasets_store import export_feedback

    answer = await ask(env, "What is the capital of France?", env.server.bob)
    ack = await command(env, f"!correct {answer.id} The capital of France is Paris.", env.server.bob)
    assert "saved" in ack.content and "waits for an admin's review" in ack.content
    ack2 = await command(env, "correct: Paris is the capital of France.", env.server.bob, reference=answer)
    assert "saved" in ack2.content
    again = await command(env, "correct: Paris is the capital of France.", env.server.bob, reference=answer)
    assert "counts once" in again.content
    bad = await command(env, "!correct 12345 nothing")
    assert "can't find" in bad.content
    store = env.bot.services.store
    rows = [c for c in store.corrections() if c.prompt.endswith("What is the capital of France?")]
    assert [c.correction for c in rows] == ["The capital of France is Paris.", "Paris is the capital of France."]
    assert rows[0].original_reply == answer.content and {c.status for c in rows} == {"pending"}
    assert "Only the bot's admins" in (await command(env, f"!review user {env.server.bob.id}", env.server.bob)).content
    approved = await command(env, f"!review user {env.server.bob.id}")
    assert "Approved" in approved.content
    assert {c.status for c in store.corrections() if c.prompt.endswith("What is the capital of France?")} == {"approved"}
    made = export_feedback(env.bot.services.datasets, "from-discord")
    assert {d.name for d in made} == {"from-discord", "from-discord-pairs"}


async def test_feedback_and_reactions_are_stored(env: Env):
    ack = await command(env, "!feedback answers could be shorter", env.server.bob)
    assert "Thank you" in ack.content
    assert env.bot.services.store.feedback()[-1].text == "answers could be shorter"
    answer = await ask(env, "Say something nice.", env.server.bob)
    env.server.add_reaction(answer, "👍", env.server.bob)
    await env.server.wait_until(lambda: any(r.reply == answer.content for r in env.bot.services.store.labelled_replies()),
                                what="the reaction to be stored")
    await env.server.wait_until(lambda: env.server.bot.id in answer.reactions.get("👀", []),
                                what="the bot to acknowledge the vote")
    assert [i.status for i in env.bot.services.store.review_items() if i.reply == answer.content] == ["pending"]


async def test_test_command_reports_json_errors_and_scores(env: Env):
    bad = await command(env, '!test [{"prompt": "hi", "expected": }]')
    assert "line 1 column" in bad.content
    good = await command(env, '!test [{"prompt": "What is 2+2?", "expected": "4"}]', timeout=60)
    await env.server.wait_until(lambda: "Score:" in "".join(
        m.content for m in env.server.bot_messages(env.server.general) if m.id >= good.id), timeout=60, what="score")


async def test_datasets_select_archive_and_autocomplete(env: Env):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    env.bot.services.datasets.add_bytes("\n".join(json.dumps(r) for r in rows).encode(), name="greetings",
                                        source="test")
    rec = env.server.invoke_autocomplete("select_dataset", {"name": "gre"}, "name")
    choices = await env.server.wait_for_choices(rec)
    assert [c["value"] for c in choices] == ["greetings"]
    assert "greetings" in (await command(env, "!select_dataset greetings")).content
    bad = await command(env, "!select_dataset ../etc")
    assert "Invalid dataset name" in bad.content
    assert "archived" in (await command(env, "!archive greetings")).content
    assert not (env.config.storage.datasets_dir / "greetings").exists()


async def test_stats_and_unknown_adapter(env: Env):
    stats = await command(env, "!stats")
    assert "p50" in stats.content
    assert "No adapter" in (await command(env, "!adapter activate nothere")).content
    assert "Adapters:" in (await command(env, "!adapter")).content


async def test_bot_ignores_bots_and_unaddressed_messages(env: Env):
    other = env.server.add_user("otherbot", bot=True)
    env.server.send_message(env.server.random, other, f"<@{env.server.bot.id}> hello")
    env.server.send_message(env.server.random, env.server.bob, "just chatting")
    marker = env.server.send_message(env.server.random, env.server.bob, f"<@{env.server.bot.id}> hello")
    reply = await env.server.wait_for_bot_message(env.server.random, timeout=60)
    assert int(reply.reference["message_id"]) == marker.id
    await env.server.wait_until(lambda: not reply.content.endswith("▌"), timeout=60, what="the answer to finish")
