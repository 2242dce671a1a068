"""Word error rate, for judging recognition on a known script (tests and benchmarks).

Normalisation removes what a listener would not count as an error, the same way on both
sides: case, punctuation, contractions ("what's" = "what is"), British/American "ise/ize",
and numbers written as digits or words ("5:30" = "five thirty", "100 dollars" = "$100",
"twelve" = "12"): whisper writes "Remind me at 5.30" for "five thirty", which is right.
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


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"), (100, "hundred"))
_CONTRACTIONS = (("won't", "will not"), ("can't", "can not"), ("cannot", "can not"), ("n't", " not"),
                 ("let's", "let us"), ("'re", " are"), ("'ll", " will"), ("'ve", " have"), ("'m", " am"),
                 ("'d", " would"), ("it's", "it is"), ("that's", "that is"), ("what's", "what is"),
                 ("there's", "there is"), ("here's", "here is"), ("who's", "who is"), ("where's", "where is"),
                 ("how's", "how is"), ("he's", "he is"), ("she's", "she is"))
_SPELLING = {"ok": "okay", "summarize": "summarise", "organize": "organise", "favorite": "favourite",
             "color": "colour", "center": "centre", "theater": "theatre", "mr": "mister", "dr": "doctor",
             "percent": "per cent", "o'clock": "", "oclock": ""}
_NUMBER = re.compile(r"(?<![\w.])([$£€]?)(\d+(?:,\d{3})*)(?:([.:])(\d+))?(%|st|nd|rd|th)?(?!\w)")
_CURRENCY = {"$": "dollars", "£": "pounds", "€": "euros"}
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """Cardinal in words, without "and" ("one hundred five"), the form both sides are mapped to."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            return f"{number_words(n // value)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = _ORDINALS.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return f"{head} {last}".strip()


def _spell_number(match: re.Match[str]) -> str:
    currency, whole, sep, frac, suffix = match.groups()
    words = number_words(int(whole.replace(",", "")))
    if sep == ":" or (sep == "." and frac and len(frac) == 2 and not currency and int(whole) <= 12):
        words += " " + ("oh " + number_words(int(frac)) if frac.startswith("0") and frac != "00"
                        else "" if frac == "00" else number_words(int(frac)))  # 5:30, 5.30 (a time)
    elif sep == ".":
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix in ("st", "nd", "rd", "th"):
        words = _ordinal(words)
    elif suffix == "%":
        words += " per cent"
    if currency:
        words += " " + _CURRENCY[currency]
    return f" {words} "


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation, contractions expanded, numbers spelled out."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    for short, long in _CONTRACTIONS:
        text = re.sub(("" if short[0] in "'n" else r"\b") + re.escape(short) + r"\b", long, text)
    text = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", text)
    text = _NUMBER.sub(_spell_number, text).replace("-", " ")
    text = _PUNCT.sub(" ", text).replace("'", "")
    words: list[str] = []
    for word in text.split():
        words.extend(_SPELLING.get(word, word).split())
    # "one hundred and five" = "one hundred five"; "a hundred" = "one hundred"
    out: list[str] = []
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word == "and" and out and out[-1] in _NUMBER_WORDS and nxt in _NUMBER_WORDS:
            continue
        if word == "a" and nxt in ("hundred", "thousand", "million"):
            word = "one"
        out.append(word)
    return out


_NUMBER_WORDS = frozenset(_ONES) | frozenset(_TENS[2:]) | {name for _, name in _SCALES}


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
