"""Answer-quality evaluation of the candidate default models, with and without the repetition guard.

    .venv/bin/python bench/bench_quality.py [--models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct]

Writes bench/results/quality.md: per model and guard setting, items answered correctly (facts,
earlier turns of the conversation, short instructions, open prompts), answers that repeat a
sentence, median words per answer, batch-1 decode tok/s and time to first token. Greedy
decoding through the llama.cpp engine (the default on a CPU), the shipped system prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.config import parse_config  # noqa: E402
from assistant.conversation import Conversation  # noqa: E402
from assistant.llm import default_options  # noqa: E402
from assistant.llm.catalog import gguf_path  # noqa: E402
from assistant.llm.llamacpp_engine import LlamaCppEngine  # noqa: E402
from bench.common import write_results  # noqa: E402
from bench.quality_items import ITEMS, repeated_sentences, words  # noqa: E402

GUARDS = {"off": dict(repetition_penalty=1.0, no_repeat_ngram=0),
          "penalty 1.1": dict(repetition_penalty=1.1, no_repeat_ngram=0),
          "no repeated 8-gram": dict(repetition_penalty=1.0, no_repeat_ngram=8),
          "penalty 1.1 + 8-gram": dict(repetition_penalty=1.1, no_repeat_ngram=8)}


async def evaluate(engine: LlamaCppEngine, guard: dict[str, float], system: str, max_tokens: int,
                   transcript: list[str]) -> dict[str, object]:
    """All items at once (each conversation's turns in order): the engine batches them, and
    greedy answers do not depend on batching (tests/test_llamacpp.py), so only time is saved."""
    model = parse_config({}).model
    options = dataclasses.replace(default_options(model, spoken=True, max_new_tokens=max_tokens), **guard)

    async def one(turns: tuple[str, ...]) -> str:
        talk = Conversation(engine, system_prompt=system, reply_tokens=max_tokens)
        answer = ""
        for turn in turns:
            answer = "".join([d async for d in talk.reply(turn, options)]).strip()
        return answer

    answers = await asyncio.gather(*[one(item.turns) for item in ITEMS])
    correct: dict[str, list[bool]] = {}
    repeats, lengths = 0, []
    for item, answer in zip(ITEMS, answers, strict=True):
        ok = item.check(answer)
        correct.setdefault(item.kind, []).append(ok)
        repeats += repeated_sentences(answer) > 0
        lengths.append(len(words(answer)))
        transcript.append(f"- [{'ok' if ok else 'WRONG'}] {' / '.join(item.turns)} -> {answer!r}")
    # speed at batch 1, on one open question
    await engine.complete([{"role": "system", "content": system},
                           {"role": "user", "content": "Tell me about the history of the bicycle."}],
                          dataclasses.replace(options, max_new_tokens=64))
    stats = engine.stats[-1]
    return {"correct": correct, "repeats": repeats, "words": statistics.median(lengths),
            "tok_s": (stats.completion_tokens - 1) / (stats.total_s - stats.first_token_s),
            "first_s": stats.first_token_s}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--guards", nargs="+", default=list(GUARDS), choices=list(GUARDS))
    args = parser.parse_args()
    defaults = parse_config({}).model
    guards = dict(GUARDS)
    kinds = sorted({item.kind for item in ITEMS})
    lines = [f"{len(ITEMS)} items ({', '.join(f'{k}: {sum(i.kind == k for i in ITEMS)}' for k in kinds)}); greedy, "
             f"llama.cpp engine, system prompt {defaults.system_prompt!r}, at most {args.max_tokens} tokens. "
             f"Spoken default guard: repetition_penalty {defaults.repetition_penalty}, "
             f"no_repeat_ngram {defaults.no_repeat_ngram}.", "",
             "| model | guard | score | " + " | ".join(kinds) + " | answers repeating a sentence | median words "
             "| decode tok/s (batch 1) | first token s |",
             "|---|---|---|" + "---|" * len(kinds) + "---|---|---|---|"]
    transcripts: list[str] = []
    for name in args.models:
        path = gguf_path(name, args.models_dir.resolve())
        if path is None:
            lines.append(f"| {name} | not provisioned (`assistant models fetch`) |")
            continue
        engine = LlamaCppEngine(path)
        try:
            for label in args.guards:
                guard = guards[label]
                transcripts += ["", f"### {name}, guard {label}"]
                r = await evaluate(engine, guard, defaults.system_prompt, args.max_tokens, transcripts)
                correct = r["correct"]
                assert isinstance(correct, dict)
                total = sum(sum(v) for v in correct.values())
                per_kind = " | ".join(f"{sum(correct[k])}/{len(correct[k])}" for k in kinds)
                print(name, label, total, flush=True)
                lines.append(f"| {name} | {label} | **{total}/{len(ITEMS)}** | {per_kind} | {r['repeats']} | "
                             f"{r['words']:.0f} | {r['tok_s']:.1f} | {r['first_s']:.2f} |")
        finally:
            engine.close()
    lines += ["", "## Answers", *transcripts]
    print(write_results("quality", "Answer quality of the candidate default models", lines).read_text())


if __name__ == "__main__":
    asyncio.run(main())
