"""Cut a stream of text deltas into sentences as soon as each one is certainly finished.

Why: speech that waits for the whole reply starts seconds late. Handing Piper each sentence
the moment it ends lets the first one play while the model is still writing the rest.

"Certainly finished" is the hard part with a token stream: "Dr." or "e.g." is not an end,
"3." may be "3.5", "..." may trail into the same sentence. So a sentence is only released
once the character after its punctuation has arrived (a space, a newline, a capital), and
never depends on how the text was chopped into deltas: the same text gives the same
sentences whatever the chunking (a property the tests fuzz).

For live speech the first piece matters most: with `first_clause_words`, the first piece may
also end at a clause break (", " "; " ": " " — ") once it has that many words, or just before a
word that starts a new phrase ("is", "and", "which" ...: "Paris, the capital | is ..."), or,
with one word more, before a preposition ("The capital city | of France is Paris."), so the
voice starts after a few words instead of after the whole sentence, at a point where a speaker
could pause. (In the voice bench the first piece waited for 5-8 generated words, ~250 ms on
this CPU, before prepositions counted.) Later pieces are whole sentences, which Piper phrases best.
"""

from __future__ import annotations

import re
from typing import AsyncIterator, Iterable

TERMINALS = ".!?…。！？"
CLOSERS = "\"'”’»)]"
# Words that end with a dot without ending the sentence (compared lower-case, without the final dot).
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "vs", "no", "approx", "fig",
    "cf", "mt", "inc", "ltd", "co", "dept", "est", "vol", "ca", "a.m", "p.m", "u.s", "u.k",
})
CLAUSE_BREAKS = ",;:—"
# Words before which an English sentence can pause naturally (subject | predicate, clause | clause).
PHRASE_STARTERS = frozenset({
    "is", "are", "was", "were", "has", "have", "had", "will", "would", "can", "could", "should",
    "and", "but", "or", "because", "which", "who", "that", "so", "if", "when", "where", "while",
})
# Words that open a prepositional phrase: a natural pause too, once the piece has a few words
# ("There are 7 days | in a week"), so the voice need not wait for the end of a long sentence.
PREPOSITIONS = frozenset({"in", "on", "at", "of", "for", "with", "to", "from", "about", "by", "after", "before",
                          "during", "into", "through", "than"})
_WORD_AT = re.compile(r"[A-Za-z']+")
MAX_CHARS = 300  # a "sentence" with no punctuation is cut here, at a comma or space, so speech still starts
_MARKDOWN = re.compile(r"(\*\*|__|\*|`+|^#+\s*|^\s*[-*+]\s+|^>\s*)", re.MULTILINE)
_URL = re.compile(r"https?://\S+")


def speakable(text: str) -> str:
    """Text as it should be read aloud: markdown marks and URLs removed, whitespace collapsed."""
    text = _URL.sub("link", text)
    text = _MARKDOWN.sub("", text)
    return " ".join(text.split())


def _word_before(buf: str, i: int) -> str:
    head = buf[:i].rstrip()
    return head.split()[-1] if head.split() else ""


def _is_boundary(buf: str, start: int, end: int, nxt: int) -> bool | None:
    """Does the punctuation run buf[start:end] end a sentence? None: wait for more text."""
    run = buf[start:end]
    if "?" in run or "!" in run or any(c in run for c in "。！？"):
        return True
    if run.startswith("..") or run.startswith("…"):
        if nxt >= len(buf):
            return None
        return buf[nxt].isupper() or buf[nxt] in "\"'“‘«"
    word = _word_before(buf, start)
    if word.strip("\"'“‘«(").lower() in ABBREVIATIONS:
        return False
    bare = word.strip("\"'“‘«(")
    if len(bare) == 1 and bare.isalpha() and bare.isupper():
        return False  # an initial: "J. Smith"
    if buf[:start].strip().isdigit():
        return False  # a list marker: "1. Buy milk"
    return True


class SentenceSplitter:
    """Feed text deltas; get back each sentence once it is finished. Call `flush()` at the end."""

    def __init__(self, max_chars: int = MAX_CHARS, *, first_clause_words: int = 0) -> None:
        self.max_chars = max_chars
        self.first_clause_words = first_clause_words  # 0: the first piece is a sentence like the rest
        self._emitted = False
        self._buf = ""
        self._pos = 0  # everything before this index has been scanned and holds no boundary

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        return self._drain()

    def flush(self) -> list[str]:
        rest, self._buf, self._pos = self._buf.strip(), "", 0
        self._emitted = False  # the next feed starts a new text
        return [rest] if rest else []

    def _emit(self, out: list[str], cut: int) -> None:
        piece = self._buf[:cut].strip()
        if piece:
            out.append(piece)
            self._emitted = True
        self._buf = self._buf[cut:].lstrip(" \t")
        self._pos = 0

    def _drain(self) -> list[str]:
        out: list[str] = []
        while True:
            found = self._scan()
            if found is None:
                break
            self._emit(out, found)
        while len(self._buf) > self.max_chars:
            window = self._buf[:self.max_chars]
            cut = max(window.rfind(", "), window.rfind("; "), window.rfind(": "))
            cut = cut + 1 if cut > 0 else window.rfind(" ")
            self._emit(out, cut if cut > 0 else self.max_chars)
        return out

    def _scan(self) -> int | None:
        """Index just past the next sentence end, or None (remembering how far it is safe to skip)."""
        buf, i = self._buf, self._pos
        while i < len(buf):
            ch = buf[i]
            if ch == "\n":
                return i + 1
            if self.first_clause_words and not self._emitted and ch in CLAUSE_BREAKS + " ":
                if i + 1 == len(buf):
                    break  # "1," may become "1,000"; the next word is unknown
                said = len(buf[:i].split())  # words of the piece so far
                if said >= self.first_clause_words:
                    if ch != " " and buf[i + 1].isspace():
                        return i + 1
                    word = _WORD_AT.match(buf, i + 1) if ch == " " else None
                    if word is not None and word.end() == len(buf):
                        break  # "is" may become "island"
                    following = word.group().lower() if word is not None else ""
                    if following in PHRASE_STARTERS or (following in PREPOSITIONS and said > self.first_clause_words):
                        return i
            if ch not in TERMINALS:
                i += 1
                continue
            end = i
            while end < len(buf) and (buf[end] in TERMINALS or buf[end] in CLOSERS):
                end += 1
            if end == len(buf):
                break  # cannot tell yet: "3." may become "3.5"
            if not buf[end].isspace():
                i = end  # "3.5", "U.S.A", "...and": inside a word
                continue
            nxt = end
            while nxt < len(buf) and buf[nxt] in " \t":
                nxt += 1
            decision = _is_boundary(buf, i, end, nxt)
            if decision is None:
                break
            if decision:
                return end
            i = end
        self._pos = i
        return None


def split_sentences(text: str, *, first_clause_words: int = 0) -> list[str]:
    """All sentences of a finished text (the streaming splitter fed at once)."""
    splitter = SentenceSplitter(first_clause_words=first_clause_words)
    return splitter.feed(text) + splitter.flush()


async def stream_sentences(deltas: AsyncIterator[str] | Iterable[str]) -> AsyncIterator[str]:
    """Sentences from an (async) iterator of text deltas, each yielded as soon as it is finished."""
    splitter = SentenceSplitter()
    if hasattr(deltas, "__aiter__"):
        async for delta in deltas:
            for sentence in splitter.feed(delta):
                yield sentence
    else:
        for delta in deltas:
            for sentence in splitter.feed(delta):
                yield sentence
    for sentence in splitter.flush():
        yield sentence
