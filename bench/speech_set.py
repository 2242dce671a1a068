"""The speech evaluation set: everyday Discord requests spoken by espeak-ng voices, not Piper.

Why espeak-ng: Piper's own voice is what whisper hears best (tiny.en makes ~no errors on it),
so a set spoken by Piper says nothing about real users. espeak-ng's formant voices, accents
and variants (`en-us`, `en-gb`, Scottish, Caribbean, `+f3`, `+m5` ...) at 130-190 wpm are
an unfamiliar, synthetic-sounding speaker — harder than a person, never easier. Every clip
is generated on demand (deterministic: same voice, rate, seed, same samples), so no audio
is committed; `espeak-ng` is a Debian package (scripts/setup.sh installs it).

Noise is mixed at a given SNR over the clip's voiced part, from four deterministic
generators (pink "room" noise, brown rumble, fan hum, babble of other espeak voices);
noise-only clips (quiet room, breathing, keyboard clicks, hum, near-silence) have no words.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from assistant.audio import RECOGNITION_RATE, AudioLimits, decode_audio

# Questions and commands a Discord user says to an assistant; numbers and names included.
SENTENCES = (
    "What time is it in Tokyo?",
    "Remind me to call Sarah at five thirty.",
    "Play some relaxing music in the lounge channel.",
    "How many days are left until Christmas?",
    "Can you summarise the last ten messages?",
    "Set a timer for fifteen minutes.",
    "What is the weather like in London tomorrow?",
    "Tell me a joke about programmers.",
    "Who won the football match last night?",
    "Translate good morning into Spanish.",
    "Add milk, eggs and bread to my shopping list.",
    "Mute everyone except Alex and Maria.",
    "What is twelve times eight?",
    "Turn the volume down a little, please.",
    "Send a message to David saying I will be late.",
    "How far is it from Paris to Berlin?",
    "Start a poll about where we should eat on Friday.",
    "What is the capital of Australia?",
    "Please stop talking and listen to me.",
    "Schedule the team meeting for Monday at nine.",
    "Who is the president of France?",
    "Give me three ideas for a birthday present.",
    "How do I reset my password?",
    "Read me the news headlines from today.",
    "Convert one hundred dollars to euros.",
    "Kick the spam bot from the server.",
    "Explain how a rainbow is made in two sentences.",
    "What did John say about the project yesterday?",
    "Wake me up at seven tomorrow morning.",
    "Is it going to rain this weekend?",
    "Find a good pizza place near the station.",
    "How old is the Eiffel Tower?",
    "Pause the game for twenty minutes.",
    "My name is Olivia and I live in Manchester.",
    "Which planet is closest to the sun?",
    "Thank you, that was really helpful.",
)

# (espeak-ng voice, words per minute): accents, sexes and speeds rotate over the sentences.
VOICES = (
    ("en-us", 160), ("en-gb", 150), ("en-us+f3", 175), ("en-gb+m5", 140), ("en-gb-scotland", 165),
    ("en-029+f2", 150), ("en-us+m3", 190), ("en-gb-x-rp+f4", 130), ("en-us-nyc", 170),
    ("en-gb+f5", 180), ("en-us+klatt", 155), ("en-gb-x-gbclan+m2", 145),
)

NOISE_KINDS = ("pink", "brown", "hum", "babble")
NOISE_ONLY = ("quiet room", "breathing", "keyboard", "fan hum", "near silence", "street rumble")
RUSSIAN = ("Какая сегодня погода в Москве?", ("погода", "москве"))


@dataclass(frozen=True)
class Clip:
    name: str  # e.g. "07-clean", "07-15dB", "noise-breathing"
    subset: str  # "clean", "15dB", "5dB" or "noise"
    text: str  # reference transcript; "" for noise-only clips
    voice: str
    audio: np.ndarray  # 16 kHz mono float32


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=256)
def _espeak(text: str, voice: str, wpm: int) -> bytes:
    if not have_espeak():
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (scripts/setup.sh does it)")
    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text],
                          check=True, capture_output=True, timeout=60)
    return done.stdout


def speak(text: str, voice: str = "en-us", wpm: int = 160, *, pad_s: float = 0.3) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32, with `pad_s` of silence either side (as a
    recording has) and peak-normalised to 0.5 (espeak's level differs by voice)."""
    audio = decode_audio(_espeak(text, voice, wpm), AudioLimits(120, 1 << 26))
    audio = audio / max(1e-6, float(np.max(np.abs(audio)))) * 0.5
    pad = np.zeros(int(pad_s * RECOGNITION_RATE), np.float32)
    return np.concatenate([pad, audio.astype(np.float32), pad])


def _pink(n: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (1: pink, 2: brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RECOGNITION_RATE)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.std(noise) + 1e-12)).astype(np.float32)


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """A fan or mains hum: 50 Hz harmonics plus broadband whoosh."""
    t = np.arange(n) / RECOGNITION_RATE
    tone = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 4, 6))
    noise = np.asarray(tone, dtype=np.float32) + 0.5 * _pink(n, rng)
    return (noise / np.std(noise)).astype(np.float32)


