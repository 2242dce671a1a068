"""Reuse the attention keys/values of a prompt's beginning that an earlier request computed.

Why: a conversation's next prompt repeats the whole previous one (system prompt, history,
the last answer) and only adds the new turn. Prefilling that again costs ~1 ms per token
on a CPU, so a voice call's 20th turn spent 0.8 s re-reading its own history before the
first word. Keeping the KV of each finished request and matching new prompts against it by
longest common prefix makes the prefill proportional to what is new.

Entries are per adapter (a LoRA adapter changes the keys and values), least recently used
entries are evicted first once the store passes its memory budget (a 7B model's KV is ~0.5 MB a
token, SmolLM2-135M's 23 kB), and the tensors are private copies (never views of a running
batch, which would keep the whole batch alive and could change under us). Matching works on
token ids, so a history whose last answer re-tokenizes differently still reuses everything
before that point.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from assistant.llm.prefix import common_prefix

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, tokens, dim]


@dataclass
class PrefixHit:
    tokens: int  # how many leading prompt tokens the layers cover
    layers: Layers  # views of the stored tensors, cut to `tokens`; read only


def _nbytes(layers: Layers) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


class PrefixCache:
    """A small LRU store of (adapter, token ids) → KV tensors, bounded in bytes and entries."""

    def __init__(self, max_bytes: int = 256 << 20, *, max_entries: int = 64, min_tokens: int = 32) -> None:
        self.max_bytes, self.max_entries, self.min_tokens = max_bytes, max_entries, min_tokens
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], Layers] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: list[int], adapter: str) -> PrefixHit | None:
        """The longest stored prefix of `prompt` (at least `min_tokens`), leaving at least one
        prompt token to prefill: the model needs one forward pass to give the next token."""
        if not self.enabled:
            return None
        best_key, best = None, 0
        for key in self._entries:
            if key[0] == adapter:
                n = min(common_prefix(key[1], prompt), len(prompt) - 1)
                if n > best:
                    best_key, best = key, n
        if best_key is None or best < self.min_tokens:
            self.misses += 1
            return None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        layers = [(k[..., :best, :], v[..., :best, :]) for k, v in self._entries[best_key]]
        return PrefixHit(best, layers)

    def store(self, tokens: list[int], adapter: str, layers: Layers) -> None:
        """Remember `layers` (copied) as the KV of `tokens`. An entry that is a prefix of the new
        one is replaced by it; nothing is stored if an entry already covers `tokens`."""
        size = _nbytes(layers)
        if not self.enabled or len(tokens) < self.min_tokens or size > self.max_bytes:
            return
        key_tokens = tuple(tokens)
        for key in list(self._entries):
            if key[0] != adapter:
                continue
            shared = common_prefix(key[1], key_tokens)
            if shared == len(key_tokens):  # already covered (equal, or a longer entry)
                self._entries.move_to_end(key)
                return
            if shared == len(key[1]):  # the old entry is a prefix of the new one
                self._drop(key)
        self._entries[(adapter, key_tokens)] = [(k.clone(memory_format=torch.contiguous_format),
                                                  v.clone(memory_format=torch.contiguous_format)) for k, v in layers]
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.max_entries > 0

    def _drop(self, key: tuple[str, tuple[int, ...]]) -> None:
        self.bytes -= _nbytes(self._entries.pop(key))

    def clear(self, adapter: str | None = None) -> None:
        """Forget everything (or one adapter's entries: its weights changed)."""
        for key in list(self._entries):
            if adapter is None or key[0] == adapter:
                self._drop(key)
