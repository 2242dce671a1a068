"""Reading training data in the common formats and turning it into one canonical shape.

Canonical rows are what everything downstream sees:
- SFT: `{"messages": [{"role", "content"}, ...], "positive": bool}`
- preference: `{"prompt": [messages...], "chosen": str, "rejected": str}`

Why validate everything before storing anything: a user who uploads a file wants one
sentence naming the first bad line and field, and a dataset that is either fully there or
not at all. The original bot's `positive` flag keeps its meaning: positive rows are targets
to imitate; negative rows (`"positive": false`) are replies to avoid. Negative rows are never
imitated; a negative row whose prompt also has a positive row becomes a preference pair
(positive reply `chosen`, negative `rejected`) — see `preference_pairs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import DatasetError

FORMATS = ("messages", "alpaca", "sharegpt", "completion", "preference")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "bot": "assistant"}


@dataclass(frozen=True)
class Dataset:
    """Validated canonical rows; `kind` is "sft" or "preference"."""

    format: str
    rows: list[dict[str, Any]]

    @property
    def kind(self) -> str:
        return "preference" if self.format == "preference" else "sft"


def decode_text(raw: bytes, source: str) -> str:
    """UTF-8 (with or without BOM) or a DatasetError naming the line of the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{source} line {line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                           f"{exc.start}); save the file as UTF-8.") from None




def parse_records(text: str, source: str, *, max_items: int | None = None) -> list[tuple[int, Any]]:
    """JSON (an array of objects, or one object) or JSON Lines → [(line number, value)].

    One pass, linear in the text: a user's upload must never cost more than reading it
    (an earlier version re-decoded from the start to number each array element, which was
    quadratic and froze the bot on a long `test` array). With `max_items`, reading stops
    with a DatasetError as soon as one item too many is seen, before the rest is decoded.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _array_items(text, source, max_items)
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        _check_count(len(records), max_items, source)
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            if number == 1 and stripped.startswith("{"):
                try:  # one pretty-printed JSON object rather than JSON Lines
                    return [(1, json.loads(text))]
                except json.JSONDecodeError:
                    pass
            raise DatasetError(f"{source} line {number} column {exc.colno}: invalid JSON ({exc.msg}).") from None
    return records


def _skip_blank(text: str, pos: int) -> int:
    """The offset of the next non-blank character at or after `pos`."""
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _check_count(count: int, max_items: int | None, source: str) -> None:
    if max_items is not None and count >= max_items:
        raise DatasetError(f"{source} has more than {max_items} items; send at most {max_items} at a time.")


def _invalid(text: str, pos: int, source: str, msg: str) -> DatasetError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return DatasetError(f"{source} line {line} column {column}: invalid JSON ({msg}).")


def _array_items(text: str, source: str, max_items: int | None) -> list[tuple[int, Any]]:
    """The elements of a top-level JSON array with the line each starts on, decoded one by one."""
    decoder = json.JSONDecoder()
    items: list[tuple[int, Any]] = []
    pos = _skip_blank(text, text.index("[") + 1)
    line, counted = 1, 0  # `line` is the line number at offset `counted`
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            _check_count(len(items), max_items, source)
            line, counted = line + text.count("\n", counted, pos), pos
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{source} line {exc.lineno} column {exc.colno}: invalid JSON "
                                   f"({exc.msg}).") from None
            items.append((line, value))
            pos = _skip_blank(text, pos)
            if text.startswith(",", pos):
                pos = _skip_blank(text, pos + 1)
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise _invalid(text, pos, source, "Expecting ',' delimiter")
    pos = _skip_blank(text, pos)
    if pos != len(text):
        raise _invalid(text, pos, source, "Extra data")
    return items


def detect_format(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "completion"
    return None


def _text(record: dict[str, Any], field: str, where: str, *, allow_empty: bool = False) -> str:
    if field not in record:
        raise DatasetError(f"{where}: missing field '{field}'.")
    value = record[field]
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field '{field}' must be text, got {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise DatasetError(f"{where}: field '{field}' is empty.")
    return value


def _positive(record: dict[str, Any], where: str) -> bool:
    value = record.get("positive", True)
    if not isinstance(value, bool):
        raise DatasetError(f"{where}: field 'positive' must be true or false, got {value!r}.")
    return value


def _messages(value: Any, where: str, field: str, *, need_assistant: bool = True) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: field '{field}' must be a non-empty list of messages.")
    out = []
    for i, message in enumerate(value):
        at = f"{where}: {field}[{i}]"
        if not isinstance(message, dict):
            raise DatasetError(f"{at} must be an object with 'role' and 'content'.")
        role = message.get("role")
        if role not in ROLES:
            raise DatasetError(f"{at}: role {role!r} is not one of {', '.join(ROLES)}.")
        if role == "system" and i != 0:
            raise DatasetError(f"{at}: a system message may only come first.")
        out.append({"role": role, "content": _text(message, "content", at)})
    roles = [m["role"] for m in out]
    if "user" not in roles:
        raise DatasetError(f"{where}: field '{field}' has no user message.")
    if need_assistant and roles[-1] != "assistant":
        raise DatasetError(f"{where}: field '{field}' must end with the assistant's reply to learn from.")
    return out


def _convert(record: Any, fmt: str, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    if fmt == "messages":
        return {"messages": _messages(record.get("messages"), where, "messages"), "positive": _positive(record, where)}
    if fmt == "sharegpt":
        turns = record.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise DatasetError(f"{where}: field 'conversations' must be a non-empty list.")
        converted = []
        for i, turn in enumerate(turns):
            at = f"{where}: conversations[{i}]"
            if not isinstance(turn, dict):
                raise DatasetError(f"{at} must be an object with 'from' and 'value'.")
            speaker = turn.get("from")
            if speaker not in SHAREGPT_ROLES:
                raise DatasetError(f"{at}: 'from' {speaker!r} is not one of {', '.join(SHAREGPT_ROLES)}.")
            converted.append({"role": SHAREGPT_ROLES[speaker], "content": _text(turn, "value", at)})
        return {"messages": _messages(converted, where, "conversations"), "positive": _positive(record, where)}
    if fmt == "alpaca":
        instruction = _text(record, "instruction", where)
        extra = record.get("input", "")
        if not isinstance(extra, str):
            raise DatasetError(f"{where}: field 'input' must be text, got {type(extra).__name__}.")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return {"messages": [{"role": "user", "content": user},
                             {"role": "assistant", "content": _text(record, "output", where)}],
                "positive": _positive(record, where)}
    if fmt == "completion":
        return {"messages": [{"role": "user", "content": _text(record, "prompt", where)},
                             {"role": "assistant", "content": _text(record, "completion", where)}],
                "positive": _positive(record, where)}
    if fmt == "preference":
        prompt = record.get("prompt")
        messages = ([{"role": "user", "content": _text(record, "prompt", where)}] if isinstance(prompt, str)
                    else _messages(prompt, where, "prompt", need_assistant=False))
        chosen, rejected = _text(record, "chosen", where), _text(record, "rejected", where)
        if chosen.strip() == rejected.strip():
            raise DatasetError(f"{where}: 'chosen' and 'rejected' are the same text; nothing to prefer.")
        return {"prompt": messages, "chosen": chosen, "rejected": rejected}
    raise DatasetError(f"Unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}.")


def load_rows(raw: bytes, source: str, *, fmt: str = "auto") -> Dataset:
    """Parse and validate a whole file; any bad row raises DatasetError naming its line."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(f"Unknown dataset format {fmt!r}; use 'auto' or one of {', '.join(FORMATS)}.")
    records = parse_records(decode_text(raw, source), source)
    if not records:
        raise DatasetError(f"{source} has no rows; add at least one example.")
    if fmt == "auto":
        line, first = records[0]
        detected = detect_format(first)
        if detected is None:
            keys = sorted(first) if isinstance(first, dict) else type(first).__name__
            raise DatasetError(f"{source} line {line}: cannot tell the format from {keys}; expected fields of one of "
                               "messages, alpaca (instruction/output), sharegpt (conversations), prompt/completion, "
                               "or prompt/chosen/rejected; or state the format.")
        fmt = detected
    rows = [_convert(record, fmt, f"{source} line {line}") for line, record in records]
    if fmt != "preference" and not any(r["positive"] for r in rows):
        raise DatasetError(f"{source} has no usable rows: every row is marked \"positive\": false (replies to "
                           "avoid); add examples to imitate or pair them as chosen/rejected.")
    return Dataset(fmt, rows)


