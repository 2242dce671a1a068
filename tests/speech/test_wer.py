from assistant.speech.wer import normalize, wer, word_errors


def test_normalize_ignores_case_punctuation_and_contractions() -> None:
    assert normalize("It's FINE, isn't it?") == ["it", "is", "fine", "is", "not", "it"]
    assert normalize("What's up? I can't, she's busy.") == normalize("what is up i cannot she is busy")
    assert normalize("well-known") == ["well", "known"]
    assert normalize("John's dog") == ["johns", "dog"]


def test_numbers_count_the_same_as_digits_or_words() -> None:
    """whisper writes "5.30" for "five thirty" and "$100" for "one hundred dollars": not errors."""
    same = [("Remind me at 5.30.", "remind me at five thirty"), ("What is 12 times 8?", "what is twelve times eight"),
            ("Convert $100 to euros.", "convert one hundred dollars to euros"),
            ("one hundred and five", "105"), ("a hundred", "100"), ("7:05 a.m.", "seven oh five am"),
            ("the 3rd, 21st", "the third twenty first"), ("1,500 people", "one thousand five hundred people"),
            ("2.5%", "two point five per cent"), ("OK, summarize", "okay summarise")]
    for written, spoken in same:
        assert normalize(written) == normalize(spoken), written
    assert normalize("15") != normalize("50")
    assert word_errors("at five thirty", "at 5.13") == (1, 3)


def test_word_errors_counts_substitutions_insertions_deletions() -> None:
    assert word_errors("a b c d", "a b c d") == (0, 4)
    assert word_errors("a b c d", "a x c d") == (1, 4)
    assert word_errors("a b c d", "a c d") == (1, 4)
    assert word_errors("a b c d", "a b c d e f") == (2, 4)
    assert word_errors("the cat sat", "") == (3, 3)


def test_wer_of_empty_reference() -> None:
    assert wer("", "") == 0.0
    assert wer("", "words") == 1.0
    assert wer("Hello there.", "hello there") == 0.0
