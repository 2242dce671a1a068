"""`finetune eval`: the base model and an adapter side by side on prompts with expected answers.

What the original bot's `!test` meant. Test data: JSON (array) or JSON Lines, each item
`{"prompt": ..., "expected": ..., "match": "exact" | "contains" | "normalised"}` (also
accepted: question/input for the prompt, answer/output for the expected text). Both
models run in one process on one copy of the weights: the base answers inside peft's
`disable_adapter()` context. The adapter's failures come back as SFT rows (prompt →
expected answer), i.e. a dataset of items to correct and train on.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assistant.errors import DatasetError
from assistant.prompting import guard_for, system_messages
from finetune.data import decode_text, parse_records

logger = logging.getLogger(__name__)

MATCHES = ("exact", "contains", "normalised", "keywords")
PROMPT_KEYS = ("prompt", "question", "input")
EXPECTED_KEYS = ("expected", "answer", "output")


@dataclass(frozen=True)
class EvalItem:
    prompt: str
    expected: str
    match: str


@dataclass(frozen=True)
class ItemResult:
    prompt: str
    expected: str
    match: str
    base: str
    adapter: str
    base_ok: bool
    adapter_ok: bool


@dataclass(frozen=True)
class EvalReport:
    items: list[ItemResult]

    @property
    def base_correct(self) -> int:
        return sum(r.base_ok for r in self.items)

    @property
    def adapter_correct(self) -> int:
        return sum(r.adapter_ok for r in self.items)

    def failures(self) -> list[dict[str, Any]]:
        """Items the adapter got wrong, as SFT rows with the expected answer as the target."""
        return [{"messages": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.expected}],
                 "positive": True} for r in self.items if not r.adapter_ok]

    def to_dict(self) -> dict[str, Any]:
        return {"total": len(self.items), "base_correct": self.base_correct,
                "adapter_correct": self.adapter_correct, "items": [asdict(r) for r in self.items]}


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def matches(prediction: str, expected: str, how: str) -> bool:
    if how == "exact":
        return prediction.strip() == expected.strip()
    if how == "normalised":
        return normalise(prediction) == normalise(expected)
    if how == "keywords":
        said = set(normalise(prediction).split())
        return all(word in said for word in normalise(expected).split())
    return normalise(expected) in normalise(prediction)


def _pick(record: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if key in record:
            value = record[key]
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(f"{where}: field '{key}' must be non-empty text.")
            return value
    raise DatasetError(f"{where}: missing field '{keys[0]}' (or {', '.join(keys[1:])}).")


def parse_eval(raw: bytes, source: str, *, default_match: str = "contains",
               max_items: int | None = None) -> list[EvalItem]:
    """Parse test data; invalid JSON or a bad item is a DatasetError naming line (and column).
    More than `max_items` items is refused as soon as the one too many is read."""
    items = []
    for line, record in parse_records(decode_text(raw, source), source, max_items=max_items):
        where = f"{source} line {line}"
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected an object with 'prompt' and 'expected'.")
        how = record.get("match", default_match)
        if how not in MATCHES:
            raise DatasetError(f"{where}: 'match' must be one of {', '.join(MATCHES)}, got {how!r}.")
        items.append(EvalItem(_pick(record, PROMPT_KEYS, where), _pick(record, EXPECTED_KEYS, where), how))
    if not items:
        raise DatasetError(f"{source} has no test items; add lines like {{\"prompt\": ..., \"expected\": ...}}.")
    return items


def generate(model: Any, tokenizer: Any, prompt: str, *, system_prompt: str, max_new_tokens: int) -> str:
    import torch

    messages = [*system_messages(system_prompt), {"role": "user", "content": guard_for(tokenizer).escape(prompt)}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return str(tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)).strip()


def generate_batch(model: Any, tokenizer: Any, prompts: list[str], *, system_prompt: str, max_new_tokens: int,
                   batch_size: int = 8) -> list[str]:
    """Greedy answers to many prompts, a left-padded batch at a time (replay data for training)."""
    import torch

    guard = guard_for(tokenizer)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(
                [*system_messages(system_prompt), {"role": "user", "content": guard.escape(p)}],
                add_generation_prompt=True, tokenize=False) for p in prompts[start:start + batch_size]]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            width = inputs["input_ids"].shape[1]
            answers += [str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]
    finally:
        tokenizer.padding_side = side
    return answers


def evaluate(peft_model: Any, tokenizer: Any, items: list[EvalItem], *, system_prompt: str,
             max_new_tokens: int = 48, progress: bool = True) -> EvalReport:
    """Answer every item with the adapter and with the base (adapter disabled)."""
    from tqdm import tqdm

    results = []
    peft_model.eval()
    for item in tqdm(items, desc="eval", disable=not progress):
        tuned = generate(peft_model, tokenizer, item.prompt, system_prompt=system_prompt,
                         max_new_tokens=max_new_tokens)
        with peft_model.disable_adapter():
            base = generate(peft_model, tokenizer, item.prompt, system_prompt=system_prompt,
                            max_new_tokens=max_new_tokens)
        results.append(ItemResult(item.prompt, item.expected, item.match, base, tuned,
                                  matches(base, item.expected, item.match), matches(tuned, item.expected, item.match)))
    return EvalReport(results)


def load_for_eval(config: Any, adapter_dir: Path) -> tuple[Any, Any]:
    """Base model + adapter (checked to belong to this base), ready for `evaluate`."""
    from peft import PeftModel

    from assistant.llm.loader import load_causal_lm
    from finetune.adapters import check_adapter_compatible

    loaded = load_causal_lm(config.model.name, config.storage.models_dir, device=config.model.device,
                            dtype=config.model.dtype, threads=config.model.threads)
    check_adapter_compatible(adapter_dir, loaded.source)
    return PeftModel.from_pretrained(loaded.model, str(adapter_dir)), loaded.tokenizer