def _babble(n: int, rng: np.random.Generator) -> np.ndarray:
    """Three other voices talking at once, far away (the café / busy voice channel case)."""
    out = np.zeros(n, np.float32)
    for k in range(3):
        text = SENTENCES[int(rng.integers(len(SENTENCES)))] + " " + SENTENCES[int(rng.integers(len(SENTENCES)))]
        voice, wpm = VOICES[(k * 5 + 3) % len(VOICES)]
        talk = speak(text, voice, wpm, pad_s=0.0)
        talk = np.tile(talk, n // talk.size + 1)[:n]
        out += np.roll(talk, int(rng.integers(n)))
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def noise(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "pink":
        return _pink(n, rng)
    if kind == "brown":
        return _pink(n, rng, 2.0)
    if kind == "hum":
        return _hum(n, rng)
    if kind == "babble":
        return _babble(n, rng)
    raise ValueError(f"unknown noise kind {kind!r}")


def voiced_rms(audio: np.ndarray, frame: int = 320) -> float:
    """RMS over the frames within 30 dB of the loudest: the level of the speech, not its pauses."""
    frames = audio[: audio.size // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return float(np.sqrt(np.mean(rms[rms >= rms.max() * 10 ** (-30 / 20)] ** 2)))


def mix(speech: np.ndarray, kind: str, snr_db: float, seed: int) -> np.ndarray:
    """Speech plus noise at `snr_db` (speech level over the voiced frames vs noise RMS)."""
    n = noise(kind, speech.size, seed)
    n = n * voiced_rms(speech) / 10 ** (snr_db / 20)
    mixed = speech + n
    return (mixed / max(1.0, float(np.max(np.abs(mixed))) / 0.99)).astype(np.float32)


def _noise_only(kind: str, seed: int, seconds: float = 3.0) -> np.ndarray:
    """Clips with no words: what a push-to-talk slip, a breath or an open microphone sends."""
    n = int(seconds * RECOGNITION_RATE)
    rng = np.random.default_rng(seed)
    if kind == "quiet room":
        audio = 0.01 * _pink(n, rng)
    elif kind == "breathing":
        env = np.zeros(n, np.float32)
        for start in (0.3, 1.4, 2.4):
            i, length = int(start * RECOGNITION_RATE), int(0.5 * RECOGNITION_RATE)
            env[i:i + length] = np.hanning(length)[: max(0, min(length, n - i))]
        audio = 0.08 * env * _pink(n, rng, 0.5) + 0.002 * _pink(n, rng)
    elif kind == "keyboard":
        audio = 0.002 * _pink(n, rng)
        for at in rng.uniform(0.1, seconds - 0.1, 14):
            i = int(at * RECOGNITION_RATE)
            click = rng.standard_normal(240) * np.exp(-np.arange(240) / 30)
            audio[i:i + 240] += 0.3 * click.astype(np.float32)
    elif kind == "fan hum":
        audio = 0.03 * _hum(n, rng)
    elif kind == "near silence":
        audio = 0.0015 * rng.standard_normal(n).astype(np.float32)
    elif kind == "street rumble":
        audio = 0.05 * _pink(n, rng, 2.0)
    else:
        raise ValueError(f"unknown noise-only kind {kind!r}")
    return audio.astype(np.float32)


def evaluation_set(subsets: tuple[str, ...] = ("clean", "15dB", "5dB", "noise"),
                   limit: int | None = None) -> list[Clip]:
    """The clips of the chosen subsets; `limit` keeps the first N sentences (quick runs)."""
    clips: list[Clip] = []
    sentences = SENTENCES[:limit] if limit else SENTENCES
    for i, text in enumerate(sentences):
        voice, wpm = VOICES[i % len(VOICES)]
        clean = speak(text, voice, wpm)
        if "clean" in subsets:
            clips.append(Clip(f"{i:02d}-clean", "clean", text, voice, clean))
        for snr in (15, 5):
            if f"{snr}dB" in subsets:
                kind = NOISE_KINDS[i % len(NOISE_KINDS)]
                clips.append(Clip(f"{i:02d}-{snr}dB-{kind}", f"{snr}dB", text, voice,
                                  mix(clean, kind, snr, seed=1000 * snr + i)))
    if "noise" in subsets:
        for j, kind in enumerate(NOISE_ONLY):
            clips.append(Clip(f"noise-{kind.replace(' ', '-')}", "noise", "", "", _noise_only(kind, seed=j)))
    return clips


def russian_clip() -> tuple[str, tuple[str, ...], np.ndarray]:
    """A Russian question from espeak-ng's Russian voice, with the words it must contain."""
    text, keys = RUSSIAN
    return text, keys, speak(text, "ru", 140)
