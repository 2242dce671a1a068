"""Tensor bookkeeping for continuous batching: merging and shrinking a batch's KV cache.

Rows of a running batch are left-padded to a common length. A newly prefilled group joins
by padding whichever side is shorter on the left and concatenating along the batch axis; a
finished row leaves by selecting the remaining indices. Pure tensor functions, tested alone.
"""

from __future__ import annotations

from typing import Any

import torch


def _left_pad(t: torch.Tensor, amount: int) -> torch.Tensor:
    """Pad the sequence axis (-2 for KV tensors [B,H,T,D], -1 for masks [B,T]) on the left."""
    if amount == 0:
        return t
    if t.dim() == 2:
        return torch.cat([t.new_zeros((t.shape[0], amount)), t], dim=1)
    pad_shape = list(t.shape)
    pad_shape[-2] = amount
    return torch.cat([t.new_zeros(pad_shape), t], dim=-2)


def cache_supports_merge(cache: Any) -> bool:
    """Only plain dynamic layers can be padded and concatenated (no sliding windows, no quantized)."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def merge_caches(cache_a: Any, mask_a: torch.Tensor, cache_b: Any, mask_b: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Append the rows of (cache_b, mask_b) to (cache_a, mask_a); returns cache_a, grown, and its mask."""
    len_a, len_b = mask_a.shape[1], mask_b.shape[1]
    target = max(len_a, len_b)
    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers, strict=True):
        layer_a.keys = torch.cat([_left_pad(layer_a.keys, target - len_a), _left_pad(layer_b.keys, target - len_b)])
        layer_a.values = torch.cat([_left_pad(layer_a.values, target - len_a),
                                    _left_pad(layer_b.values, target - len_b)])
    mask = torch.cat([_left_pad(mask_a, target - len_a), _left_pad(mask_b, target - len_b)])
    return cache_a, mask


def select_rows(cache: Any, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep only rows `keep` (in place for the cache) and drop left columns that are padding everywhere."""
    index = torch.tensor(keep, device=mask.device, dtype=torch.long)
    mask = mask.index_select(0, index)
    real = mask.sum(dim=0) > 0
    first = int(real.nonzero()[0]) if bool(real.any()) else 0
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[..., first:, :]
        layer.values = layer.values.index_select(0, index)[..., first:, :]
    return mask[:, first:]


def positions_for_next(mask: torch.Tensor) -> torch.Tensor:
    """Position of the token about to be fed for each row: the number of real tokens before it."""
    return mask.sum(dim=1, keepdim=True)


def prompt_positions(mask: torch.Tensor) -> torch.Tensor:
    """Per-token positions for a left-padded prompt (padding positions are clamped to 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)
