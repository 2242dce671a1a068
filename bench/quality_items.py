"""The answer-quality evaluation's items: facts, earlier turns, short instructions, open prompts.

Each item is a conversation (earlier turns given as they were said) and a check on the
answer. Checks are deliberately lenient about wording and strict about the content: the
question is whether a user would accept the answer, not whether it matches a reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    kind: str  # "fact", "memory", "instruction" or "open"
    turns: tuple[str, ...]  # user turns; the model answers each, the last one is scored
    check: Callable[[str], bool]


def has(*words: str) -> Callable[[str], bool]:
    return lambda answer: all(re.search(rf"\b{re.escape(w)}\b", answer, re.IGNORECASE) for w in words)


def any_of(*words: str) -> Callable[[str], bool]:
    return lambda answer: any(re.search(rf"\b{re.escape(w)}\b", answer, re.IGNORECASE) for w in words)


def words(answer: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", answer)


def sentences(answer: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", answer) if len(words(s)) >= 3]


def one_word(expected: str) -> Callable[[str], bool]:
    return lambda answer: len(words(answer)) <= 2 and has(expected)(answer)


def only_number(expected: str) -> Callable[[str], bool]:
    return lambda answer: answer.strip().rstrip(".") == expected


def one_sentence(topic: str) -> Callable[[str], bool]:
    return lambda answer: len(sentences(answer)) == 1 and has(topic)(answer)


def comma_list(n: int) -> Callable[[str], bool]:
    return lambda answer: len([p for p in answer.strip().rstrip(".").split(",") if p.strip()]) == n


ITEMS: list[Item] = [
    Item("fact", ("What is the capital of France?",), has("Paris")),
    Item("fact", ("What is the capital of Japan?",), has("Tokyo")),
    Item("fact", ("What is the capital of Australia?",), has("Canberra")),
    Item("fact", ("Which planet is the largest in our solar system?",), has("Jupiter")),
    Item("fact", ("What is the chemical symbol for gold?",), has("Au")),
    Item("fact", ("Who wrote Romeo and Juliet?",), has("Shakespeare")),
    Item("fact", ("How many days are there in a leap year?",), has("366")),
    Item("fact", ("At what temperature in Celsius does water boil at sea level?",), has("100")),
    Item("memory", ("My name is Dana and I run a book club on Thursdays.", "Which day is my book club?"),
         any_of("Thursday", "Thursdays")),
    Item("memory", ("My name is Dana and I run a book club on Thursdays.", "What is my name?"), has("Dana")),
    Item("memory", ("I have two cats called Milo and Luna.", "What are my cats called?"), has("Milo", "Luna")),
    Item("memory", ("I moved to Lisbon last year for work.", "Can you remind me which city I live in?"),
         has("Lisbon")),
    Item("memory", ("My favourite colour is green.", "Thanks. What is the weather like on Mars?",
                    "What did I say my favourite colour was?"), has("green")),
    Item("memory", ("I'm allergic to peanuts.", "Should I eat a peanut butter sandwich?"),
         any_of("no", "not", "avoid", "shouldn't", "allergic", "allergy")),
    Item("memory", ("My sister Ana turns 30 next week.", "How old will my sister be?"), any_of("30", "thirty")),
    Item("instruction", ("Answer with one word: what colour is the sky on a clear day?",), one_word("blue")),
    Item("instruction", ("Reply with only the number: what is 7 times 8?",), only_number("56")),
    Item("instruction", ("List exactly three fruits, separated by commas, and nothing else.",), comma_list(3)),
    Item("instruction", ("How do you say 'thank you' in French? Answer in one word.",), one_word("merci")),
    Item("instruction", ("Answer yes or no: is the Sun a star?",), lambda a: a.strip().lower().startswith("yes")),
    Item("instruction", ("Write exactly one sentence about dogs.",), one_sentence("dogs")),
    Item("instruction", ("Reply in capital letters only: say good morning.",),
         lambda a: "GOOD MORNING" in a and a == a.upper()),
    Item("open", ("Tell me about the ocean.",), lambda a: len(words(a)) >= 10),
    Item("open", ("Describe your favourite food.",), lambda a: len(words(a)) >= 10),
    Item("open", ("Give me some tips for sleeping better.",), lambda a: len(words(a)) >= 10),
]


def repeated_sentences(answer: str) -> int:
    """How many sentences of the answer say again what an earlier one said (normalised)."""
    seen: set[str] = set()
    repeats = 0
    for sentence in sentences(answer):
        key = " ".join(w.lower() for w in words(sentence))
        if key in seen:
            repeats += 1
        seen.add(key)
    return repeats
