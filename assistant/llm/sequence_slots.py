"""Which llama.cpp sequence a new request takes: the one holding its prefix, else one beside the busy ones.

Why a rule of its own: the choice decides both how much of a prompt is prefilled again (a
finished sequence keeps its KV cells for the next turn of its conversation) and how fast every
running request decodes. With one KV stream per sequence, llama.cpp computes each run of
consecutive sequence ids in a decode step separately: 4 requests on sequences 0, 5, 6 and 7
took 66 ms a step against 55 ms for 8 requests on 0-7 (SmolLM2-135M, 2 cores).

A prompt's opening is often held elsewhere: every conversation of a server starts with the same
system prompt, and the voice dialog's end-of-turn probe repeats the conversation's. The sequence
a request takes keeps what it shares with the prompt, and when another sequence (busy or not)
holds a longer shared prefix, that sequence's KV is copied over first. On 2 cores a copy of a
whole sequence cost 8-10 ms; a 52-token prompt took 311 ms to its first token prefilled whole and
126 ms with its 39-token opening copied (Qwen2.5-0.5B; SmolLM2-135M 120 against 51 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from assistant.llm.prefix import common_prefix

MIN_REUSE = 16  # a shorter common prefix (the system prompt alone) does not justify evicting a conversation
MIN_COPY = 8  # copying a sequence's KV costs about what prefilling 4-5 tokens does on the smallest model here


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


class Placement(NamedTuple):
    """Where a request goes: its sequence, how many prompt tokens that sequence holds once placed,
    and the sequence to copy the KV from first (None: the sequence's own cells are kept)."""

    slot: Slot
    reuse: int
    source: Slot | None = None


def pick_slot(slots: list[Slot], model: Any, prompt: list[int], adapter: Any, *,
              prefix_reuse: bool) -> Placement:
    """The free sequence of `model` holding the longest prefix of `prompt` (computed with the same
    adapter); else the free sequence that keeps the busy ones consecutive, the least recently used
    among those, keeping the prefix it shares with the prompt or taking a longer one from any other
    sequence (module docstring). At least one sequence must be free."""
    free = [slot for slot in slots if not slot.busy and slot.model is model]
    held = [(slot, min(common_prefix(slot.tokens, prompt), len(prompt) - 1)) for slot in slots
            if prefix_reuse and slot.model is model and slot.adapter is adapter and slot.tokens]
    best, reuse = None, 0
    for slot, n in held:
        if not slot.busy and n > reuse and n * 2 >= len(slot.tokens):  # never gut a conversation for its opening
            best, reuse = slot, n
    if best is not None and reuse >= MIN_REUSE:
        return Placement(best, reuse)
    busy = {slot.seq for slot in slots if slot.busy and slot.model is model}
    taken = min(free, key=lambda slot: (runs_added(busy, slot.seq), slot.used))
    own = next((n for slot, n in held if slot is taken), 0)
    source, copied = None, 0
    for slot, n in held:
        if slot is not taken and n > copied:
            source, copied = slot, n
    if source is not None and copied >= own + MIN_COPY:
        return Placement(taken, copied, source)
    return Placement(taken, own)


def runs_added(busy: set[int], seq: int) -> int:
    """How many more runs of consecutive busy sequences there are once `seq` is busy too: 1 for a
    sequence apart from the others, 0 beside one run, -1 where it joins two (0 when none is busy)."""
    if not busy:
        return 0
    return 1 - (seq - 1 in busy) - (seq + 1 in busy)


def tokens_per_sequence(context_tokens: int) -> int:
    """A sequence's KV size: the token budget plus the next token, in llama.cpp's 256-cell blocks."""
    return -(-(context_tokens + 1) // 256) * 256
