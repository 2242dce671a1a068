"""llama.cpp engine benchmark: ours against plain llama-cpp-python and our transformers engine.

    .venv/bin/python bench/bench_llamacpp.py [--tokens 64] [--models smollm2-135m-instruct ...]

Writes bench/results/llamacpp.md. For each model and engine, in its own process (so peak RSS
is that engine's alone), one after another in one run: prefill tok/s, batch-1 decode tok/s,
time to first token at the 20th turn of a conversation, aggregate tok/s with 1, 4 and 8
concurrent requests (for our engines, 8 concurrent against the same prompts one at a time in
alternating rounds), peak RSS. Plain llama-cpp-python (`Llama.create_chat_completion`) serves
one request at a time, so its "concurrent" figure is requests queued one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import peak_rss_mb, report, run_child, write_results  # noqa: E402

SYSTEM = "You are a helpful assistant."
PROMPTS = ["Write a short story about a robot who learns to paint.", "Explain how a rainbow forms.",
           "Describe the city of Paris in detail.", "Write a poem about autumn leaves.",
           "Explain what a computer does, step by step.", "Tell me about the history of the bicycle.",
           "Describe a day in the life of a farmer.", "Explain why the sky is blue."]
LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 50)
TURNS = [f"Tell me one short fact about the number {i}." for i in range(1, 21)]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


# ----- our engines (llama.cpp and transformers share the ChatBackend contract) -----

async def run_ours(kind: str, name: str, models_dir: Path, tokens: int, cpu_weights: str,
                   rounds: int, prefix_reuse: bool = False) -> dict[str, Any]:
    from assistant.conversation import Conversation
    from assistant.llm.base import GenerationOptions

    def make(prefix: bool) -> Any:
        if kind == "llama.cpp":
            from assistant.llm.catalog import gguf_path
            from assistant.llm.llamacpp_engine import LlamaCppEngine

            return LlamaCppEngine(gguf_path(name, models_dir), prefix_reuse=prefix,  # type: ignore[arg-type]
                                  cpu_weights=cpu_weights)
        from assistant.llm.engine import TransformersEngine
        from assistant.llm.loader import load_causal_lm

        return TransformersEngine(lambda: load_causal_lm(name, models_dir), prefix_cache_mb=256 if prefix else 0)

    engine = make(prefix=False)
    opts = GenerationOptions(max_new_tokens=tokens)
    await engine.complete(chat("warm up"), GenerationOptions(max_new_tokens=4))
    prefill = []
    for _ in range(3):
        await engine.complete(chat(LONG), GenerationOptions(max_new_tokens=1))
        prefill.append(engine.stats[-1].prompt_tokens / engine.stats[-1].first_token_s)
    if prefix_reuse:  # the prefill figure above needs it off: the same long prompt three times
        await engine.aclose()
        engine = make(prefix=True)
        await engine.complete(chat("warm up"), GenerationOptions(max_new_tokens=4))

    async def concurrently(n: int) -> float:
        before, start = len(engine.stats), time.perf_counter()
        await asyncio.gather(*[engine.complete(chat(PROMPTS[i % len(PROMPTS)]), opts) for i in range(n)])
        return sum(s.completion_tokens for s in engine.stats[before:]) / (time.perf_counter() - start)

    # Serial and 8 concurrent take turns, `rounds` times: other tenants' load comes and goes within
    # seconds here, so a ratio is only fair between measurements taken side by side.
    decode, serials, eights = [], [], []
    for _ in range(rounds):
        serial_tokens, start = 0, time.perf_counter()
        for prompt in PROMPTS:
            await engine.complete(chat(prompt), opts)
            s = engine.stats[-1]
            serial_tokens += s.completion_tokens
            decode.append((s.completion_tokens - 1) / (s.total_s - s.first_token_s))
        serials.append(serial_tokens / (time.perf_counter() - start))
        eights.append(await concurrently(8))
    concurrent = {1: await concurrently(1), 4: await concurrently(4), 8: statistics.median(eights)}
    await engine.aclose()
    engine = make(prefix=True)
    talk = Conversation(engine, system_prompt=SYSTEM, context_tokens=4096, reply_tokens=32)
    for turn in TURNS:
        async for _ in talk.reply(turn, GenerationOptions(max_new_tokens=32)):
            pass
    async for _ in talk.reply("Thanks!", GenerationOptions(max_new_tokens=8)):
        pass
    late = engine.stats[-1]
    await engine.aclose()
    return {"prefill": max(prefill), "decode": statistics.median(decode), "serial": statistics.median(serials),
            "ratios": [e / r for e, r in zip(eights, serials, strict=True)], "concurrent": concurrent, "late_first_token_s": late.first_token_s, "late_prompt": late.prompt_tokens,
            "rss": peak_rss_mb()}


# ----- plain llama-cpp-python -----

def run_plain(name: str, models_dir: Path, tokens: int, threads: int, cpu_weights: str) -> dict[str, Any]:
    """`cpu_weights` "published": the file as provisioned; "q8_0": the copy our engine serves."""
    from llama_cpp import Llama

    from assistant.llm.catalog import gguf_path
    from assistant.llm.cpu_weights import weights_to_serve

    path = weights_to_serve(gguf_path(name, models_dir), cpu_weights, threads=threads)  # type: ignore[arg-type]
    llm = Llama(model_path=str(path), n_threads=threads, n_ctx=4096, verbose=False)

    def timed(messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, int]:
        start, first, count = time.perf_counter(), 0.0, 0
        for chunk in llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0, stream=True):  # type: ignore[arg-type]
            if chunk["choices"][0]["delta"].get("content"):  # type: ignore[index,union-attr]
                count += 1
                first = first or time.perf_counter() - start
        return first, time.perf_counter() - start, count

    timed(chat("warm up"), 4)
    prompt_tokens = len(llm.tokenize(LONG.encode())) + 20
    prefill = []
    for i in range(3):
        llm.reset()  # no prefix reuse for the prefill figure
        first, _, _ = timed(chat(LONG + " " * i), 1)
        prefill.append(prompt_tokens / first)
    decode, total_tokens, start = [], 0, time.perf_counter()
    for prompt in PROMPTS:
        first, total, count = timed(chat(prompt), tokens)
        total_tokens += count
        decode.append((count - 1) / (total - first))
    serial = total_tokens / (time.perf_counter() - start)
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    late = 0.0
    for turn in TURNS:
        messages.append({"role": "user", "content": turn})
        out = llm.create_chat_completion(messages, max_tokens=32, temperature=0)  # type: ignore[arg-type]
        messages.append({"role": "assistant", "content": out["choices"][0]["message"]["content"] or ""})  # type: ignore[index]
    messages.append({"role": "user", "content": "Thanks!"})
    late, _, _ = timed(messages, 8)
    return {"prefill": max(prefill), "decode": statistics.median(decode), "serial": serial,
            "concurrent": {1: serial, 4: serial, 8: serial}, "late_first_token_s": late, "rss": peak_rss_mb()}


def own_serial(result: dict[str, Any]) -> str:
    """8 concurrent against one at a time: the median of the rounds' ratios, and their range."""
    ratios = result.get("ratios") or [result["concurrent"]["8"] / result["serial"]]
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def one(args: argparse.Namespace) -> None:
    kind, name = args.one
    if kind != "transformers":  # the same thread wait for ours and plain llama-cpp-python
        from assistant.llm.gguf_runtime import set_thread_wait

        set_thread_wait(args.thread_wait)
    if kind == "plain":
        result = run_plain(name, args.models_dir, args.tokens, args.threads, "published")
    elif kind == "plain-served":
        result = run_plain(name, args.models_dir, args.tokens, args.threads, args.cpu_weights)
    else:
        result = asyncio.run(run_ours(kind, name, args.models_dir, args.tokens, args.cpu_weights, args.rounds,
                                      args.prefix_reuse == "on"))
    report(result)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="serial / 8-concurrent pairs for our engines")
    parser.add_argument("--thread-wait", default="brief", choices=("brief", "passive", "active"))
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    parser.add_argument("--engines", nargs="+", default=["llama.cpp", "plain-served", "plain", "transformers"])
    parser.add_argument("--cpu-weights", default="q8_0", choices=("q8_0", "published"),
                        help="model.cpu_weights for our llama.cpp engine (and plain-served)")
    parser.add_argument("--transformers-models", nargs="*", default=None,
                        help="models to run the transformers engine on too (default: all)")
    parser.add_argument("--prefix-reuse", default="off", choices=("off", "on"),
                        help="our engines' prefix reuse in the serial and concurrent rounds (off: batching alone; "
                             "on: as the assistant runs, the prompts' shared opening kept or copied)")
    parser.add_argument("--models-dir", type=Path, default=Path("models").resolve())
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    label = {"llama.cpp": "ours, llama.cpp", "plain": "plain llama-cpp-python, published file",
             "plain-served": f"plain llama-cpp-python, the file ours serves ({args.cpu_weights})",
             "transformers": "ours, transformers"}
    lines = [f"{args.tokens} new tokens per request, {len(PROMPTS)} prompts, greedy, {args.threads} threads "
             f"(llama.cpp's OpenMP wait policy: {args.thread_wait}, for all llama.cpp rows); each "
             "engine in its own process, one after another in this run. Ours serves model.cpu_weights = "
             f"{args.cpu_weights!r}. 'x plain': decode against plain llama-cpp-python on the same file as ours; "
             "'x published': against plain llama-cpp-python on the published file. 'late first token': the "
             "21st prompt of a 20-turn conversation (prefix reuse on). Prefix reuse of ours in the serial and "
             f"concurrent columns: {args.prefix_reuse}. '8 conc. x own serial': the 8 prompts one after "
             f"another, then all 8 at once, {args.rounds} times in turn; the median ratio (and range); '8 concurrent' is "
             "the median of those rounds.", "",
             "| model | engine | prefill tok/s | decode tok/s (batch 1) | x plain | x published | late first token s | "
             "1 concurrent tok/s | 4 concurrent | 8 concurrent | 8 conc. x own serial | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in args.models:
        results: dict[str, dict[str, Any]] = {}
        for engine in args.engines:
            if engine == "transformers" and args.transformers_models is not None \
                    and model not in args.transformers_models:
                continue
            result, stderr = run_child(__file__, "--one", engine, model, "--tokens", str(args.tokens),
                                       "--threads", str(args.threads), "--rounds", str(args.rounds), "--thread-wait", args.thread_wait,
                                       "--cpu-weights", args.cpu_weights, "--prefix-reuse", args.prefix_reuse,
                                       "--models-dir", str(args.models_dir))
            if result is None:
                lines.append(f"| {model} | {label[engine]} | failed: {stderr.strip().splitlines()[-1:]} |")
                continue
            results[engine] = result
        published = results.get("plain", {}).get("decode")
        plain = results.get("plain" if args.cpu_weights == "published" else "plain-served", {}).get("decode")
        for engine, r in results.items():
            c = r["concurrent"]
            lines.append(f"| {model} | {label[engine]} | {r['prefill']:.0f} | {r['decode']:.1f} | "
                         f"{r['decode'] / plain if plain else float('nan'):.2f} | "
                         f"{r['decode'] / published if published else float('nan'):.2f} | {r['late_first_token_s']:.2f} | "
                         f"{c['1']:.1f} | {c['4']:.1f} | {c['8']:.1f} | {own_serial(r)} | {r['rss']:.0f} |")
    print(write_results("llamacpp", "llama.cpp engine benchmark", lines).read_text())


if __name__ == "__main__":
    main()
