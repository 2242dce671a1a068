"""Spoken test utterances with a pause inside a sentence, from Piper and from espeak-ng.

Why not synthesise the first half alone: a TTS voice says "What is the capital of" with the
falling pitch of a finished sentence, which is not how a person sounds who stops to think.
Here the whole sentence is synthesised and the pause is put inside it, so the words before
the pause keep their mid-sentence intonation: espeak-ng inserts an SSML break itself; for
Piper we cut the full sentence at the quietest point near where its first part ends.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from typing import Any

import numpy as np

from assistant.audio import resample

RATE = 16_000
ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3", "en-us+m5")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str = "en-us", wpm: int = 160, *, ssml: bool = False) -> np.ndarray:
    """espeak-ng saying `text`, 16 kHz mono float32."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", *(["-m"] if ssml else []), text]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return trim(resample(pcm, rate, RATE))


def piper(speech: Any, text: str) -> np.ndarray:
    audio = speech.synthesize_sync(text, steady=True)  # Piper varies its prosody at random otherwise
    return trim(resample(audio.samples, audio.rate, RATE))


def trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Without leading and trailing silence."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0]:loud[-1] + 1].astype(np.float32) if len(loud) else audio[:0]


def _quietest(audio: np.ndarray, lo: int, hi: int, window: int = 480) -> int:
    """Sample index of the quietest 30 ms window starting in [lo, hi)."""
    starts = range(max(0, lo), max(lo + 1, min(hi, len(audio) - window)), 80)
    return min(starts, key=lambda s: float(np.mean(audio[s:s + window] ** 2))) + window // 2


def piper_paused(speech: Any, first: str, rest: str, pause_s: float) -> tuple[np.ndarray, int]:
    """Piper saying `first rest` with `pause_s` of silence between the two parts; returns the
    audio and the sample where the pause begins."""
    whole = piper(speech, f"{first} {rest}")
    alone = len(piper(speech, first))  # said alone it ends slower: the cut lies a little before
    cut = _quietest(whole, int(alone * 0.75), int(alone * 1.05))
    head = trim(whole[:cut])
    return np.concatenate([head, np.zeros(int(pause_s * RATE), np.float32), trim(whole[cut:])]), len(head)


def espeak_paused(first: str, rest: str, pause_s: float, voice: str = "en-us",
                  wpm: int = 160) -> tuple[np.ndarray, int]:
    """espeak-ng saying `first <break> rest` as one sentence; the audio and where the pause begins."""
    audio = espeak(f"<speak>{first} <break time=\"{int(pause_s * 1000)}ms\"/> {rest}</speak>", voice, wpm, ssml=True)
    quiet = np.abs(audio) < 0.01
    run, need = 0, int(0.5 * pause_s * RATE)
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run >= need:
            return audio, i - run + 1
    raise AssertionError(f"espeak-ng put no pause into {first!r} / {rest!r}")
