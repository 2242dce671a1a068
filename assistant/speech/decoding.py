"""How a clip is decoded: the options every call carries, and the checks that refuse a bad decode.

Why options travel with every call: pywhispercpp keeps any parameter set on one call for all
later calls on the same model, and the bot shares one model between voice messages and live
voice. So nothing is left to "whatever was set last": each call builds the complete
parameter set from `RecognitionOptions` (made once from `[speech]`).

The checks follow openai-whisper and faster-whisper: a decode fails when its text compresses
too well (a loop), its average log-probability is too low (a guess), or the window is probably
not speech; a failed decode is retried at a higher temperature. whisper.cpp does the retry
itself with token entropy in place of the compression ratio, but only for decodes of more
than 32 tokens; short clips loop too ("The library opens at five. The library opens at
five."), so the compression ratio and a repeated-phrase check run here on every transcript.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

from assistant.config import SpeechConfig

FULL_WINDOW_FRAMES = 1500  # whisper's encoder window: 30 s in 20 ms frames
FRAMES_PER_SECOND = 50
AUDIO_CTX_MIN = 128  # below ~2.5 s of context whisper starts to drop words
# A clip under SHORT_CLIP_S gets at least SHORT_CLIP_CTX frames. A short utterance (one or two words,
# 1.2-1.7 s once trimmed with its padding) in a 128-frame window came back said three times ("Yeah.
# Yeah. Yeah.", "Stop. Stop. Stop.") in 23 of 72 clips (Piper and espeak-ng), and took twice as
# long (the repeats fail the checks and are decoded again); with 256 frames 3 were wrong, all "Mhm",
# which whisper does not know as a word. Longer clips hold several words, and there a window of the clip's
# own length costs no accuracy on the evaluation set (`bench/results/speech.md`): its clips are
# 2.4-4 s long, and 256 frames changed one of the three under 2.5 s (at 5 dB) for the worse.
SHORT_CLIP_S = 2.0
SHORT_CLIP_CTX = 256
TOKENS_PER_SECOND_CAP = 10
MIN_REPEAT_WORDS = 3  # a phrase of this many words said again in one short clip is a loop, not speech
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class RecognitionOptions:
    """Everything that decides how a clip is decoded (defaults and meaning: `[speech]` in config.toml)."""

    language: str = "en"
    beam_size: int = 1
    best_of: int = 5
    temperature_increment: float = 0.2
    entropy_threshold: float = 2.4
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    compression_ratio_threshold: float = 2.4
    audio_ctx_margin: int | str = "auto"  # -1: the full 30 s window; "auto": `margin_for` the model

    @classmethod
    def from_config(cls, speech: SpeechConfig) -> RecognitionOptions:
        return cls(language=speech.language, beam_size=speech.beam_size, best_of=speech.best_of,
                   temperature_increment=speech.temperature_increment,
                   entropy_threshold=speech.entropy_threshold, logprob_threshold=speech.logprob_threshold,
                   no_speech_threshold=speech.no_speech_threshold,
                   compression_ratio_threshold=speech.compression_ratio_threshold,
                   audio_ctx_margin=speech.audio_ctx_margin)


def margin_for(model: str, margin: int | str) -> int:
    """The encoder frames beyond a clip for `speech.audio_ctx_margin`; "auto" by model size.

    Why by size: on the evaluation set (bench/results/speech.md) a 16-frame margin cost tiny.en
    nothing (WER 0.198 / 0.237 / 0.564 against 0.198 / 0.253 / 0.568 with 64) and took a 3 s clip
    from 224 to 176 ms, while base lost ~6 words in 290 on clean speech with it (0.233 against 0.214).
    """
    if margin != "auto":
        return int(margin)
    return 16 if model.lower().startswith("tiny") else 64


def audio_ctx_for(seconds: float, *, margin: int = 64) -> int:
    """Encoder frames for a clip: its length in 20 ms frames plus margin, within [128, 1500]
    (at least 256 for a clip under 2 s: SHORT_CLIP_CTX).

    Returns 0 (whisper.cpp's "full window") for a negative margin and for clips of ~30 s,
    where it is the same.
    """
    if margin < 0:
        return 0
    frames = math.ceil(seconds * FRAMES_PER_SECOND) + margin
    if frames >= FULL_WINDOW_FRAMES:
        return 0
    return max(SHORT_CLIP_CTX if seconds < SHORT_CLIP_S else AUDIO_CTX_MIN, frames)


def max_tokens_for(seconds: float) -> int:
    """A cap far above real speech (~5 tokens/s) that stops a repetition loop from running for seconds."""
    return math.ceil(seconds * TOKENS_PER_SECOND_CAP) + 16


def whisper_params(options: RecognitionOptions, *, language: str, threads: int, audio_ctx: int,
                   max_tokens: int = 0, temperature: float = 0.0, fallback: bool = True) -> dict[str, Any]:
    """Every decoding parameter we rely on, passed on every call (pywhispercpp keeps them otherwise).

    A clip-sized window holds the whole clip, so it is decoded as one segment: otherwise
    whisper.cpp seeks past the first segment into the padding and decodes again, which
    repeats the sentence and sometimes loops to the token limit (seconds wasted).

    `suppress_regex` and `initial_prompt` are never passed, not even as "": pywhispercpp stores ""
    as a non-null empty string, and whisper.cpp then compiles the regex and matches it against
    all 51,864 tokens at every decoding step (190 of 340 ms for a 4 s clip with tiny.en). Never
    set, they stay null (whisper.cpp's default), which is what we want on every call.
    """
    import _pywhispercpp as pw

    beam = options.beam_size > 1
    strategy = pw.whisper_sampling_strategy
    return {
        "language": language, "detect_language": False, "translate": False,
        "n_threads": threads, "audio_ctx": audio_ctx,
        "no_context": True, "single_segment": audio_ctx != 0, "no_timestamps": False, "token_timestamps": False,
        "strategy": strategy.WHISPER_SAMPLING_BEAM_SEARCH if beam else strategy.WHISPER_SAMPLING_GREEDY,
        "beam_search": {"beam_size": options.beam_size if beam else -1, "patience": -1.0},
        "greedy": {"best_of": options.best_of},
        "temperature": temperature, "temperature_inc": options.temperature_increment if fallback else 0.0,
        "entropy_thold": options.entropy_threshold, "logprob_thold": options.logprob_threshold,
        "no_speech_thold": options.no_speech_threshold, "length_penalty": -1.0, "max_initial_ts": 1.0,
        "suppress_blank": True, "suppress_nst": True, "carry_initial_prompt": False, "offset_ms": 0, "duration_ms": 0,
        "max_len": 0, "split_on_word": False, "max_tokens": max_tokens, "tdrz_enable": False, "vad": False,
        "print_progress": False, "print_realtime": False, "print_timestamps": False, "print_special": False,
    }


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes, as openai-whisper measures it: ~1.0-1.8 for speech, >2.4 for loops."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def first_repeat(text: str, n: int = MIN_REPEAT_WORDS) -> int | None:
    """Index (in words) where the text starts saying an earlier phrase of `n`+ words again, or None.

    Why a phrase and not a sentence: hallucinated loops often restart mid-sentence ("... and
    closes at five. The library opens at five.").
    """
    words = _words(text)
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen and seen[gram] + n <= i:
            return i
        seen.setdefault(gram, i)
    return None


def is_repetitive(text: str, options: RecognitionOptions) -> bool:
    return first_repeat(text) is not None or compression_ratio(text) > options.compression_ratio_threshold


def cut_repeats(text: str) -> str:
    """The text up to where it starts repeating itself (the refusal when a retry loops too)."""
    at = first_repeat(text)
    if at is None:
        return text
    spans = [m.span() for m in _WORD.finditer(text)]
    return text[: spans[at][0]].rstrip(" ,;:-")
