"""Which llama.cpp sequence a new request takes: the one holding its prefix, else one beside the busy ones.

Why a rule of its own: the choice decides both how much of a prompt is prefilled again (a
finished sequence keeps its KV cells for the next turn of its conversation) and how fast every
running request decodes. With one KV stream per sequence, llama.cpp computes each run of
consecutive sequence ids in a decode step separately: 4 requests on sequences 0, 5, 6 and 7
took 66 ms a step against 55 ms for 8 requests on 0-7 (SmolLM2-135M, 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistant.llm.prefix import common_prefix

MIN_REUSE = 16  # a shorter common prefix (the system prompt alone) does not justify evicting a conversation


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence of one model's context: the tokens whose KV it holds and the adapter
    they were computed with."""

    seq: int
    model: Any  # the GgufModel whose context holds this sequence
    tokens: list[int] = field(default_factory=list)
    adapter: Any = None
    used: float = 0.0
    busy: bool = False


def pick_slot(slots: list[Slot], model: Any, prompt: list[int], adapter: Any, *,
              prefix_reuse: bool) -> tuple[Slot, int]:
    """The free sequence of `model` holding the longest prefix of `prompt` (computed with the same
    adapter), and how many prompt tokens it covers; else (reusing nothing) the free sequence that
    keeps the busy ones consecutive, the least recently used among those. At least one must be free."""
    free = [slot for slot in slots if not slot.busy and slot.model is model]
    best, reuse = None, 0
    if prefix_reuse:
        for slot in free:
            if slot.adapter is adapter and slot.tokens:
                n = min(common_prefix(slot.tokens, prompt), len(prompt) - 1)
                if n > reuse and n * 2 >= len(slot.tokens):  # never gut a conversation for its opening
                    best, reuse = slot, n
    if best is not None and reuse >= MIN_REUSE:
        return best, reuse
    busy = {slot.seq for slot in slots if slot.busy and slot.model is model}
    return min(free, key=lambda slot: (runs_added(busy, slot.seq), slot.used)), 0


def runs_added(busy: set[int], seq: int) -> int:
    """How many more runs of consecutive busy sequences there are once `seq` is busy too: 1 for a
    sequence apart from the others, 0 beside one run, -1 where it joins two (0 when none is busy)."""
    if not busy:
        return 0
    return 1 - (seq - 1 in busy) - (seq + 1 in busy)


def tokens_per_sequence(context_tokens: int) -> int:
    """A sequence's KV size: the token budget plus the next token, in llama.cpp's 256-cell blocks."""
    return -(-(context_tokens + 1) // 256) * 256
