"""Live voice benchmark: end of the user's speech → the bot's first reply audio packet, and how
often a turn is cut off mid-sentence, for `voice.end_of_turn = "model"` against `"silence"`.

    .venv/bin/python -m bench.bench_voice             # writes bench/results/voice.md
    .venv/bin/python -m bench.bench_voice --turns 20

The real bot (the default config's models and engine, whisper tiny.en, Piper joe, Smart Turn v3.2) joins a
voice channel of the local fake Discord; a simulated user speaks over encrypted RTP, waits for
the spoken answer to finish, and speaks again. Three sets of turns, each run in both modes:

* piper: ~3 s Piper-spoken questions;
* espeak: the same questions from espeak-ng voices (not Piper: other pitch, speed, accent);
* pause: Piper questions with a 0.7–1.0 s pause inside ("What is the capital of … France?");
  a turn is *cut off* when the bot ends the utterance during that pause.

Then a backchannel set: while the bot tells a story, the user says "yeah", "mhm", ... (or
coughs); a *false stop* is an answer that does not go on afterwards.

Outside clock: from the real end of speech (the last loud sample sent, so every wait of the
bot counts) to the first non-silent packet of the answer at the server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.audio import resample
from assistant.config import load_config
from assistant.voice.latency import percentile
from assistant.voice.turns import Event
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
PAUSED = (  # (before the pause, after it)
    ("What is the capital of", "France?"), ("I would like to know the", "time in Tokyo."),
    ("Can you tell me how many", "legs a spider has?"), ("What is the weather like in", "London today?"),
    ("Please give me a", "recipe for a soup."), ("Which season comes", "after the winter?"),
    ("How far is it from", "Paris to Berlin?"), ("Tell me a joke about", "a cat."),
    ("What do bees make in", "their hives?"), ("Remind me to call my", "mother tomorrow."),
)
BACKCHANNELS = ("Yeah.", "Mhm.", "Okay.", "Right.", "Uh-huh.", "Yes.", "Sure.", "Hmm.")
MODES = ("model", "silence")


def stereo(audio16k: np.ndarray) -> np.ndarray:
    return resample(audio16k, 16_000, RATE, layout="stereo", fmt="s16")


def speech_end_s(pcm: np.ndarray) -> float:
    """Seconds into `pcm` where the speech ends (last 10 ms window clearly above silence)."""
    mono = np.abs(pcm.astype(np.float32).mean(axis=1)) / 32768
    window = RATE // 100
    loud = [i for i in range(0, len(mono) - window, window) if mono[i:i + window].mean() > 0.01]
    return (loud[-1] + window) / RATE if loud else len(mono) / RATE


def cough(seed: int) -> np.ndarray:
    """A 250 ms burst of shaped noise: what a cough is to a VAD."""
    rng = np.random.default_rng(seed)
    n = int(0.25 * 16_000)
    env = np.exp(-np.linspace(0, 6, n)) * np.minimum(1, np.linspace(0, 20, n))
    return (0.5 * env * np.convolve(rng.standard_normal(n), np.ones(8) / 8, "same")).astype(np.float32)


async def clips(speech: Any, rng: np.random.Generator) -> dict[str, list[tuple[np.ndarray, float | None]]]:
    """Per set: (48 kHz stereo clip, seconds into it where the inner pause ends or None)."""
    from tests.voice.utterances import ESPEAK_VOICES, espeak, espeak_available, piper, piper_paused

    sets: dict[str, list[tuple[np.ndarray, float | None]]] = {
        "piper": [(stereo(piper(speech, q)), None) for q in QUESTIONS]}
    if espeak_available():
        sets["espeak"] = [(stereo(espeak(q, ESPEAK_VOICES[i % len(ESPEAK_VOICES)], 150 + 10 * (i % 4))), None)
                          for i, q in enumerate(QUESTIONS)]
    paused = []
    for first, rest in PAUSED:
        pause = float(rng.uniform(0.7, 1.0))
        audio, cut = piper_paused(speech, first, rest, pause)
        paused.append((stereo(audio), (cut / 16_000) + pause))
    sets["pause"] = paused
    return sets


async def speak_turn(server: Any, session: Any, pcm: np.ndarray, pause_end: float | None,
                     ended: list[Any]) -> dict[str, float]:
    before, seen = len(session.latency.turns), len(ended)
    await server.speak(server.alice, pcm)
    start = server.voice.spoken[-1].started_at
    end = start + speech_end_s(pcm)

    def answered() -> Any:
        try:
            cap = server.voice_audio()
        except KeyError:
            return None
        return next((p.at for p in cap.packets if p.at > end and not p.silence and p.pcm.any()), None)

    try:
        first = await server.world.wait_until(answered, 30, "the spoken answer")
    except TimeoutError:  # not recognised (empty transcript) or not spoken: counted, not timed
        return {"unanswered": 1.0}
    await server.world.wait_until(lambda: not session.dialog.playing, 120, "the answer to finish")
    await asyncio.sleep(0.4)
    row: dict[str, float] = {"outside_first_audio": first - end}
    mine = ended[seen:]
    if pause_end is not None:
        row["cut_off"] = float(any(e.at < start + pause_end for e in mine))
    if len(session.latency.turns) > before:
        timing = session.latency.turns[-1]
        for stage in ("turn_ended", "recognised", "first_token", "first_audio"):
            value = timing.since_end(stage)
            if value is not None:
                row[stage] = value
        row["by_model"] = float(timing.ended_by_model)
        if timing.turn_probability is not None:
            row["p"] = timing.turn_probability
        if timing.text_probability is not None:
            row["q"] = timing.text_probability
    return row


async def backchannel_turns(server: Any, session: Any, story: np.ndarray,
                            interjections: list[np.ndarray]) -> list[bool]:
    """For each interjection that reached the bot while it spoke: did the answer stop for good?"""
    stopped = []
    dialog = session.dialog
    verdicts = _BargeInLog()
    logging.getLogger("assistant.voice.dialog").addHandler(verdicts)
    logging.getLogger("assistant.voice.dialog").setLevel(logging.DEBUG)  # the words heard are logged at DEBUG
    for clip in interjections:
        await server.speak(server.alice, story)
        await server.world.wait_until(lambda: dialog.playing and session.call.frames is not None, 120,
                                      "the story to start")
        await asyncio.sleep(0.8)
        barge_ins, false_alarms = dialog.barge_ins, dialog.false_alarms
        await server.speak(server.alice, clip)
        await server.world.wait_until(lambda: dialog._held is None, 30, "the interjection to be judged")  # noqa: SLF001
        if dialog.barge_ins > barge_ins:  # else the VAD never called it speech, or the answer was over
            stopped.append(dialog.false_alarms == false_alarms)
            print(f"interjection {len(stopped)}: {'STOPPED' if stopped[-1] else 'went on'}; "
                  f"{verdicts.lines[-1] if verdicts.lines else 'no verdict logged'}", flush=True)
            if stopped[-1]:
                FALSE_STOPS.append(verdicts.lines[-1] if verdicts.lines else "no verdict logged")
        session.call.stop_playback()  # next round
        await server.world.wait_until(lambda: not dialog.playing, 60, "the story to stop")
        await asyncio.sleep(0.5)
    logging.getLogger("assistant.voice.dialog").removeHandler(verdicts)
    logging.getLogger("assistant.voice.dialog").setLevel(logging.NOTSET)
    return stopped


FALSE_STOPS: list[str] = []  # the dialog's verdict on each interjection that stopped the answer


class _BargeInLog(logging.Handler):
    """Keeps the dialog's barge-in verdicts ("confirmed: 'text'" / "was a backchannel"): what was heard."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "barge-in by" in message and (record.levelno == logging.DEBUG or "still talking" in message):
            self.lines.append(message)


