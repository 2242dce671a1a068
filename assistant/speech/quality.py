"""Which whisper model serves which language, and how well it hears: for `assistant models list`.

The figures are measured, not promised: word error rates of the product path (VAD trim,
whisper.cpp with the shipped `[speech]` options) on the espeak-ng evaluation set
(`python -m bench.bench_speech`, bench/results/speech.md), clean / 15 dB / 5 dB SNR. Update
them when the defaults or the models change.
"""

from __future__ import annotations

from assistant.config import SpeechConfig

LANGUAGES = {"tiny.en": "English only", "base.en": "English only", "tiny": "99 languages (incl. ru)",
             "base": "99 languages (incl. ru)", "small": "99 languages (incl. ru)"}
# model -> (WER clean, 15 dB, 5 dB) measured by bench/bench_speech.py; see bench/results/speech.md.
# The 2026-12-06 run on all 36 sentences, idle AVX2 machine (English espeak-ng voices).
MEASURED_WER: dict[str, tuple[float, float, float]] = {"tiny.en": (0.198, 0.253, 0.568), "base": (0.214, 0.272, 0.541)}


def default_whisper_name(speech: SpeechConfig) -> str:
    """tiny.en for English (fast), multilingual base for any other language."""
    return "tiny.en" if speech.language.lower() in ("en", "en_us", "en-us", "en_gb", "en-gb") else "base"


def serves(speech: SpeechConfig, name: str) -> str:
    """What this config sends to `name`, and whether it is the model in use now."""
    if speech.whisper_model != "auto":
        return f"serves every language (speech.whisper_model), in use for {speech.language!r}" \
            if speech.whisper_model == name else ""
    in_use = f", in use for speech.language = {speech.language!r}" if default_whisper_name(speech) == name else ""
    if name == "tiny.en":
        return "serves English (speech.whisper_model = \"auto\")" + in_use
    if name == "base":
        return "serves every other language and \"auto\" (speech.whisper_model = \"auto\")" + in_use
    return ""


def describe(speech: SpeechConfig, name: str) -> str:
    """One line: languages, what this config uses it for, measured WER."""
    parts = [LANGUAGES.get(name, "")]
    parts.append(serves(speech, name))
    if name in MEASURED_WER:
        clean, mid, low = MEASURED_WER[name]
        parts.append(f"WER {clean:.2f} clean / {mid:.2f} at 15 dB / {low:.2f} at 5 dB (bench/results/speech.md)")
    return "; ".join(p for p in parts if p)
