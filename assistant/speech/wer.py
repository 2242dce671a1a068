"""Word error rate, for judging recognition on a known script (tests and benchmarks).

Normalisation removes what a listener would not count as an error: case, punctuation, and
spelling of a few common contractions, so "It's fine." matches "its fine".
"""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[^\w\s']")

# A short, varied script for round-trip checks (Piper speaks it, whisper must hear it back).
ROUND_TRIP_SENTENCES = (
    "The weather is lovely today, so let's go for a walk.",
    "Please remind me to call my sister tomorrow morning.",
    "How many people live in the largest city in the country?",
    "I would like a cup of coffee with milk and no sugar.",
    "Turn off the lights in the kitchen and lock the front door.",
    "Can you tell me a short story about a brave little dog?",
)


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; apostrophes dropped, hyphens split words."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("-", " ")
    text = _PUNCT.sub(" ", text).replace("'", "")
    return text.split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count), by word-level edit distance."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / words if words else float(bool(normalize(hypothesis)))