async def run_mode(mode: str, repo_config: Any, backend: Any, sets: dict[str, Any], turns: int, tokens: int,
                   story: np.ndarray, interjections: list[np.ndarray]) -> tuple[dict[str, list[dict[str, float]]],
                                                                               list[bool], int]:
    from tests.discord.conftest import bot_config, running_bot
    from tests.fakediscord import FakeDiscord

    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeDiscord() as server:
            config = bot_config(Path(tmp), repo_config, server, model={"max_new_tokens": tokens},
                                voice={"answer_mode": "everyone", "end_of_turn": mode})
            async with running_bot(server, config, backend) as bot:
                server.join_voice(server.alice)
                server.send_message(server.general, server.alice, "!join")
                await server.wait_for_bot_voice(timeout=30)
                await server.world.wait_until(lambda: bot.get_cog("Voice").sessions, 30, "listening")
                session = next(iter(bot.get_cog("Voice").sessions.values()))
                ended: list[Any] = []
                receiver = session.listener.receiver
                inner = receiver.on_event

                def spy(event: Any) -> None:
                    if event.kind is Event.ENDED:
                        ended.append(event)
                    inner(event)

                receiver.on_event = spy
                await speak_turn(server, session, sets["piper"][0][0], None, ended)  # warm-up: loads the models
                for name, items in sets.items():
                    rows = []
                    for n in range(turns):
                        pcm, pause_end = items[n % len(items)]
                        rows.append(await speak_turn(server, session, pcm, pause_end, ended))
                        print(f"{mode} {name} {n + 1}/{turns}: {rows[-1].get('outside_first_audio', -1) * 1000:.0f} ms"
                              f" p={rows[-1].get('p', -1):.2f} q={rows[-1].get('q', -1):.3f} verdicts={session.dialog.verdicts[-2:]}"
                              + (" CUT" if rows[-1].get("cut_off") else ""), flush=True)
                    results[name] = rows
                stops = await backchannel_turns(server, session, story, interjections)
                discarded = session.dialog.discarded
    return results, stops, discarded


