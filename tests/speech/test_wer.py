from assistant.speech.wer import normalize, wer, word_errors


def test_normalize_ignores_case_punctuation_and_apostrophes() -> None:
    assert normalize("It's FINE, isn't it?") == ["its", "fine", "isnt", "it"]
    assert normalize("well-known") == ["well", "known"]


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
