"""Live voice benchmark: end of the user's speech → the bot's first reply audio packet.

    .venv/bin/python -m bench.bench_voice             # writes bench/results/voice.md
    .venv/bin/python -m bench.bench_voice --turns 20 --baseline-turns 10

The real bot (default models: SmolLM2-135M, whisper tiny.en, Piper joe) joins a voice channel
of the local fake Discord; a simulated user asks ~3 s Piper-spoken questions over encrypted RTP,
waits for the spoken answer to finish, and asks the next. Two clocks, same process:

* outside: from the real end of the user's speech (the last loud sample sent, so the VAD's
  silence wait counts) to the first non-silent packet of the bot's answer at the server;
* inside: the bot's own `VoiceLatencyLog` stages (recognised, first token, first audio),
  measured from the end of speech as its VAD saw it.

Baseline, same run: the same turns with speculation off (recognition and generation start
only once the silence has ended the utterance), which is what a naive pipeline does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.audio import resample
from assistant.config import load_config
from assistant.voice.latency import percentile
from bench.common import write_results

REPO = Path(__file__).resolve().parents[1]
RATE = 48_000
QUESTIONS = (  # about 3 s each when Piper says them
    "Could you please tell me what the capital city of France is?",
    "I was wondering, how many days are there in one week?",
    "Tell me, what color is the sky on a clear summer day?",
    "Can you name one fruit that is yellow and grows on trees?",
    "What is the opposite of hot, when we talk about the weather?",
    "Which farm animal is it that says moo all day long?",
    "What sweet food do honey bees make in their hives?",
    "How many legs does a spider have, if you count them all?",
    "Quick question for you: what is two plus two?",
    "Which season of the year comes right after the winter?",
)


def speech_end_s(pcm: np.ndarray) -> float:
    """Seconds into `pcm` where the speech ends (last 10 ms window clearly above silence)."""
    mono = np.abs(pcm.astype(np.float32).mean(axis=1)) / 32768
    window = RATE // 100
    loud = [i for i in range(0, len(mono) - window, window) if mono[i:i + window].mean() > 0.01]
    return (loud[-1] + window) / RATE if loud else len(mono) / RATE


async def run_turns(server: Any, session: Any, clips: list[np.ndarray], turns: int) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    for n in range(turns):
        pcm = clips[n % len(clips)]
        before = len(session.latency.turns)
        await server.speak(server.alice, pcm)
        end = server.voice.spoken[-1].started_at + speech_end_s(pcm)

        def answered() -> Any:
            try:
                cap = server.voice_audio()
            except KeyError:
                return None
            return next((p.at for p in cap.packets if p.at > end and not p.silence and p.pcm.any()), None)

        first = await server.world.wait_until(answered, 120, "the spoken answer")
        await server.world.wait_until(lambda: not session.dialog.playing, 120, "the answer to finish")
        await asyncio.sleep(0.3)
        row: dict[str, float] = {"outside_first_audio": first - end}
        if len(session.latency.turns) > before:
            timing = session.latency.turns[-1]
            for stage in ("recognised", "first_token", "first_audio"):
                value = timing.since_end(stage)
                if value is not None:
                    row[stage] = value
            row["speculative"] = float(timing.speculative)
            row["vad_lag"] = timing.speech_end - end  # the bot's VAD end of speech vs the real one
        rows.append(row)
        print(f"turn {n + 1}/{turns}: first audio {row['outside_first_audio'] * 1000:.0f} ms after speech end", flush=True)
    return rows


def summary(rows: list[dict[str, float]], key: str) -> str:
    """Two table cells: p50 and p95 in ms."""
    values = [r[key] for r in rows if key in r]
    if not values:
        return "n/a | n/a"
    return f"{percentile(values, 50) * 1000:.0f} | {percentile(values, 95) * 1000:.0f}"


async def bench(turns: int, baseline_turns: int, tokens: int) -> list[str]:
    from assistant.llm import create_backend
    from assistant.speech.service import SpeechService
    from tests.discord.conftest import bot_config, running_bot
    from tests.fakediscord import FakeDiscord

    repo_config = load_config(REPO / "config.toml", environ={})
    speech = SpeechService(repo_config.speech, repo_config.storage)
    clips = []
    for text in QUESTIONS:
        audio = await speech.synthesize(text)
        clips.append(resample(audio.samples, audio.rate, RATE, layout="stereo", fmt="s16"))
    backend = create_backend(repo_config.model, repo_config.storage.models_dir)
    results: dict[str, list[dict[str, float]]] = {}
    discarded: dict[str, int] = {}
    try:
        for label, count in (("ours", turns), ("baseline", baseline_turns)):
            speculate = repo_config.voice.speculate_after_ms if label == "ours" else 0
            with tempfile.TemporaryDirectory() as tmp:
                async with FakeDiscord() as server:
                    config = bot_config(Path(tmp), repo_config, server, model={"max_new_tokens": tokens},
                                        voice={"answer_mode": "everyone", "speculate_after_ms": speculate})
                    async with running_bot(server, config, backend) as bot:
                        server.join_voice(server.alice)
                        server.send_message(server.general, server.alice, "!join")
                        await server.wait_for_bot_voice(timeout=30)
                        await server.world.wait_until(lambda: bot.get_cog("Voice").sessions, 30, "listening")
                        session = next(iter(bot.get_cog("Voice").sessions.values()))
                        await run_turns(server, session, clips[:1], 1)  # warm-up: loads whisper and Piper
                        results[label] = await run_turns(server, session, clips, count)
                        discarded[label] = session.dialog.discarded
    finally:
        backend.close()  # type: ignore[attr-defined]

    ours, base = results["ours"], results["baseline"]
    p50 = percentile([r["outside_first_audio"] for r in ours], 50)  # the same nearest rank as the table
    p50_base = percentile([r["outside_first_audio"] for r in base], 50)
    seconds = [len(c) / RATE for c in clips]
    lines = [
        f"Load average at start: {os.getloadavg()[0]:.2f} (other work shares these cores). "
        f"Questions: {len(clips)} Piper-spoken clips, {min(seconds):.1f}–{max(seconds):.1f} s "
        f"(mean {statistics.mean(seconds):.1f} s), cycled; `voice.silence_ms` = {repo_config.voice.silence_ms}, "
        f"`voice.speculate_after_ms` = {repo_config.voice.speculate_after_ms}, "
        f"`speech.first_clause_words` = {repo_config.speech.first_clause_words}; "
        f"max_new_tokens = {tokens}; XChaCha20/AES-GCM transport, no DAVE.",
        "",
        "## End of speech → first reply audio packet (outside clock: real end of speech → packet at the server)",
        "",
        "| pipeline | turns | p50 ms | p95 ms |",
        "|---|---|---|---|",
        f"| ours (speculative recognition + generation during the silence) | {len(ours)} | "
        f"{summary(ours, 'outside_first_audio')} |",
        f"| baseline (start only after the silence ended the utterance) | {len(base)} | "
        f"{summary(base, 'outside_first_audio')} |",
        "",
        f"Ratio baseline / ours at p50: {p50_base / p50:.2f}x. Goal ≤ 1000 ms p50: "
        f"{'met' if p50 <= 1.0 else 'not met'} ({p50 * 1000:.0f} ms).",
        "",
        "## Stages inside the bot (its VAD's end of speech → stage), ms",
        "",
        "| pipeline | recognised p50 | p95 | first token p50 | p95 | first audio sent p50 | p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rows in (("ours", ours), ("baseline", base)):
        lines.append(f"| {label} | {summary(rows, 'recognised')} | {summary(rows, 'first_token')} | "
                     f"{summary(rows, 'first_audio')} |")
    spec = sum(1 for r in ours if r.get("speculative"))
    lines += ["", f"Turns whose transcript came from the speculative recognition: {spec}/{len(ours)}; "
              f"speculative attempts thrown away because the speaker went on: {discarded['ours']}.",
              f"The bot's VAD placed the end of speech {summary(ours, 'vad_lag').replace(' | ', ' ms (p50) / ')} ms "
              "(p95) after the real end: the outside clock includes this, the inside one starts there."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--baseline-turns", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = asyncio.run(bench(args.turns, args.baseline_turns, args.max_new_tokens))
    lines.append(f"\nBenchmark wall time: {time.perf_counter() - started:.0f} s.")
    path = write_results("voice", "Live voice benchmark", lines)
    print(path.read_text())


if __name__ == "__main__":
    main()
