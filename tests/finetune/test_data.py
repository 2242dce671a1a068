"""Dataset formats, validation errors that name the line and field, and a fuzzed reader."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.errors import DatasetError
from finetune.data import load_rows, preference_pairs, sft_rows


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("raw, fmt", [
    (jsonl(MSG), "messages"),
    (json.dumps([{"instruction": "Add", "input": "2 and 2", "output": "4"}]).encode(), "alpaca"),
    (jsonl({"instruction": "Say hi", "output": "hi"}), "alpaca"),
    (jsonl({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}), "sharegpt"),
    (jsonl({"prompt": "hi", "completion": "hello"}), "completion"),
    (jsonl({"prompt": "hi", "chosen": "hello", "rejected": "go away"}), "preference"),
])
def test_formats_are_detected_and_normalised(raw: bytes, fmt: str) -> None:
    ds = load_rows(raw, "f.jsonl")
    assert ds.format == fmt
    rows = sft_rows(ds)
    assert rows[0]["messages"][0]["role"] == "user" and rows[0]["messages"][-1]["role"] == "assistant"


def test_alpaca_input_joins_the_instruction() -> None:
    ds = load_rows(jsonl({"instruction": "Add", "input": "2 and 2", "output": "4"}), "f")
    assert ds.rows[0]["messages"][0]["content"] == "Add\n\n2 and 2"


@pytest.mark.parametrize("raw, needle", [
    (b'{"messages": [}\n', "f.jsonl line 1 column"),
    (jsonl(MSG) + b'{"messages": 5}\n', "line 2: field 'messages' must be a non-empty list"),
    (jsonl(MSG, {"messages": []}), "line 2: field 'messages'"),
    (jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}),
     "line 1: messages[1]: role 'robot'"),
    (jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}),
     "messages[1]: field 'content' is empty"),
    (jsonl({"messages": [{"role": "user", "content": "hi"}]}), "must end with the assistant's reply"),
    (jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}), "missing field 'content'"),
    (jsonl({"instruction": "x", "output": 3}), "field 'output' must be text"),
    (jsonl({"prompt": "hi", "chosen": "a", "rejected": "a"}), "same text"),
    (jsonl({"foo": 1}), "cannot tell the format"),
    (b"", "no rows"),
    (b"\n\n", "no rows"),
    (b'{"prompt": "a", "completion": "b"}\n\xff\xfe\n', "line 2: not UTF-8"),
    (jsonl({**MSG, "positive": False}), "no usable rows"),
    (jsonl({**MSG, "positive": "yes"}), "field 'positive' must be true or false"),
    (b'[{"prompt": "a", "completion": "b"},\n {"prompt": "a"}]', "line 2: missing field 'completion'"),
])
def test_bad_input_names_line_and_field(raw: bytes, needle: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_rows(raw, "f.jsonl")
    assert needle in str(info.value)


def test_stated_format_overrides_detection_and_unknown_is_refused() -> None:
    with pytest.raises(DatasetError, match="missing field 'instruction'"):
        load_rows(jsonl({"prompt": "a", "completion": "b"}), "f", fmt="alpaca")
    with pytest.raises(DatasetError, match="Unknown dataset format"):
        load_rows(jsonl(MSG), "f", fmt="csv")


def test_negative_rows_are_never_imitated_and_pair_with_positives() -> None:
    q = [{"role": "user", "content": "Who are you?"}]
    ds = load_rows(jsonl({"messages": [*q, {"role": "assistant", "content": "Zorblax"}]},
                         {"messages": [*q, {"role": "assistant", "content": "SmolLM"}], "positive": False},
                         {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                          "positive": False}), "f")
    assert [r["messages"][-1]["content"] for r in sft_rows(ds)] == ["Zorblax"]
    assert preference_pairs(ds) == [{"prompt": q, "chosen": "Zorblax", "rejected": "SmolLM"}]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["messages", "role", "content", "prompt", "chosen", "rejected",
                                                "completion", "instruction", "output", "input", "conversations",
                                                "from", "value", "positive", "user", "assistant"]), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=4))
def test_reader_fuzz_only_ever_raises_dataset_error(values: list[object]) -> None:
    raw = "".join(json.dumps(v) + "\n" for v in values).encode()
    try:
        ds = load_rows(raw, "fuzz")
    except DatasetError:
        return
    assert ds.rows and ds.format


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_reader_fuzz_bytes(raw: bytes) -> None:
    try:
        load_rows(raw, "fuzz")
    except DatasetError:
        pass
