"""The streaming sentence splitter: boundaries, abbreviations, and independence from chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.speech.sentences import SentenceSplitter, speakable, split_sentences, stream_sentences


@pytest.mark.parametrize("text, expected", [
    ("Hello there. How are you? I am fine!", ["Hello there.", "How are you?", "I am fine!"]),
    ("Dr. Smith said e.g. this works. It costs 3.5 dollars.",
     ["Dr. Smith said e.g. this works.", "It costs 3.5 dollars."]),
    ("Wait... what? Well... maybe.", ["Wait... what?", "Well... maybe."]),
    ("It ended... Then we left.", ["It ended...", "Then we left."]),
    ("Lists:\n1. Buy milk\n2. Eat it", ["Lists:", "1. Buy milk", "2. Eat it"]),
    ("J. R. R. Tolkien wrote it. He said \"hi.\" Then left.",
     ["J. R. R. Tolkien wrote it.", "He said \"hi.\"", "Then left."]),
    ("Version 2.0 is out.\n\nNew paragraph", ["Version 2.0 is out.", "New paragraph"]),
    ("no punctuation at the end", ["no punctuation at the end"]),
    ("", []),
])
def test_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_a_sentence_is_released_as_soon_as_the_next_character_arrives() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("It costs 3.") == []  # may still become 3.5
    assert splitter.feed("5 dollars.") == []
    assert splitter.feed(" Next") == ["It costs 3.5 dollars."]
    assert splitter.flush() == ["Next"]
    assert splitter.flush() == []


def test_a_long_run_without_punctuation_is_cut_at_a_comma() -> None:
    text = "word " * 30 + ", " + "more " * 80
    pieces = split_sentences(text)
    assert len(pieces) >= 2 and all(len(p) <= 300 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_speakable_strips_markdown_and_links() -> None:
    assert speakable("**Bold** and `code`, see https://example.com/x?y=1 now") == "Bold and code, see link now"


@pytest.mark.parametrize("text, expected", [
    ("The capital of France, as you know, is Paris. It is big, and old.",
     ["The capital of France,", "as you know, is Paris.", "It is big, and old."]),
    ("Yes, it is. Sure.", ["Yes, it is.", "Sure."]),  # too few words before the comma
    ("We sold 1,000 of them; nobody complained.", ["We sold 1,000 of them;", "nobody complained."]),
    ("Three words here: and a list.", ["Three words here:", "and a list."]),
    ("The capital city of France is Paris. It is big.", ["The capital city of France", "is Paris.", "It is big."]),
    ("The answer is two.", ["The answer is two."]),  # only two words before "is"
    ("Their island home is far.", ["Their island home", "is far."]),  # "island" is not "is"
])
def test_the_first_piece_may_end_at_a_clause_break(text: str, expected: list[str]) -> None:
    assert split_sentences(text, first_clause_words=3) == expected


@pytest.mark.parametrize("text, expected", [
    ("The capital city of France is Paris.", ["The capital city", "of France is Paris."]),
    ("There are 7 days in a week.", ["There are 7 days", "in a week."]),
    ("Go to bed.", ["Go to bed."]),  # one word before "to": too short a piece
    ("The sky on a clear day is blue.", ["The sky on a clear day", "is blue."]),
])
def test_with_the_default_two_words_a_preposition_opens_the_second_piece(text: str, expected: list[str]) -> None:
    """A long first sentence with no "is" or comma early would make the voice wait for all of it."""
    assert split_sentences(text, first_clause_words=2) == expected
    splitter = SentenceSplitter(first_clause_words=3)
    assert splitter.feed("One two three,") == []  # "three,000" is still possible
    assert splitter.feed(" four") == ["One two three,"]
    splitter = SentenceSplitter(first_clause_words=3)
    assert splitter.feed("My three cats i") == []  # "i" may become "is" or "inside"
    assert splitter.feed("s") == []
    assert splitter.feed("land") == []
    assert splitter.feed(" is") == []
    assert splitter.feed(" far.") == ["My three cats island"]


_words = st.sampled_from(["Hello", "there", "Dr.", "e.g.", "3.5", "it", "ends.", "why?", "wow!", "Then",
                          "...", "I", "\n", "J.", "Smith", "U.S.", "ok", "\"yes.\"", "1.", "x", "so,", "1,000",
                          "well;", "—", "note:", "is", "island", "And", "in", "into", "of"])


@settings(max_examples=200, deadline=None)
@given(words=st.lists(_words, max_size=40), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
       first_clause_words=st.sampled_from([0, 1, 3]))
def test_chunking_never_changes_the_sentences_and_loses_no_text(words: list[str], cuts: list[int],
                                                                 first_clause_words: int) -> None:
    text = " ".join(words)
    whole = split_sentences(text, first_clause_words=first_clause_words)
    splitter = SentenceSplitter(first_clause_words=first_clause_words)
    streamed: list[str] = []
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    for a, b in zip(points, points[1:]):
        streamed += splitter.feed(text[a:b])
    streamed += splitter.flush()
    assert streamed == whole
    assert " ".join(whole).split() == text.split()


async def test_stream_sentences_from_an_async_iterator() -> None:
    async def deltas():
        for piece in ["Hi", " there.", " Bye", " now."]:
            yield piece

    assert [s async for s in stream_sentences(deltas())] == ["Hi there.", "Bye now."]
