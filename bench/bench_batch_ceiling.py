"""How much can batching buy on this CPU? llama.cpp's own decode step at 1, 4 and 8 sequences.

    .venv/bin/python bench/bench_batch_ceiling.py [--models smollm2-135m-instruct ...]

Writes bench/results/batch_ceiling.md. Issue 14 asks the llama.cpp engine for an 8-request
aggregate of at least 3x its own serial speed. This measures the most any engine built on
llama.cpp can get here: the context our engine makes (`GgufModel`, the same parameters), each
sequence prefilled with a 40-token prompt, then `llama_decode` timed alone for one new token in
each of n sequences, with no sampling, no Python around it. Ceiling(n) = n x t(1) / t(n): the
aggregate speed-up if everything but the forward pass were free. Our engine's figure in
`llamacpp.md` is then read against it. Each model runs in its own process; the KV layout our
engine uses (one stream per sequence) and llama.cpp's unified cache are both measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report, run_child, write_results  # noqa: E402

PROMPT_TOKENS = 40
STEPS = 64
SIZES = (1, 4, 8)
CONTEXT_TOKENS = 2048  # model.context_tokens's default: each sequence is sized as the engine sizes it


def measure(name: str, models_dir: Path, threads: int, unified: bool) -> dict[str, float]:
    from assistant.llm.catalog import gguf_path

    path = gguf_path(name, models_dir)
    if path is None:
        raise SystemExit(f"{name} is not provisioned in {models_dir}")
    return measure_file(path, threads, unified)


def measure_file(path: Path, threads: int, unified: bool = False, thread_wait: str = "brief") -> dict[str, float]:
    """Median seconds of one decode step with n sequences, for each n in SIZES (and the seconds
    the 8 prompts' joint prefill took, once).

    The sizes take turns step by step (each on its own sequences), so a slow spell of this
    shared machine slows all of them alike instead of one block of steps.
    """
    from assistant.llm import gguf_runtime
    from assistant.llm.sequence_slots import tokens_per_sequence

    gguf_runtime.set_thread_wait(thread_wait)  # the product's default (model.thread_wait), as the engine bench
    model = gguf_runtime.GgufModel(path, n_seq=sum(SIZES),
                                   ctx_per_seq=tokens_per_sequence(CONTEXT_TOKENS), threads=threads, unified_kv=unified)
    prompt = model.tokenize("The history of the city begins in the ninth century, when traders from the "
                            "north built a small fort beside the river and the first market opened " * 2)
    prompt = prompt[:PROMPT_TOKENS]
    groups, first, prefill = {}, 0, 0.0
    for n in SIZES:
        groups[n] = list(range(first, first + n))
        first += n
        started = time.perf_counter()
        model.decode([(seq, prompt, 0, False) for seq in groups[n]])
        prefill = time.perf_counter() - started  # the last: n = 8, 320 tokens in one batch
    times: dict[int, list[float]] = {n: [] for n in SIZES}
    for step in range(STEPS):
        for n, seqs in groups.items():
            started = time.perf_counter()
            model.decode([(seq, [prompt[-1]], PROMPT_TOKENS + step, True) for seq in seqs])
            times[n].append(time.perf_counter() - started)
    return {"prefill": prefill} | {str(n): statistics.median(t[4:]) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
                                                        "qwen2.5-coder-1.5b-instruct"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=Path("models").resolve())
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, layout = args.one
        report(measure(name, args.models_dir, args.threads, layout == "unified"))
        return
    lines = [f"One `llama_decode` of one new token in each of n sequences (40-token prompts, median of "
             f"{STEPS - 4} steps after 4 warm-up steps, the sizes taking turns), {args.threads} threads, OpenMP "
             f"wait brief (model.thread_wait), the context `LlamaCppEngine` makes (model.context_tokens = {CONTEXT_TOKENS}). Ceiling(n) = n x t(1) / t(n): the aggregate speed-up "
             "batching could give if sampling and everything else around the forward pass were free.", "",
             "| model | KV layout | step ms, n=1 | n=4 | n=8 | ceiling at 4 | ceiling at 8 |",
             "|---|---|---|---|---|---|---|"]
    for model in args.models:
        for layout in ("per-sequence (ours)", "unified"):
            t, stderr = run_child(__file__, "--one", model, layout.split()[0], "--threads", str(args.threads),
                                  "--models-dir", str(args.models_dir))
            if t is None:
                lines.append(f"| {model} | {layout} | failed: {stderr.strip().splitlines()[-1:]} |")
                continue
            lines.append(f"| {model} | {layout} | {t['1'] * 1000:.1f} | {t['4'] * 1000:.1f} | {t['8'] * 1000:.1f} | "
                         f"{4 * t['1'] / t['4']:.2f} | {8 * t['1'] / t['8']:.2f} |")
    print(write_results("batch_ceiling", "Batch ceiling of llama.cpp on this CPU", lines).read_text())


if __name__ == "__main__":
    main()
