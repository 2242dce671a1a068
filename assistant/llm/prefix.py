"""Token-prefix arithmetic shared by both engines' prefix reuse.

Why a module of its own: `prefix_cache` imports torch, and the llama.cpp engine must not
(importing torch costs seconds and loads its OpenMP runtime before ours is configured).
"""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the shared beginning of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
