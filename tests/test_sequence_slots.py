"""Which sequence a request takes in the llama.cpp engine: prefix first, then keeping busy ones together."""

from __future__ import annotations

from assistant.llm.sequence_slots import (MIN_COPY, MIN_REUSE, Placement, Slot, pick_slot, runs_added,
                                         tokens_per_sequence)

MODEL, OTHER = object(), object()
CONVERSATION = list(range(100, 160))


def slots(busy: set[int], used: dict[int, float] | None = None, n: int = 8) -> list[Slot]:
    return [Slot(seq, MODEL, busy=seq in busy, used=(used or {}).get(seq, 0.0)) for seq in range(n)]


def test_runs_added_counts_runs_of_consecutive_busy_sequences() -> None:
    assert runs_added(set(), 5) == 0
    assert runs_added({0}, 1) == 0 and runs_added({0}, 5) == 1
    assert runs_added({3, 5}, 4) == -1


def test_a_request_that_reuses_nothing_sits_beside_the_busy_sequences() -> None:
    # sequence 5 is the least recently used, but taking it would split the batch in two
    pool = slots({0, 1}, used={2: 9.0, 5: 1.0, 6: 2.0})
    slot, reuse, source = pick_slot(pool, MODEL, [1, 2, 3], None, prefix_reuse=True)
    assert (slot.seq, reuse, source) == (2, 0, None)
    # a gap between two busy runs is filled first
    slot = pick_slot(slots({0, 1, 3}, used={2: 9.0, 4: 1.0}), MODEL, [1, 2, 3], None, prefix_reuse=True).slot
    assert slot.seq == 2
    # nothing busy: the least recently used, whose cache is the least likely to be wanted again
    slot = pick_slot(slots(set(), used={seq: 10.0 - seq for seq in range(8)}), MODEL, [1], None,
                     prefix_reuse=True).slot
    assert slot.seq == 7


def test_the_sequence_holding_the_conversation_wins_over_keeping_together() -> None:
    pool = slots({0})
    pool[6].tokens = list(CONVERSATION)
    assert pick_slot(pool, MODEL, CONVERSATION + [7, 8], None, prefix_reuse=True) == (pool[6], len(CONVERSATION), None)
    # not with prefix reuse off, nor with another adapter's cells, nor for the opening alone
    assert pick_slot(pool, MODEL, CONVERSATION + [7], None, prefix_reuse=False)[1] == 0
    assert pick_slot(pool, MODEL, CONVERSATION + [7], object(), prefix_reuse=True)[1] == 0
    opening = CONVERSATION[:MIN_REUSE - 1] + [1, 2, 3]
    taken, reuse, source = pick_slot(pool, MODEL, opening, None, prefix_reuse=True)
    assert taken is pool[1] and taken is not pool[6], "the conversation keeps its sequence"
    assert (reuse, source) == (MIN_REUSE - 1, pool[6]), "its opening is copied, not prefilled again"


def test_only_sequences_of_the_requested_model_are_taken() -> None:
    pool = slots({0}) + [Slot(seq, OTHER) for seq in range(8)]
    pool[0].tokens = [1, 2, 3]  # a prefix in the other model's context is no use here
    assert pick_slot(pool, OTHER, [1, 2, 3, 4], None, prefix_reuse=True).source is None
    assert pick_slot(pool, OTHER, [1, 2], None, prefix_reuse=True).slot.model is OTHER


SYSTEM = list(range(500, 540))  # every conversation's opening: the system prompt


def test_the_sequence_taken_keeps_what_it_shares_with_the_prompt() -> None:
    pool = slots({0, 1}, used={2: 1.0})
    pool[2].tokens = SYSTEM + list(range(100))  # another conversation, evicted for this one
    assert pick_slot(pool, MODEL, SYSTEM + [7, 8], None, prefix_reuse=True) == (pool[2], len(SYSTEM), None)
    pool[2].adapter = object()  # computed with another adapter: nothing to keep
    assert pick_slot(pool, MODEL, SYSTEM + [7, 8], None, prefix_reuse=True) == (pool[2], 0, None)


def test_a_longer_shared_prefix_is_copied_from_any_sequence_even_a_busy_one() -> None:
    pool = slots({0}, used={1: 1.0})
    pool[0].tokens = SYSTEM + [1, 2, 3]  # busy answering with the same system prompt
    pool[1].tokens = SYSTEM[:5]
    assert pick_slot(pool, MODEL, SYSTEM + [9], None, prefix_reuse=True) == Placement(pool[1], len(SYSTEM), pool[0])
    # a copy of a whole sequence is not worth a few tokens more than the slot keeps anyway
    pool[1].tokens = SYSTEM[:len(SYSTEM) - MIN_COPY + 1]
    assert pick_slot(pool, MODEL, SYSTEM + [9], None, prefix_reuse=True) == (pool[1], len(SYSTEM) - MIN_COPY + 1, None)
    # never another adapter's cells, nor with prefix reuse off, nor the whole prompt (one token is fed)
    assert pick_slot(pool, MODEL, SYSTEM + [9], object(), prefix_reuse=True).source is None
    assert pick_slot(pool, MODEL, SYSTEM + [9], None, prefix_reuse=False) == (pool[1], 0, None)
    pool[1].tokens = []
    assert pick_slot(pool, MODEL, SYSTEM, None, prefix_reuse=True) == (pool[1], len(SYSTEM) - 1, pool[0])


def test_a_sequence_holds_the_budget_and_the_next_token_in_whole_blocks() -> None:
    assert tokens_per_sequence(2048) == 2304
    assert tokens_per_sequence(255) == 256
    assert tokens_per_sequence(256) == 512
