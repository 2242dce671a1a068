"""Would re-quantizing the default model let batching pay? Speed against answer quality.

    .venv/bin/python bench/bench_requantize.py [--model qwen2.5-coder-0.5b-instruct] [--types IQ4_NL Q4_0]

Writes bench/results/requantize.md. Issue 14 asks 8 concurrent requests for 3x the engine's own
serial speed; `batch_ceiling.md` shows llama.cpp itself stops near 2.5x on the default model here,
because most of its matrices are Q5_0, which llama.cpp has no repacked (batched) kernel for on
AVX2. Q4_0 and IQ4_NL have one. This re-quantizes the published GGUF to those types with
llama.cpp's own quantizer (from the published, already quantized weights: no finer original is
on the package index) and measures, each file in its own process:

* the batch ceiling and the 8 prompts' joint prefill (`bench_batch_ceiling.measure_file`);
* how far its next-token distribution moves from the published file's: mean KL divergence,
  top-1 agreement and perplexity, teacher-forced over the first 2,000 tokens of LICENSE (plain
  English that does not change between runs);
* the answer-quality evaluation (`bench_quality`, greedy, the spoken default guard).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report, run_child, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEXT_TOKENS = 2000
WINDOW = 1000


def quantize(source: Path, out: Path, type_name: str, threads: int) -> float:
    """llama.cpp's quantizer, every matrix of the given type (output and embeddings too, as
    llama-quantize picks them for that type). Returns seconds."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}")
    params.allow_requantize = True
    started = time.perf_counter()
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"quantizing to {type_name} failed")
    return time.perf_counter() - started


def log_probs(path: Path, tokens: list[int], threads: int) -> np.ndarray:
    """Log-probabilities of every next token, teacher-forced in windows of WINDOW tokens."""
    import llama_cpp

    model = llama_cpp.Llama(str(path), n_ctx=WINDOW, n_batch=512, logits_all=True, verbose=False, n_threads=threads)
    rows = []
    for start in range(0, len(tokens) - 1, WINDOW):
        chunk = tokens[start:start + WINDOW]
        model.reset()
        model.eval(chunk)
        logits = np.asarray(model.scores[:len(chunk)], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        rows.append((logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:-1])
    model.close()
    return np.concatenate(rows)


def divergence(path: Path, reference: Path, threads: int) -> dict[str, float]:
    import llama_cpp

    vocab = llama_cpp.Llama(str(reference), vocab_only=True, verbose=False)
    tokens = vocab.tokenize((REPO / "LICENSE").read_text().encode())[:TEXT_TOKENS]
    vocab.close()
    ref = log_probs(reference, tokens, threads)
    ours = ref if path == reference else log_probs(path, tokens, threads)  # the published row: itself
    targets = np.concatenate([np.asarray(tokens[s + 1:s + WINDOW], dtype=np.int64)
                              for s in range(0, len(tokens) - 1, WINDOW)])
    nll = -ours[np.arange(targets.size), targets]
    return {"kl": float((np.exp(ref) * (ref - ours)).sum(axis=1).mean()),
            "top1": float((ref.argmax(axis=1) == ours.argmax(axis=1)).mean()),
            "ppl": float(np.exp(nll.mean()))}


def quality(path: Path) -> dict[str, Any]:
    from assistant.config import parse_config
    from assistant.llm.llamacpp_engine import LlamaCppEngine
    from bench.bench_quality import evaluate

    model = parse_config({}).model
    engine = LlamaCppEngine(path)
    transcript: list[str] = []
    try:  # no guard override: evaluate's default_options(spoken=True) is the spoken default guard
        result = asyncio.run(evaluate(engine, {}, model.system_prompt, 128, transcript))
    finally:
        engine.close()
    correct = result["correct"]
    assert isinstance(correct, dict)
    return {"score": sum(sum(v) for v in correct.values()), "items": sum(len(v) for v in correct.values()),
            "repeats": result["repeats"], "transcript": transcript}


def measure_one(path: Path, reference: Path, threads: int) -> dict[str, Any]:
    from bench.bench_batch_ceiling import measure_file

    return {"steps": measure_file(path, threads), "divergence": divergence(path, reference, threads),
            "quality": quality(path), "mib": path.stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--types", nargs="+", default=["IQ4_NL", "Q4_0"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=Path("models").resolve())
    parser.add_argument("--one", nargs=2, metavar=("GGUF", "REFERENCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        report(measure_one(Path(args.one[0]), Path(args.one[1]), args.threads))
        return
    from assistant.llm.catalog import gguf_path

    published = gguf_path(args.model, args.models_dir)
    if published is None:
        raise SystemExit(f"{args.model} is not provisioned (`assistant models fetch {args.model}`)")
    lines = [f"{args.model}: the published GGUF against copies re-quantized from it by llama.cpp's quantizer "
             f"({args.threads} threads). Steps: one new token in each of n sequences (as `batch_ceiling.md`); "
             f"prefill: 8 prompts of 40 tokens in one batch. KL, top-1 agreement and perplexity: teacher-forced "
             f"over the first {TEXT_TOKENS} tokens of LICENSE, against the published file. Quality: "
             "`bench_quality`'s items, greedy, the spoken default guard.", "",
             "| file | MiB | quantize s | step ms n=1 | n=8 | ceiling at 8 | prefill ms | KL | top-1 agree | "
             "perplexity | quality | answers repeating a sentence |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    transcripts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="requantize-") as tmp:
        files = [("published", published, 0.0)]
        for type_name in args.types:
            out = Path(tmp) / f"{type_name}.gguf"
            files.append((type_name, out, quantize(published, out, type_name, args.threads)))
        for label, path, seconds in files:
            r, stderr = run_child(__file__, "--one", str(path), str(published), "--threads", str(args.threads))
            if r is None:
                lines.append(f"| {label} | failed: {stderr.strip().splitlines()[-1:]} |")
                continue
            s, d, q = r["steps"], r["divergence"], r["quality"]
            lines.append(f"| {label} | {r['mib']:.0f} | {seconds:.0f} | {s['1'] * 1000:.1f} | {s['8'] * 1000:.1f} | "
                         f"{8 * s['1'] / s['8']:.2f} | {s['prefill'] * 1000:.0f} | {d['kl']:.4f} | {d['top1']:.3f} | "
                         f"{d['ppl']:.2f} | {q['score']}/{q['items']} | {q['repeats']} |")
            transcripts += ["", f"### {label}", *q["transcript"]]
            print(lines[-1], flush=True)
    lines += ["", "## Answers", *transcripts]
    print(write_results("requantize", "Re-quantizing the default model: batching against answer quality",
                        lines).read_text())


if __name__ == "__main__":
    main()