def load_file(path: Path, *, fmt: str = "auto") -> Dataset:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path} ({exc.strerror}); check the file name.") from None
    return load_rows(raw, path.name, fmt=fmt)


def prompt_key(messages: list[dict[str, str]]) -> str:
    """Everything before the final assistant reply, as a key for pairing replies to one prompt."""
    return json.dumps(messages[:-1], sort_keys=True)


def preference_pairs(dataset: Dataset) -> list[dict[str, Any]]:
    """Pairs from an SFT dataset: each negative row against a positive row with the same prompt."""
    if dataset.kind == "preference":
        return list(dataset.rows)
    positives: dict[str, str] = {}
    for row in dataset.rows:
        if row["positive"]:
            positives.setdefault(prompt_key(row["messages"]), row["messages"][-1]["content"])
    pairs = []
    for row in dataset.rows:
        key = prompt_key(row["messages"])
        if not row["positive"] and key in positives:
            pairs.append({"prompt": json.loads(key), "chosen": positives[key],
                          "rejected": row["messages"][-1]["content"]})
    return pairs


def sft_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """Rows to imitate: positive SFT rows, or the chosen side of preference pairs."""
    if dataset.kind == "preference":
        return [{"messages": [*r["prompt"], {"role": "assistant", "content": r["chosen"]}], "positive": True}
                for r in dataset.rows]
    return [r for r in dataset.rows if r["positive"]]


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
