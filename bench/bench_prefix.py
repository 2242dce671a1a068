"""Prefix reuse: time to first token of each turn of a growing conversation, with and without it.

    .venv/bin/python -m bench.bench_prefix            # writes bench/results/prefix.md

The same 20-turn spoken-style conversation (the voice benchmark's questions, "Alice says: ...",
32-token answers, greedy) is run twice on the default model in this process: once with the
engine's prefix cache off (every turn prefills the whole history) and once with it on (each
turn prefills only what is new). Both engines are loaded up front; runs alternate per turn so
machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import time
from pathlib import Path

from assistant.config import load_config
from assistant.conversation import Conversation
from assistant.llm import default_options
from assistant.llm.engine import TransformersEngine
from assistant.llm.loader import load_causal_lm
from bench.bench_voice import QUESTIONS
from bench.common import write_results

REPO = Path(__file__).resolve().parents[1]
TURNS = 20


async def bench() -> list[str]:
    config = load_config(REPO / "config.toml", environ={})
    model = dataclasses.replace(config.model, max_new_tokens=32)

    def load() -> object:
        return load_causal_lm(model.name, config.storage.models_dir, device=model.device, dtype=model.dtype,
                              threads=model.threads)

    engines = {"off": TransformersEngine(load, prefix_cache_mb=0),  # type: ignore[arg-type]
               "on": TransformersEngine(load, prefix_cache_mb=model.prefix_cache_mb)}  # type: ignore[arg-type]
    talks = {label: Conversation(engine, system_prompt=model.system_prompt, context_tokens=model.context_tokens,
                                 reply_tokens=model.max_new_tokens) for label, engine in engines.items()}
    rows: list[tuple[int, int, dict[str, float], int]] = []
    try:
        for n in range(TURNS):
            question = f"Alice says: {QUESTIONS[n % len(QUESTIONS)]}"
            ttft: dict[str, float] = {}
            for label, talk in talks.items():
                started = time.perf_counter()
                first = None
                async for _ in talk.reply(question, default_options(model)):
                    first = first or time.perf_counter()
                ttft[label] = (first or time.perf_counter()) - started
            stats = engines["on"].stats[-1]
            rows.append((n + 1, stats.prompt_tokens, ttft, stats.cached_tokens))
            print(f"turn {n + 1}: {stats.prompt_tokens} prompt tokens, off {ttft['off'] * 1000:.0f} ms, "
                  f"on {ttft['on'] * 1000:.0f} ms", flush=True)
        engine = engines["on"]
    finally:
        for e in engines.values():
            e.close()
    lines = [f"Load average at start: {os.getloadavg()[0]:.2f}. Model: {model.name}, {engine.dtype} on "
             f"{engine.device}; system prompt + {TURNS} turns of ~3 s spoken questions, 32-token answers.", "",
             "| turn | prompt tokens | reused from the cache | first token, cache off (ms) | cache on (ms) |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {prompt} | {cached} | {t['off'] * 1000:.0f} | {t['on'] * 1000:.0f} |"
              for n, prompt, t, cached in rows]
    late = rows[len(rows) // 2:]
    off = statistics.median(t["off"] for _, _, t, _ in late)
    on = statistics.median(t["on"] for _, _, t, _ in late)
    lines += ["", f"Second half of the conversation (turns {late[0][0]}–{late[-1][0]}): median time to first "
              f"token {off * 1000:.0f} ms without prefix reuse, {on * 1000:.0f} ms with it ({off / on:.1f}x).",
              f"Cache hits {engine.prefix_cache.hits}, misses {engine.prefix_cache.misses}, "
              f"{engine.prefix_cache.bytes / 2**20:.1f} MiB held at the end."]
    return lines


def main() -> None:
    started = time.perf_counter()
    lines = asyncio.run(bench())
    lines.append(f"\nBenchmark wall time: {time.perf_counter() - started:.0f} s.")
    path = write_results("prefix", "Prefix reuse benchmark", lines)
    print(path.read_text())


if __name__ == "__main__":
    main()
