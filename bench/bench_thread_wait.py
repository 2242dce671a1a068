"""How the OpenMP wait policy (`model.thread_wait`) changes llama.cpp decode and whisper.cpp speed.

    .venv/bin/python bench/bench_thread_wait.py [--rounds 2] [--busy 0 1]

Writes bench/results/thread_wait.md. Each policy runs in its own process (each OpenMP runtime
reads the policy once, when it loads), the policies taking turns, round after round: plain
llama-cpp-python decodes 48 tokens of the default GGUF three times (tok/s, prefill included),
and whisper tiny.en reads a 3.2 s Piper clip 16 times (median ms), through our recogniser.
`--busy N` runs the same with N other processes spinning on the cores, as another program
would on a shared box.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import report, run_child, write_results  # noqa: E402

POLICIES = ("brief", "passive")
PROMPT = "Write a short story about a cat who learns to play the piano."
SENTENCE = "Set a timer for fifteen minutes and remind me to call Sarah."


def one(policy: str, models_dir: Path) -> None:
    """In a fresh process: set `policy` before either library loads, then time both."""
    from assistant.omp import apply_thread_wait

    for variable in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        os.environ.pop(variable, None)
    apply_thread_wait(policy)
    from llama_cpp import Llama

    from assistant.app import resolve_config
    from assistant.audio import resample
    from assistant.llm.catalog import gguf_path
    from assistant.speech.provision import whisper_file
    from assistant.speech.recognizer import WhisperCppRecognizer
    from assistant.speech.service import SpeechService

    path = gguf_path("qwen2.5-coder-0.5b-instruct", models_dir)
    assert path is not None, "run `assistant models fetch` first"
    llm = Llama(str(path), n_threads=2, n_ctx=512, verbose=False)
    llm(PROMPT, max_tokens=8)
    rates = []
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        out = llm(PROMPT, max_tokens=48, temperature=0)
        rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - started))
    config = resolve_config(None)
    audio = SpeechService(config.speech, config.storage).synthesize_sync(SENTENCE)
    clip = resample(audio.samples, audio.rate, 16000).ravel()
    recognizer = WhisperCppRecognizer(whisper_file(models_dir, "tiny.en"), threads=2)
    times = []
    for _ in range(16):
        time.sleep(0.3)
        started = time.perf_counter()
        recognizer.transcribe(clip)
        times.append(time.perf_counter() - started)
    report({"tok_s": statistics.median(rates), "whisper_ms": statistics.median(times) * 1000,
            "clip_s": clip.size / 16000})


def measure(rounds: int, busy: int, models_dir: Path) -> dict[str, list[dict[str, float]]]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        out: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
        for _ in range(rounds):
            for policy in POLICIES:
                result, stderr = run_child(__file__, "--one", policy, "--models-dir", str(models_dir))
                if result is None:
                    raise SystemExit(f"{policy} failed:\n{stderr[-2000:]}")
                out[policy].append(result)
        return out
    finally:
        for hog in hogs:
            hog.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models-dir", type=Path, default=Path("models").resolve())
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.models_dir)
        return
    lines = [f"Load average at start: {os.getloadavg()[0]:.2f}. {args.rounds} rounds per row, policies taking "
             "turns; the median of each round, then the runs listed.", "",
             "| other busy processes | model.thread_wait | Qwen 0.5B decode tok/s (48 tokens, prefill included) | "
             "whisper tiny.en, 3.2 s clip, ms |", "|---|---|---|---|"]
    for busy in args.busy:
        out = measure(args.rounds, busy, args.models_dir)
        for policy in POLICIES:
            rows = out[policy]
            lines.append(f"| {busy} | {policy} | {' / '.join(f'{r['tok_s']:.1f}' for r in rows)} | "
                         f"{' / '.join(f'{r['whisper_ms']:.0f}' for r in rows)} |")
    path = write_results("thread_wait", "OpenMP wait policy", lines)
    print(path.read_text())


if __name__ == "__main__":
    main()