def cells(rows: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    if not values:
        return "n/a | n/a"
    return f"{percentile(values, 50) * 1000:.0f} | {percentile(values, 95) * 1000:.0f}"


async def bench(turns: int, tokens: int, backchannel_count: int) -> list[str]:
    from assistant.llm import create_backend
    from assistant.speech.service import SpeechService
    from tests.voice.utterances import piper

    repo_config = load_config(REPO / "config.toml", environ={})
    speech = SpeechService(repo_config.speech, repo_config.storage)
    sets = await clips(speech, np.random.default_rng(11))
    story = stereo(piper(speech, "Please tell me a long story about a dragon and a knight."))
    interjections = []
    for i in range(backchannel_count):
        kind = i % (len(BACKCHANNELS) + 2)
        audio = cough(i) if kind >= len(BACKCHANNELS) else piper(speech, BACKCHANNELS[kind])
        interjections.append(stereo(audio))
    backend = create_backend(repo_config.model, repo_config.storage.models_dir)
    load = os.getloadavg()[0]
    out: dict[str, Any] = {}
    try:
        for mode in MODES:
            out[mode] = await run_mode(mode, repo_config, backend, sets, turns, tokens, story, interjections)
    finally:
        backend.close()  # type: ignore[attr-defined]
    engine = f"{type(backend).__name__}, {repo_config.model.name}"
    return report(out, sets, turns, tokens, load, repo_config, engine)


def report(out: dict[str, Any], sets: dict[str, Any], turns: int, tokens: int, load: float,
           repo_config: Any, engine: str) -> list[str]:
    voice = repo_config.voice
    lines = [
        f"Load average at start: {load:.2f} (other work shares these cores). {turns} turns per set and mode; "
        f"sets: {', '.join(sets)}. `voice.silence_ms` = {voice.silence_ms}, `turn_check_ms` = {voice.turn_check_ms}, "
        f"`max_pause_ms` = {voice.max_pause_ms}, `speculate_after_ms` = {voice.speculate_after_ms}, "
        f"`speech.first_clause_words` = {repo_config.speech.first_clause_words}; max_new_tokens = {tokens}; "
        f"engine: {engine} (the default config); no DAVE.",
        "",
        "## End of speech → first reply audio packet (outside clock), and cut-offs",
        "",
        "| set | end_of_turn | turns | unanswered | p50 ms | p95 ms | cut off mid-sentence | ended by the model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sets:
        for mode in MODES:
            rows = out[mode][0][name]
            cut = [r["cut_off"] for r in rows if "cut_off" in r]
            cut_cell = f"{sum(cut):.0f}/{len(cut)} ({100 * sum(cut) / len(cut):.0f} %)" if cut else "–"
            by_model = sum(r.get("by_model", 0) for r in rows)
            unanswered = sum(r.get("unanswered", 0) for r in rows)
            lines.append(f"| {name} | {mode} | {len(rows)} | {unanswered:.0f} | {cells(rows, 'outside_first_audio')} | "
                         f"{cut_cell} | "
                         f"{by_model:.0f}/{len(rows)} |")
    lines += ["", "## Stages inside the bot (its VAD's end of speech → stage), p50 | p95 ms", "",
              "| set | end_of_turn | turn ended | recognised | first token | first audio sent |",
              "|---|---|---|---|---|---|"]
    for name in sets:
        for mode in MODES:
            rows = out[mode][0][name]
            lines.append(f"| {name} | {mode} | {cells(rows, 'turn_ended')} | {cells(rows, 'recognised')} | "
                         f"{cells(rows, 'first_token')} | {cells(rows, 'first_audio')} |")
    lines += ["", "## Backchannels and coughs over a spoken answer", "",
              "| end_of_turn | interjections | false stops |", "|---|---|---|"]
    for mode in MODES:
        stops = out[mode][1]
        lines.append(f"| {mode} | {len(stops)} | {sum(stops)} ({100 * sum(stops) / max(1, len(stops)):.0f} %) |")
    lines.append("(Counted only when the interjection reached the bot while it was speaking: "
                 "the VAD called it speech and a barge-in began.)")
    if FALSE_STOPS:
        lines += ["", "What the dialog decided on each false stop:", *(f"- {line}" for line in FALSE_STOPS)]
    model_all = [r["outside_first_audio"] for name in sets for r in out["model"][0][name]
                 if name != "pause" and "outside_first_audio" in r]
    p50, p95 = percentile(model_all, 50), percentile(model_all, 95)
    cut_model = [r["cut_off"] for r in out["model"][0]["pause"] if "cut_off" in r]
    stops_model = out["model"][1]
    lines += ["", f"Goals (model mode, piper + espeak sets): p50 ≤ 500 ms: {'met' if p50 <= 0.5 else 'missed'} "
              f"({p50 * 1000:.0f} ms); p95 ≤ 800 ms: {'met' if p95 <= 0.8 else 'missed'} ({p95 * 1000:.0f} ms); "
              f"cut-offs ≤ 5 %: {'met' if sum(cut_model) <= 0.05 * len(cut_model) else 'missed'} "
              f"({100 * sum(cut_model) / max(1, len(cut_model)):.0f} %); false barge-in stops ≤ 10 %: "
              f"{'met' if sum(stops_model) <= 0.1 * max(1, len(stops_model)) else 'missed'} "
              f"({100 * sum(stops_model) / max(1, len(stops_model)):.0f} %).",
              f"Speculative attempts thrown away: model {out['model'][2]}, silence {out['silence'][2]}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--backchannels", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = asyncio.run(bench(args.turns, args.max_new_tokens, args.backchannels))
    lines.append(f"\nBenchmark wall time: {time.perf_counter() - started:.0f} s.")
    path = write_results("voice", "Live voice benchmark", lines)
    print(path.read_text())


if __name__ == "__main__":
    main()
