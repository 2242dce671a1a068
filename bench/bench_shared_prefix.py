"""A busy server's first tokens: conversations that share a long system prompt, more of them than sequences.

    .venv/bin/python -m bench.bench_shared_prefix      # writes bench/results/shared_prefix.md

Why: every conversation of a server opens with the same system prompt (a persona of a few hundred
tokens is common). Six regulars with long histories take turns on an engine with four sequences,
and a newcomer says hello every third request, so sequences are evicted all the time. Each request
is timed to its first token; the llama.cpp engine runs once with prefix reuse off (every prompt
prefilled whole) and once with it on (the default: a sequence keeps what it shares with the prompt,
or copies a longer shared prefix from another sequence). Both engines are loaded up front and the
runs alternate request by request, so the host's noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from pathlib import Path

from assistant.llm.base import GenerationOptions, Message
from assistant.llm.catalog import gguf_path
from assistant.llm.llamacpp_engine import LlamaCppEngine
from bench.common import write_results

SYSTEM = (
    "You are Nova, the friendly assistant of the Riverside Book Club's Discord server. Members meet every "
    "Thursday at 7 pm in the library's reading room and online in the voice channel. Answer briefly and warmly, "
    "in one or two sentences, as if speaking aloud. Never use lists, tables or markdown. If someone asks about "
    "the current book, say it is 'The Left Hand of Darkness' by Ursula K. Le Guin, chapters 5 to 8 this week. "
    "If someone asks about snacks, remind them that it is Priya's turn to bring them. Be kind to newcomers, "
    "welcome them by name, and tell them that they can borrow the book from the club's shelf. Do not invent "
    "dates or facts you were not told; say you are not sure instead. Keep spoilers out of the general channel; "
    "the spoiler channel is for discussing the ending.")
HISTORY = [("What did you think of the first chapters?", "I loved how it opens with the parade and the arch."),
           ("Who is Genly Ai?", "The envoy of the Ekumen, sent alone to Gethen to invite its nations in."),
           ("And Estraven?", "The prime minister of Karhide at the start; Genly misreads his honesty."),
           ("Why is the planet called Winter?", "It is locked in an ice age, and the cold shapes every custom.")]
REGULARS = ["Ann", "Ben", "Cal", "Dee", "Eve", "Fin"]
ONE = GenerationOptions(max_new_tokens=1)


def regular(name: str, turn: int) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": SYSTEM}]
    for question, answer in HISTORY * 2:
        messages += [{"role": "user", "content": f"{name}: {question}"}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": f"{name}: And what about chapter {turn}?"}]


def newcomer(turn: int) -> list[Message]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Guest{turn}: Hi, I'm new here. When do you meet?"}]


async def bench(model: str, models_dir: Path, requests: int) -> list[str]:
    path = gguf_path(model, models_dir)
    assert path is not None, f"{model} has no GGUF here: run `assistant models fetch`"
    engines = {label: LlamaCppEngine(path, max_batch_size=4, prefix_reuse=label == "on") for label in ("off", "on")}
    times: dict[tuple[str, str], list[float]] = {}
    cached: dict[tuple[str, str], list[int]] = {}
    system_tokens = engines["on"].count_tokens([{"role": "system", "content": SYSTEM}])
    prompt_tokens = engines["on"].count_tokens(regular(REGULARS[0], 10))
    try:
        for turn in range(requests):
            kind = "newcomer" if turn % 3 == 2 else "regular"
            messages = newcomer(turn) if kind == "newcomer" else regular(REGULARS[turn % len(REGULARS)], turn)
            for label, engine in engines.items():
                await engine.complete(messages, ONE)
                stats = engine.stats[-1]
                if turn >= 6:  # the first requests fill the empty sequences in both engines
                    times.setdefault((kind, label), []).append(stats.first_token_s * 1000)
                    cached.setdefault((kind, label), []).append(stats.cached_tokens)
    finally:
        for engine in engines.values():
            engine.close()
    lines = [f"Model: {model} (llama.cpp, the served weights), 4 sequences, {os.cpu_count()} threads; system prompt "
             f"{system_tokens} tokens; a regular's prompt {prompt_tokens} tokens (8 earlier "
             f"turns). {requests} requests, the first 6 not counted; medians.", "",
             "| request | prefix reuse | first token (ms) | prompt tokens reused |", "|---|---|---|---|"]
    for kind in ("regular", "newcomer"):
        for label in ("off", "on"):
            lines.append(f"| {kind} | {label} | {statistics.median(times[kind, label]):.0f} | "
                         f"{statistics.median(cached[kind, label]):.0f} |")
    off = statistics.median(times["newcomer", "off"])
    lines += ["", f"A newcomer's first token with reuse on: {statistics.median(times['newcomer', 'on']) / off:.2f}x "
                  "the time with it off."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--models-dir", type=Path, default=Path("models").resolve())
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()
    lines = asyncio.run(bench(args.model, args.models_dir, args.requests))
    print(write_results("shared_prefix", "Shared system prompt benchmark", lines).read_text())


if __name__ == "__main__":
    main()
