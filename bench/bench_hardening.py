"""A hostile burst against the real bot: 20 users x 10 mixed actions at once, plus a 1 MB `test`.

    python -m bench.bench_hardening [--users 20]

The real model, the real nextcord bot and the local fake Discord in one process (as in the
end-to-end tests). Measured: whether every message was answered or politely throttled, the
gateway heartbeat's lateness (the fake Discord asks for one every second and records when
each arrives), the event loop's lateness (a 50 ms probe), the round trip of `!hi` idle
(baseline, same run) and during the burst, and peak RSS. Results: bench/results/hardening.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from assistant.config import load_config
from bench.common import peak_rss_mb, write_results

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 1.0


class Probe:
    """Event-loop lateness and RSS, sampled every 50 ms."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self.rss: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        process = psutil.Process()
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            self.late.append(time.monotonic() - before - 0.05)
            self.rss.append(process.memory_info().rss)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def hi_round_trip(server, channel, user) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    sent = server.send_message(channel, user, "!hi")
    await server.wait_for_bot_message(channel, lambda m: m.id > sent.id and "HI!" in m.content, timeout=120)
    return time.monotonic() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else 0.0


async def bench(users: int) -> list[str]:
    from assistant.llm import create_backend
    from tests.discord.burst import fire, prepare
    from tests.discord.conftest import bot_config, running_bot
    from tests.fakediscord import FakeDiscord

    repo_config = load_config(REPO / "config.toml", environ={})
    backend = create_backend(repo_config.model, repo_config.storage.models_dir)
    rss_start = psutil.Process().memory_info().rss
    load = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with FakeDiscord(heartbeat_interval_ms=int(HEARTBEAT_S * 1000)) as server:
                config = bot_config(Path(tmp), repo_config, server, model={"max_new_tokens": 16},
                                    security={"command_rate_limit": 6, "rate_limit_messages": 2})
                async with running_bot(server, config, backend) as bot:
                    burst = await prepare(server, users)
                    quiet_user, quiet = server.add_user("bystander"), server.add_text_channel("bystander")
                    idle = [await hi_round_trip(server, quiet, quiet_user) for _ in range(3)]
                    probe = Probe()
                    probe.start()
                    beats_from = len(server.gateway.received)
                    fire(server, burst)
                    during = await hi_round_trip(server, quiet, quiet_user)
                    await server.wait_until(lambda: burst.all_handled(server), timeout=900, what="every message handled")
                    took = time.monotonic() - burst.started
                    probe.stop()
                    outcomes = burst.outcomes(server)
                    beats = [f.at for f in server.gateway.received[beats_from:] if f.op == 1]
                    gaps = [b - a for a, b in zip(beats, beats[1:])]
                    pings = [m for m in server.bot_messages() if m.mention_everyone or m.mention_roles]
                    limits = bot.services.limits
                    refused = limits.generations.refused
    finally:
        backend.close()  # type: ignore[attr-defined]
    lateness = [max(g - HEARTBEAT_S, 0.0) for g in gaps]
    total = sum(outcomes.values())
    return [
        f"Load average at start: {load:.2f} (other engineers' work shares these 2 cores). Model "
        f"{repo_config.model.name}, max_new_tokens 16; limits: chat 2, commands 6 per "
        f"{config.security.rate_limit_window_s:g} s per user, `test` {config.security.expensive_rate_limit} per "
        f"window, {config.security.max_concurrent_generations} generations at once.",
        "",
        f"Burst: {users} users, each in their own channel, at the same moment: 3 mentions, `!hi` x2, "
        "`!status @everyone`, `!stats`, a 1-item `!test`, a `correct:` reply and a 👍 reaction; one user "
        "also attaches a 1 MB `test` array (1,500 items). Plus a bystander's `!hi` during the burst.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| messages expecting an answer | {total} (+ {burst.reactions} reactions) |",
        f"| answered | {outcomes['answered']} |",
        f"| politely throttled (⏳, 'please wait', 'busy', size/count refusals) | {outcomes['throttled']} |",
        f"| left without any answer | {outcomes['pending']} |",
        f"| refused by the bot-wide generation cap | {refused} |",
        f"| messages that pinged @everyone/roles | {len(pings)} |",
        f"| time until every message was handled | {took:.1f} s |",
        f"| gateway heartbeats during the burst | {len(beats)} (asked every {HEARTBEAT_S:g} s) |",
        f"| heartbeat lateness max / p95 | {max(lateness, default=0) * 1000:.0f} / {pct(lateness, 95) * 1000:.0f} ms |",
        f"| event-loop lateness max / p95 (50 ms probe) | {max(probe.late, default=0) * 1000:.0f} / "
        f"{pct(probe.late, 95) * 1000:.0f} ms |",
        f"| bystander `!hi` idle (baseline, median of 3) | {statistics.median(idle) * 1000:.0f} ms |",
        f"| bystander `!hi` during the burst | {during * 1000:.0f} ms ({during / statistics.median(idle):.1f}x idle) |",
        f"| RSS at start (model loaded) / peak during the burst | {rss_start / 2**20:.0f} / "
        f"{max(probe.rss, default=0) / 2**20:.0f} MiB (ru_maxrss {peak_rss_mb():.0f} MiB) |",
        "",
        "Goals: every user answered or politely throttled — "
        f"{'met' if outcomes['pending'] == 0 else 'missed'}; heartbeat never late (Discord closes a session that "
        f"misses one full interval) — {'met' if max(lateness, default=0) < HEARTBEAT_S else 'missed'} "
        f"(worst {max(lateness, default=0) * 1000:.0f} ms against a {HEARTBEAT_S * 1000:.0f} ms interval; "
        "Discord's real interval is 41.25 s); memory bounded — peak "
        f"{(max(probe.rss, default=0) - rss_start) / 2**20:.0f} MiB above the loaded bot.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    lines = asyncio.run(bench(args.users))
    path = write_results("hardening", "Hardening: a hostile burst against the bot", lines)
    print(path.read_text())


if __name__ == "__main__":
    main()
