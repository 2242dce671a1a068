"""Choosing the next token from one row of logits: greedy, seeded sampling, repetition guard.

Kept apart from the engine so the rule is one pure function of (logits, the answer so far,
options, random generator): greedy answers stay reproducible with the guard on, and a seeded
request gives the same answer whoever else is being served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from assistant.llm.base import GenerationOptions
from assistant.llm.repetition import banned_tokens, penalised_tokens


def guarded(options: GenerationOptions) -> bool:
    return options.repetition_penalty != 1.0 or options.no_repeat_ngram > 0


def apply_guard(row: npt.NDArray[np.float32], generated: Sequence[int], options: GenerationOptions) -> None:
    """Penalise and forbid repeats in `row` (a private copy) in place."""
    if options.repetition_penalty != 1.0 and generated:
        index = np.asarray(penalised_tokens(generated), dtype=np.int64)
        values = row[index]
        row[index] = np.where(values > 0, values / options.repetition_penalty, values * options.repetition_penalty)
    banned = banned_tokens(generated, options.no_repeat_ngram)
    if banned and len(banned) < row.shape[0]:
        row[np.asarray(banned, dtype=np.int64)] = -np.inf


def choose_token(logits: npt.NDArray[np.float32], generated: Sequence[int], options: GenerationOptions,
                 rng: np.random.Generator | None) -> int:
    if options.temperature <= 0 and not guarded(options):
        return int(np.argmax(logits))
    row = np.array(logits, dtype=np.float32)
    if guarded(options):
        apply_guard(row, generated, options)
    if options.temperature <= 0:
        return int(np.argmax(row))
    scaled = (row - row.max()) / options.temperature
    probs = np.exp(scaled, dtype=np.float64)
    probs /= probs.sum()
    if options.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        keep = np.cumsum(sorted_probs) - sorted_probs < options.top_p
        probs = np.zeros_like(probs)
        probs[order[keep]] = sorted_probs[keep]
        probs /= probs.sum()
    generator = rng if rng is not None else np.random.default_rng()
    return int(generator.choice(probs.shape[0], p=probs))
