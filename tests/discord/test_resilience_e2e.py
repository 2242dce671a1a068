"""The bot under stress: a dropped gateway, a REST 429, a burst of 200 messages, and SIGKILL
right after acknowledging a correction (the bot runs as `python -m assistant run` there)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from assistant.store import Store
from tests.discord.conftest import bot_config, running_bot
from tests.fakediscord import FakeDiscord

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
CURSOR = "▌"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, repo_config, backend):
    root = tmp_path_factory.mktemp("stress")
    async with FakeDiscord() as server:
        config = bot_config(root, repo_config, server, model={"max_new_tokens": 4},
                            discord={"history_messages": 2},
                            security={"rate_limit_messages": 3, "rate_limit_window_s": 600.0})
        async with running_bot(server, config, backend) as bot:
            yield server, bot


def finished(message) -> bool:
    return not message.content.endswith(CURSOR)


async def answer_to(server: FakeDiscord, asked, timeout: float = 60.0):
    reply = await server.wait_for_bot_message(
        asked.channel_id, lambda m: m.reference and int(m.reference["message_id"]) == asked.id and finished(m),
        timeout=timeout)
    return reply


async def test_gateway_drop_mid_conversation_resumes(env):
    server, _ = env
    user = server.add_user("gateway-user")
    first = server.send_message(server.general, user, f"<@{server.bot.id}> Tell me a story about a cat.")
    await server.wait_for_bot_message(server.general, lambda m: int(m.reference["message_id"]) == first.id
                                      if m.reference else False, timeout=60)
    assert server.drop_gateway(4000) >= 1
    await server.wait_for_resume(timeout=30)
    await answer_to(server, first)
    second = server.send_message(server.general, user, f"<@{server.bot.id}> And a dog?")
    assert (await answer_to(server, second)).content


async def test_rest_429_is_waited_out(env):
    server, _ = env
    user = server.add_user("ratelimited-user")
    injection = server.inject_429("POST /channels/{channel_id}/messages", count=1, retry_after=0.5)
    asked = server.send_message(server.random, user, f"<@{server.bot.id}> Hello there!")
    reply = await answer_to(server, asked)
    assert injection.hits and injection.remaining == 0
    assert reply.content


async def test_burst_of_200_mixed_messages_from_20_users(env):
    """20 users at once: mentions, commands (one with @everyone), `test`, `correct:` replies,
    reactions and a 1 MB `test` array: every message answered or politely throttled, nobody
    pinged, memory bounded. Figures (heartbeat, RSS, latency): bench/bench_hardening.py."""
    from tests.discord.burst import fire, prepare

    server, bot = env
    process = psutil.Process()
    rss_before = process.memory_info().rss
    burst = await prepare(server, 20)
    fire(server, burst)
    await server.wait_until(lambda: burst.all_handled(server), timeout=600, what="every burst message handled")
    outcomes = burst.outcomes(server)
    assert outcomes["pending"] == 0 and outcomes["answered"] and outcomes["throttled"], outcomes
    assert len(burst.sent) == 180 and burst.reactions == 20
    mentions = [m for m in burst.sent if m.content.startswith("<@")]
    per_user = {u.id: sum(1 for m in mentions if m.author.id == u.id and burst.outcome(server, m) == "answered")
                for u in burst.users}
    assert all(n <= 3 for n in per_user.values()), per_user  # security.rate_limit_messages = 3
    assert not [m for m in server.bot_messages() if m.mention_everyone or m.mention_roles]
    assert len(bot.services.limiter._hits) <= bot.services.limiter.max_users
    await server.wait_until(lambda: bot.services.limits.generations.held == 0, timeout=60,
                            what="every generation slot given back")
    assert process.memory_info().rss - rss_before < 400 * 1024 * 1024


async def test_sigkill_after_acknowledged_correction_keeps_it(tmp_path, repo_config):
    async with FakeDiscord() as server:
        config = bot_config(tmp_path, repo_config, server, model={"max_new_tokens": 12})
        env = {**os.environ, **server.client_env(), "DISCORD_TOKEN": "fakediscord-token",
               "PYTHONPATH": str(REPO)}
        log = (tmp_path / "bot.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "assistant", "--config", str(config.source), "run"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            await server.wait_for_commands("correct", timeout=120)
            asked = server.send_message(server.general, server.bob, f"<@{server.bot.id}> What is the capital of Italy?")
            reply = await answer_to(server, asked, timeout=120)
            fix = server.send_message(server.general, server.bob, "correct: The capital of Italy is Rome.",
                                      reference=reply)
            await server.wait_for_bot_message(server.general, lambda m: "saved" in m.content, after=fix, timeout=60)
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    with Store.open(config.storage.database) as store:
        rows = store.corrections()
    assert [r.correction for r in rows] == ["The capital of Italy is Rome."]
    assert rows[0].original_reply == reply.content and rows[0].prompt.endswith("capital of Italy?")


async def test_sigterm_stops_the_bot_cleanly(tmp_path, repo_config):
    async with FakeDiscord() as server:
        config = bot_config(tmp_path, repo_config, server)
        env = {**os.environ, **server.client_env(), "DISCORD_TOKEN": "fakediscord-token"}
        proc = subprocess.Popen([sys.executable, "-m", "assistant", "--config", str(config.source), "run"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            await server.wait_for_commands("hi", timeout=120)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0, proc.stdout.read().decode() if proc.stdout else ""


async def test_bad_token_is_one_friendly_error(tmp_path, repo_config):
    async with FakeDiscord(token="the-right-token") as server:
        config = bot_config(tmp_path, repo_config, server)
        env = {**os.environ, **server.client_env(), "DISCORD_TOKEN": "a-wrong-token"}
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "assistant", "--config",
                                                        str(config.source), "run"],
                                       cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2
    assert "refused the token in DISCORD_TOKEN" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
