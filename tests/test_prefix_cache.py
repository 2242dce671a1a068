"""The prefix cache's matching, keying and eviction, on small tensors."""

from __future__ import annotations

import torch

from assistant.llm.prefix import common_prefix
from assistant.llm.prefix_cache import PrefixCache


def kv(tokens: list[int], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fake keys/values whose entries encode the token id, so a hit can be checked by value."""
    t = torch.tensor(tokens, dtype=torch.float32).view(1, 1, -1, 1)
    return [(t.clone() + layer, -t.clone() - layer) for layer in range(layers)]


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [6]) == 0


def test_a_longer_prompt_reuses_the_longest_shared_beginning() -> None:
    cache = PrefixCache(max_entries=4, min_tokens=3)
    cache.store([1, 2, 3, 4, 5], "base", kv([1, 2, 3, 4, 5]))
    hit = cache.lookup([1, 2, 3, 4, 9, 9], "base")
    assert hit is not None and hit.tokens == 4
    keys, values = hit.layers[1]
    assert keys.flatten().tolist() == [2, 3, 4, 5]  # token ids + layer index, cut to 4 tokens
    assert values.shape == (1, 1, 4, 1)
    assert cache.hits == 1 and cache.reused_tokens == 4


def test_at_least_one_prompt_token_is_left_to_prefill() -> None:
    cache = PrefixCache(max_entries=4, min_tokens=2)
    cache.store([1, 2, 3, 4], "base", kv([1, 2, 3, 4]))
    hit = cache.lookup([1, 2, 3, 4], "base")
    assert hit is not None and hit.tokens == 3
    hit = cache.lookup([1, 2, 3], "base")
    assert hit is not None and hit.tokens == 2


def test_short_matches_and_other_adapters_miss() -> None:
    cache = PrefixCache(max_entries=4, min_tokens=3)
    cache.store([1, 2, 3, 4], "base", kv([1, 2, 3, 4]))
    assert cache.lookup([1, 2, 7, 7], "base") is None  # 2 shared tokens < min_tokens
    assert cache.lookup([1, 2, 3, 4, 5], "tuned") is None  # an adapter changes the keys and values
    assert cache.misses == 2
    cache.store([1, 2], "base", kv([1, 2]))  # too short to be worth keeping
    assert len(cache) == 1


def test_a_grown_conversation_replaces_its_own_prefix_and_lru_evicts() -> None:
    cache = PrefixCache(max_entries=2, min_tokens=1)
    cache.store([1, 2, 3], "base", kv([1, 2, 3]))
    cache.store([1, 2, 3, 4, 5], "base", kv([1, 2, 3, 4, 5]))  # the next turn: replaces the first
    assert len(cache) == 1
    cache.store([1, 2, 3], "base", kv([1, 2, 3]))  # already covered by the longer entry
    assert len(cache) == 1
    cache.store([7, 8], "base", kv([7, 8]))
    assert cache.lookup([1, 2, 3, 4, 5, 6], "base") is not None  # touch: now the most recent
    cache.store([9, 9], "base", kv([9, 9]))  # evicts [7, 8], the least recently used
    assert cache.lookup([7, 8, 0], "base") is None
    assert cache.lookup([9, 9, 0], "base") is not None


def test_stored_tensors_are_private_copies() -> None:
    cache = PrefixCache(max_entries=2, min_tokens=1)
    batch_keys = torch.arange(12, dtype=torch.float32).view(3, 1, 4, 1)  # a batch of 3 rows
    cache.store([1, 2], "base", [(batch_keys[1:2, :, 2:, :], batch_keys[1:2, :, 2:, :])])
    batch_keys.zero_()  # the running batch changes (or is freed)
    hit = cache.lookup([1, 2, 3], "base")
    assert hit is not None and hit.layers[0][0].flatten().tolist() == [6.0, 7.0]


def test_clear_one_adapter_and_disabled_cache() -> None:
    cache = PrefixCache(max_entries=4, min_tokens=1)
    cache.store([1, 2], "base", kv([1, 2]))
    cache.store([1, 2], "tuned", kv([1, 2]))
    cache.clear("tuned")
    assert cache.lookup([1, 2, 3], "tuned") is None and cache.lookup([1, 2, 3], "base") is not None
    off = PrefixCache(max_bytes=0)
    off.store(list(range(64)), "base", kv(list(range(64))))
    assert len(off) == 0 and off.lookup(list(range(65)), "base") is None


def test_the_memory_budget_evicts_least_recently_used_entries() -> None:
    entry_bytes = 2 * 2 * 10 * 4  # 2 layers x (keys + values) x 10 tokens x float32
    cache = PrefixCache(max_bytes=2 * entry_bytes, min_tokens=1)
    for first in (100, 200, 300):
        cache.store(list(range(first, first + 10)), "base", kv(list(range(first, first + 10))))
    assert len(cache) == 2 and cache.bytes == 2 * entry_bytes
    assert cache.lookup(list(range(100, 111)), "base") is None  # the oldest went first
    assert cache.lookup(list(range(300, 311)), "base") is not None
    cache.store(list(range(50)), "base", kv(list(range(50))))  # larger than the whole budget: not kept
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
