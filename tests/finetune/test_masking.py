"""Loss only on the assistant's words; packing that never lets examples see each other."""

from __future__ import annotations

from typing import Any

import pytest

from assistant.errors import DatasetError
from finetune.masking import IGNORE, collate, pack, preview, tokenize_messages, tokenize_rows, with_system

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name?"},
        {"role": "assistant", "content": "Zorblax."}]


def test_tokens_equal_the_chat_template_and_only_replies_are_trained(tokenizer: Any) -> None:
    tok = tokenize_messages(tokenizer, CONV)
    expected = tokenizer.apply_chat_template(CONV, tokenize=True, return_dict=True)["input_ids"]
    assert tok.input_ids == expected
    trained = tokenizer.decode([t for t in tok.labels if t != IGNORE])
    assert trained == "Hello!<|im_end|>\nZorblax.<|im_end|>\n"
    assert "Be brief" not in trained and "Name?" not in trained and "assistant" not in trained


def test_preview_marks_exactly_the_trained_spans(tokenizer: Any) -> None:
    shown = preview(tokenizer, CONV)
    assert "[[Hello!<|im_end|>\n]]" in shown and "[[Zorblax.<|im_end|>\n]]" in shown
    assert shown.count("[[") == 2


def test_system_prompt_added_only_when_missing() -> None:
    assert with_system(CONV[1:], "S")[0] == {"role": "system", "content": "S"}
    assert with_system(CONV, "S") == CONV


def test_too_long_row_is_refused_with_its_number(tokenizer: Any) -> None:
    rows = [{"messages": CONV[1:3]}, {"messages": [{"role": "user", "content": "word " * 200},
                                                   {"role": "assistant", "content": "ok"}]}]
    with pytest.raises(DatasetError, match="row 2: .* longer than finetune.max_seq_len = 64"):
        tokenize_rows(tokenizer, rows, max_seq_len=64)


def test_packing_fits_bins_and_restarts_positions(tokenizer: Any) -> None:
    rows = [{"messages": [{"role": "user", "content": f"q{i}" * (i + 1)}, {"role": "assistant", "content": "a"}]}
            for i in range(6)]
    examples = tokenize_rows(tokenizer, rows, max_seq_len=64, system_prompt="S")
    packed = pack(examples, 64)
    assert len(packed) < len(examples)
    assert sum(len(p["input_ids"]) for p in packed) == sum(len(e.input_ids) for e in examples)
    for p in packed:
        assert len(p["input_ids"]) <= 64
        starts = [i for i, pos in enumerate(p["position_ids"]) if pos == 0]
        assert all(p["labels"][s] == IGNORE for s in starts)
    assert pack(examples, 64) == packed  # deterministic: a resumed run sees the same bins


@pytest.mark.slow
def test_packed_example_sees_nothing_of_its_neighbour(tokenizer: Any) -> None:
    """Logits of an example packed after another equal its logits alone (block-diagonal attention)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tokenizer.name_or_path, dtype=torch.float32).eval()
    a = tokenize_messages(tokenizer, CONV[1:3])
    b = tokenize_messages(tokenizer, CONV[3:5])
    both = collate(pack([a, b], 4096), tokenizer.pad_token_id)
    alone = collate(pack([b], 4096), tokenizer.pad_token_id)
    with torch.no_grad():
        packed_logits = model(input_ids=both["input_ids"], position_ids=both["position_ids"], use_cache=False).logits
        alone_logits = model(input_ids=alone["input_ids"], position_ids=alone["position_ids"], use_cache=False).logits
    row = both["input_ids"][0].tolist()
    start = len(row) - len(b.input_ids) if row[: len(a.input_ids)] == a.input_ids else 0
    tail = packed_logits[0, start: start + len(b.input_ids)]
    assert torch.allclose(tail, alone_logits[0, : len(b.input_ids)], atol=1e-3)
    # And without restarting positions (plain concatenation) they would differ: the test can fail.
    plain = torch.tensor([row])
    with torch.no_grad():
        leaked = model(input_ids=plain, use_cache=False).logits[0, start: start + len(b.input_ids)]
    assert not torch.allclose(leaked, alone_logits[0, : len(b.input_ids)], atol=1e-3)
