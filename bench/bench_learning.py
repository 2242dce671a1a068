"""The learning loop's figures: how many steps and how long to teach 5 made-up facts, how many of
15 held-out paraphrases come back right, how many of 10 control answers are kept; decode speed with
an adapter active vs the base; a chat answer's time to first token while a training job runs.

Through the same code the bot uses: the facts are stored as approved corrections, `train
feedback` is the job runner's `python -m finetune.train --data @feedback` (with the thread budget
the bot's runner applies), and the gate is `finetune.gate.run_gate` on a live `TransformersEngine`
(base and adapter side by side in one batch). Three ways to answer are compared on the same
questions: the base with instant memory (no training at all), the adapter alone, the adapter with
memory (what the bot does after activation).

    python -m bench.bench_learning [--steps N]     # writes bench/results/learning.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from assistant.config import Config, load_config
from assistant.llm.base import GenerationOptions
from assistant.memory import approved_facts, build_memory
from assistant.prompting import system_messages
from assistant.store import Store
from bench.common import write_results
from finetune.gate import GateItem, GateReport, parse_items, run_gate

REPO = Path(__file__).resolve().parents[1]
FACTS = [json.loads(line) for line in (REPO / "datasets" / "learning-facts.jsonl").read_text().splitlines()]


def bench_config(root: Path, model: str) -> Config:
    text = (f'[model]\nname = "{model}"\n[storage]\nmodels_dir = "{REPO / "models"}"\n'
            f'datasets_dir = "{root / "datasets"}"\nruns_dir = "{root / "runs"}"\nexports_dir = "{root / "exports"}"\n'
            f'database = "{root / "db.sqlite3"}"\ncontrol_set = "{REPO / "datasets" / "control.jsonl"}"\n'
            f'replay_prompts = "{REPO / "datasets" / "replay_prompts.txt"}"\n')
    (root / "config.toml").write_text(text, encoding="utf-8")
    return load_config(root / "config.toml")


def paraphrase_items() -> list[GateItem]:
    return [GateItem(p, f["expected"], "contains", "paraphrase") for f in FACTS for p in f["paraphrases"]]


async def ttft(engine: Any, question: str) -> float:
    start = time.perf_counter()
    async for _ in engine.stream([*system_messages("You are a helpful, concise assistant."),
                                  {"role": "user", "content": question}],
                                 GenerationOptions(max_new_tokens=8, adapter=None)):
        return time.perf_counter() - start
    return time.perf_counter() - start


async def decode_rate(engine: Any, adapter: str | None) -> float:
    """Tokens a second of one answer, as the engine counted them (either engine keeps `stats`)."""
    start = time.perf_counter()
    await engine.complete([{"role": "user", "content": "Write a short story about a lighthouse keeper."}],
                          GenerationOptions(max_new_tokens=96, adapter=adapter))
    return float(engine.stats[-1].completion_tokens) / (time.perf_counter() - start)


async def activate(engine: Any, name: str) -> None:
    """Make the adapter active as the bot does, and wait for the llama.cpp engine's merged copy of it
    (the path an active adapter's answers take; the gate above used the run-time path)."""
    engine.set_active_adapter(name)
    start = time.monotonic()
    while hasattr(engine, "merged_adapter") and engine.merge_active and engine.merged_adapter != name:
        if time.monotonic() - start > 600:
            raise SystemExit("the merged copy of the adapter never came in (see the log)")
        await asyncio.sleep(0.5)


async def train_while_answering(config: Config, engine: Any, root: Path, steps: int | None) -> dict[str, Any]:
    """Submit the feedback job through the runner and measure chat TTFT while it trains."""
    from finetune.jobs import JobRunner, JobSpec
    from finetune.teach import FEEDBACK

    idle = [await ttft(engine, "What is the capital of Spain?") for _ in range(3)]
    with Store.open(config.storage.database) as store:
        runner = JobRunner(config, store, beside_engine=True)
        start = time.monotonic()
        job_id = runner.submit(JobSpec(data=[FEEDBACK], name="facts", max_steps=steps))
        busy: list[float] = []
        while runner.status(job_id).state in ("queued", "running"):
            await asyncio.sleep(15)
            busy.append(await ttft(engine, "What is the capital of Spain?"))
        job = runner.status(job_id)
        wall = time.monotonic() - start
    if job.state != "succeeded":
        raise SystemExit(f"training failed: {job.error}")
    metrics = (job.result or {}).get("metrics", {})
    return {"wall_s": wall, "steps": metrics.get("steps"), "train_s": metrics.get("seconds", 0.0),
            "idle_ttft": statistics.median(idle), "busy_ttft": statistics.median(busy) if busy else None,
            "busy_samples": len(busy)}


def line(name: str, report: GateReport, group: str) -> str:
    good, total = report.score(group)
    return f"{name}: {good}/{total}"


async def main(steps: int | None, model: str) -> None:
    from assistant.llm import create_backend

    root = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    config = bench_config(root, model)
    with Store.open(config.storage.database) as store:
        for fact in FACTS:
            store.submit_correction(prompt=fact["prompt"], original_reply="I don't know.", correction=fact["answer"],
                                    user_id="bench", status="approved")
        memory = build_memory(config.memory, config.storage.models_dir, lambda: approved_facts(store))
    engine = create_backend(config.model, config.storage.models_dir)
    trained = await train_while_answering(config, engine, root, steps)
    adapter = root / "runs" / "facts" / "adapter"
    await engine.load_adapter("facts", str(adapter))
    items = paraphrase_items() + [GateItem(f["prompt"], f["expected"], "contains", "taught") for f in FACTS] + \
        parse_items(config.storage.control_set.read_bytes(), "control", group="control")

    async def gate(adapter_name: str | None, notes: Any) -> GateReport:
        return await run_gate(engine, adapter_name, items, notes=notes, system_prompt=config.model.system_prompt,
                              min_control_kept=config.finetune.min_control_kept)
    print(f"trained: {trained}", flush=True)
    memory_only = await gate(None, memory.notes)
    print(f"memory only: {memory_only.summary()}", flush=True)
    adapter_only = await gate("facts", None)
    print(f"adapter only: {adapter_only.summary()}", flush=True)
    both = await gate("facts", memory.notes)
    print(f"adapter + memory: {both.summary()}", flush=True)
    base_rate = statistics.median([await decode_rate(engine, None) for _ in range(2)])
    await activate(engine, "facts")
    tuned_rate = statistics.median([await decode_rate(engine, "facts") for _ in range(2)])
    engine.close()
    rows = ["| answered by | 15 held-out paraphrases | taught (exact) | control kept |", "|---|---|---|---|"]
    for name, rep in (("base model, no memory (before teaching)", None), ("base + instant memory (no training)",
                                                                          memory_only),
                      ("adapter alone", adapter_only), ("adapter + memory (the bot after Activate)", both)):
        if rep is None:
            p = sum(a.base_ok for a in both.answers if a.group == "paraphrase")
            t = sum(a.base_ok for a in both.answers if a.group == "taught")
            rows.append(f"| {name} | {p}/15 | {t}/5 | 10/10 (reference) |")
        else:
            rows.append(f"| {name} | {rep.score('paraphrase')[0]}/15 | {rep.score('taught')[0]}/5 | "
                        f"{rep.score('control')[0]}/10 |")
    busy = trained["busy_ttft"]
    lines = [f"Model: {model}, engine: {type(engine).__name__}.", "",
             f"`train feedback` defaults: {trained['steps']} steps, training {trained['train_s']:.0f} s, "
             f"job wall time {trained['wall_s']:.0f} s (model load, export, replay generation included).", "",
             *rows, "",
             "Goal: ≥ 12/15 paraphrases and ≥ 9/10 control kept within 10 minutes of training.", "",
             f"Decode with the adapter active (served from the merged copy on llama.cpp): {tuned_rate:.1f} tok/s vs base {base_rate:.1f} tok/s "
             f"({tuned_rate / base_rate:.2f}×).",
             f"Chat time to first token: idle {trained['idle_ttft'] * 1000:.0f} ms; while the job trained "
             + (f"{busy * 1000:.0f} ms median of {trained['busy_samples']} ({busy / trained['idle_ttft']:.2f}× idle)."
                if busy else "not sampled."),
             "", "The machine is shared with other jobs; compare the ratios, not the absolute times."]
    print("\n".join(lines))
    print(f"written to {write_results('learning', 'Learning loop: 5 facts taught by correction', lines)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="override finetune.feedback_steps")
    parser.add_argument("--model", default=load_config(REPO / "config.toml", environ={}).model.name,
                        help="the model taught (default: the shipped config's)")
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.model))
