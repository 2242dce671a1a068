"""Speech benchmark: whisper.cpp latency with clip-sized audio_ctx vs raw pywhispercpp defaults, Piper speed.

    .venv/bin/python -m bench.bench_speech            # writes bench/results/speech.md
    .venv/bin/python -m bench.bench_speech --runs 5

Same audio, same process, same threads for both sides: the baseline is pywhispercpp's Model
at its defaults (30 s encoder window), ours is `WhisperCppRecognizer`. Accuracy is the
round-trip set of the tests (Piper -> OGG/Opus -> decode -> whisper), as word error rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import numpy as np

from assistant.audio import RECOGNITION_RATE, AudioLimits, decode_audio, encode_ogg_opus, resample
from assistant.config import load_config
from assistant.speech.provision import whisper_file
from assistant.speech.recognizer import WhisperCppRecognizer, clean_segments
from assistant.speech.service import SpeechService
from assistant.speech.wer import ROUND_TRIP_SENTENCES, word_errors
from bench.common import write_results

REPO = Path(__file__).resolve().parents[1]
UTTERANCES = {
    "3 s": "Please turn on the lights in the kitchen and close the window.",
    "10 s": ("Yesterday I walked to the old market by the river, bought fresh bread and apples, "
             "and then met my friend for a long talk about the summer holidays and our plans for the next year."),
}
ROUND_TRIP = list(ROUND_TRIP_SENTENCES)


def timed(fn, runs: int) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def to_16k(service: SpeechService, text: str) -> np.ndarray:
    spoken = service.synthesize_sync(text)
    return decode_audio(encode_ogg_opus(spoken.samples, spoken.rate), AudioLimits(120, 1 << 26))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from pywhispercpp.model import Model

    config = load_config(REPO / "config.toml", environ={})
    service = SpeechService(config.speech, config.storage)
    clips = {label: to_16k(service, text) for label, text in UTTERANCES.items()}
    trip = [(text, to_16k(service, text)) for text in ROUND_TRIP]
    lines = [f"Threads: {args.threads}; median of {args.runs} runs after a warm-up; load average at start "
             f"{os.getloadavg()[0]:.2f} (other work shares these cores).", "",
             "## Recognition latency (ours: audio_ctx sized to the clip; baseline: pywhispercpp defaults)", "",
             "| model | clip | audio s | baseline ms | ours ms | speed-up | RTF baseline | RTF ours | same text |",
             "|---|---|---|---|---|---|---|---|---|"]
    accuracy = ["", "## Round-trip accuracy (6 sentences, Piper -> OGG/Opus -> whisper)", "",
                "| model | WER baseline | WER ours |", "|---|---|---|"]
    for name in ("tiny.en", "base"):
        path = whisper_file(config.storage.models_dir, name)
        raw = Model(str(path), n_threads=args.threads, print_progress=False, redirect_whispercpp_logs_to=None)
        ours = WhisperCppRecognizer(path, threads=args.threads, language="en")

        def raw_text(audio: np.ndarray) -> str:
            segs = raw.transcribe(audio, language="en", print_progress=False)
            return " ".join(s.text for s in clean_segments([(s.t0 / 100, s.t1 / 100, s.text) for s in segs],
                                                           audio.size / RECOGNITION_RATE))

        for label, audio in clips.items():
            secs = audio.size / RECOGNITION_RATE
            base_t, base_text = timed(lambda: raw_text(audio), args.runs)
            our_t, ours_tr = timed(lambda: ours.transcribe(audio), args.runs)
            lines.append(f"| {name} | {label} | {secs:.2f} | {base_t * 1000:.0f} | {our_t * 1000:.0f} | "
                         f"{base_t / our_t:.1f}x | {base_t / secs:.3f} | {our_t / secs:.3f} | "
                         f"{'yes' if base_text == ours_tr.text else 'no'} |")  # type: ignore[union-attr]
        errs = {"raw": [0, 0], "ours": [0, 0]}
        for text, audio in trip:
            for key, hyp in (("raw", raw_text(audio)), ("ours", ours.transcribe(audio).text)):
                e, n = word_errors(text, hyp)
                errs[key][0] += e
                errs[key][1] += n
        accuracy.append(f"| {name} | {errs['raw'][0]}/{errs['raw'][1]} | {errs['ours'][0]}/{errs['ours'][1]} |")

    async def first_audio() -> tuple[float, float, float]:
        text = ("Sure, here is the plan for today. First we buy some bread. "
                "Then we walk to the park and feed the ducks.")
        start = time.perf_counter()
        first, total_audio = 0.0, 0.0
        async for chunk in service.speak_stream(word + " " for word in text.split(" ")):
            if not first:
                first = time.perf_counter() - start
            total_audio += chunk.seconds
        return first, time.perf_counter() - start, total_audio

    asyncio.run(first_audio())  # warm-up (voice load)
    ttfa, total, audio_s = asyncio.run(first_audio())
    whole = service.synthesize_sync("Sure, here is the plan for today. First we buy some bread. "
                                    "Then we walk to the park and feed the ducks.")
    start = time.perf_counter()
    pcm = resample(whole.samples, whole.rate, 48000, layout="stereo", fmt="s16")
    resample_ms = (time.perf_counter() - start) * 1000
    piper = ["", "## Piper (en_US-joe-medium), streaming by sentence", "",
             f"- time to first audio: {ttfa * 1000:.0f} ms (whole reply synthesised at once: "
             f"{whole.elapsed_seconds * 1000:.0f} ms)",
             f"- real-time factor: {total / audio_s:.3f} streamed, {whole.elapsed_seconds / whole.seconds:.3f} whole "
             f"({audio_s:.1f} s of speech)",
             f"- resampling {whole.seconds:.1f} s to 48 kHz stereo s16 for Discord: {resample_ms:.1f} ms "
             f"({pcm.shape[0]} frames)"]
    path = write_results("speech", "Speech benchmark", lines + accuracy + piper)
    print(path.read_text())


if __name__ == "__main__":
    main()
