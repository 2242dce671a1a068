"""Tokenizing conversations with loss on the assistant's words only, and packing them.

Why build the labels turn by turn from the chat template rather than by searching for
marker strings in the tokens: the template is the ground truth of what the model sees at
inference, and rendering prefixes of the conversation tells us exactly where each assistant
reply starts (after the generation prompt `<|im_start|>assistant\\n`) and ends (its
end-of-turn token included, so the model learns to stop). Everything else — system prompt,
user turns, role headers — gets label -100.

Packing: several examples share one row, each with `position_ids` restarting at 0.
transformers (sdpa/eager attention, no attention mask, no cache) turns restarting position
ids into a block-diagonal causal mask, so a packed example never attends to its neighbour;
`tests/finetune/test_masking.py` checks that the logits equal those of the example alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistant.errors import DatasetError
from assistant.prompting import guard_for

IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def with_system(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """Add the assistant's configured system prompt when a row has none, as the chat engine does."""
    if system_prompt and messages and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


def segments(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) pieces whose concatenation is the full render."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            header = _render(tokenizer, messages[:i], generation_prompt=True)
            if not header.startswith(done):
                raise DatasetError("The model's chat template is not prefix-stable; cannot mask turns safely.")
            pieces.append((header[len(done):], False))
            done = header
        full = _render(tokenizer, messages[: i + 1])
        if not full.startswith(done):
            raise DatasetError("The model's chat template is not prefix-stable; cannot mask turns safely.")
        pieces.append((full[len(done):], message["role"] == "assistant"))
        done = full
    return [(text, trained) for text, trained in pieces if text]


def tokenize_messages(tokenizer: Any, messages: list[dict[str, str]]) -> Tokenized:
    """Tokens and labels; message text is escaped first (as at inference), so a control token can
    only come from the chat template, never from a row's text."""
    guard = guard_for(tokenizer)
    messages = [{"role": m["role"], "content": guard.escape(m["content"])} for m in messages]
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE] * len(ids))
    return Tokenized(input_ids, labels)


def tokenize_rows(tokenizer: Any, rows: list[dict[str, Any]], *, max_seq_len: int, system_prompt: str = "",
                  source: str = "dataset") -> list[Tokenized]:
    """Tokenize SFT rows; a row longer than `max_seq_len` is an error naming it (never silently cut)."""
    out = []
    for index, row in enumerate(rows, start=1):
        tokens = tokenize_messages(tokenizer, with_system(row["messages"], system_prompt))
        if len(tokens.input_ids) > max_seq_len:
            raise DatasetError(f"{source} row {index}: {len(tokens.input_ids)} tokens, longer than "
                               f"finetune.max_seq_len = {max_seq_len}; shorten it or raise the limit.")
        out.append(tokens)
    return out


def pack(examples: list[Tokenized], max_seq_len: int) -> list[dict[str, list[int]]]:
    """First-fit-decreasing bins of at most `max_seq_len` tokens, with per-example position ids.

    Deterministic for a given input order, so a resumed run sees the same bins.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = len(examples[i].input_ids)
        for b, free in enumerate(room):
            if size <= free:
                bins[b].append(i)
                room[b] -= size
                break
        else:
            bins.append([i])
            room.append(max_seq_len - size)
    packed = []
    for members in bins:
        row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for i in sorted(members):
            ex = examples[i]
            row["input_ids"] += ex.input_ids
            # The first token of each example has no predecessor in its own sequence: never a target.
            row["labels"] += [IGNORE] + ex.labels[1:]
            row["position_ids"] += list(range(len(ex.input_ids)))
        packed.append(row)
    return packed


def unpacked(examples: list[Tokenized]) -> list[dict[str, list[int]]]:
    return [{"input_ids": e.input_ids, "labels": e.labels, "position_ids": list(range(len(e.input_ids)))}
            for e in examples]


def collate(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Pad to the longest row in the batch. Padding is its own 'sequence' (positions restart) with no
    labels, so no attention mask is needed and the packed block-diagonal mask still applies."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for r in rows:
        gap = width - len(r["input_ids"])
        batch["input_ids"].append(r["input_ids"] + [pad_id] * gap)
        batch["labels"].append(r["labels"] + [IGNORE] * gap)
        batch["position_ids"].append(r["position_ids"] + list(range(gap)))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def preview(tokenizer: Any, messages: list[dict[str, str]], *, mark: tuple[str, str] = ("[[", "]]")) -> str:
    """The rendered example with trained spans wrapped in markers (what `datasets show` prints)."""
    return "".join(f"{mark[0]}{text}{mark[1]}" if trained else text for text, trained in segments(tokenizer, messages))
