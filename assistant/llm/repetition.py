"""The repetition guard shared by both local engines: which tokens to penalise or forbid next.

Why our own rule and not only llama.cpp's sampler: the transformers engine needs the same
guard, and a greedy answer must stay reproducible, so the guard is a pure function of the
tokens generated so far. Only the answer's own tokens count (not the prompt): a spoken answer
that repeats the user's name is fine, one that says the same sentence twice is not.
"""

from __future__ import annotations

from collections.abc import Sequence


def penalised_tokens(generated: Sequence[int], window: int = 256) -> list[int]:
    """Distinct tokens among the last `window` generated ones (each is penalised once)."""
    return sorted(set(generated[-window:]))


def banned_tokens(generated: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram the answer already contains (no-repeat n-gram rule)."""
    if n <= 0 or len(generated) < n:
        return []
    if n == 1:
        return sorted(set(generated))
    tail = tuple(generated[len(generated) - n + 1:])
    banned = {generated[i + n - 1] for i in range(len(generated) - n + 1)
              if tuple(generated[i:i + n - 1]) == tail}
    return sorted(banned)


def penalise(score: float, penalty: float) -> float:
    """llama.cpp's (and CTRL's) rule: shrink a positive logit, grow a negative one's magnitude."""
    return score / penalty if score > 0 else score * penalty
