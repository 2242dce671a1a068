"""The evaluation gate: before a new adapter may be activated, did it learn, and did it break anything?

Three groups of questions: what the run was taught (`taught`), held-out rephrasings of it
(`paraphrase`, never trained on), and a control set whose answers must not change
(`storage.control_set`, shipped in datasets/, replaceable per server). Every question is
asked twice in one batch on the running engine — the base model as it answered before
teaching (no adapter, no taught facts in the prompt) and the candidate as it would answer
after activation (the adapter, plus the instant memory of approved corrections) — so the
comparison costs one copy of the weights. A control item is *kept* when the candidate still
answers it right, or answers exactly as the base did. Below `finetune.min_control_kept`,
activation needs an explicit override (`check_gate`). The result is written to the run folder
as `gate.json`, which is what both the bot and the terminal read.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from assistant.adapters import GATE_FILE, check_gate
from assistant.errors import DatasetError
from assistant.llm.base import ChatBackend, GenerationOptions, Message
from assistant.prompting import system_messages
from finetune.data import decode_text, parse_records
from finetune.evaluate import MATCHES, matches, normalise

ITEMS_FILE = "gate-items.jsonl"
GROUPS = ("taught", "paraphrase", "control")
ANSWER_TOKENS = 32


@dataclass(frozen=True)
class GateItem:
    prompt: str
    expected: str
    match: str
    group: str


@dataclass(frozen=True)
class GateAnswer:
    prompt: str
    expected: str
    group: str
    base: str
    candidate: str
    base_ok: bool
    candidate_ok: bool

    @property
    def kept(self) -> bool:
        return self.candidate_ok or normalise(self.candidate) == normalise(self.base)


@dataclass(frozen=True)
class GateReport:
    adapter: str | None
    answers: list[GateAnswer]
    min_control_kept: float

    def score(self, group: str) -> tuple[int, int]:
        rows = [a for a in self.answers if a.group == group]
        good = sum(a.kept if group == "control" else a.candidate_ok for a in rows)
        return good, len(rows)

    @property
    def control_share(self) -> float:
        kept, total = self.score("control")
        return kept / total if total else 1.0

    @property
    def passed(self) -> bool:
        return self.control_share >= self.min_control_kept

    def summary(self) -> str:
        parts = []
        for group, label in (("taught", "taught"), ("paraphrase", "paraphrases"), ("control", "control kept")):
            good, total = self.score(group)
            if total:
                base = sum(a.base_ok for a in self.answers if a.group == group)
                parts.append(f"{label} {good}/{total}" + (f" (base {base}/{total})" if group != "control" else ""))
        verdict = "passes the gate" if self.passed else (
            f"control below finetune.min_control_kept = {self.min_control_kept:g}: activating needs the override")
        return ", ".join(parts) + f" — {verdict}."

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "min_control_kept": self.min_control_kept, "passed": self.passed,
                "scores": {g: self.score(g) for g in GROUPS}, "answers": [asdict(a) for a in self.answers]}


def parse_items(raw: bytes, source: str, *, group: str | None = None) -> list[GateItem]:
    """`{"prompt", "expected", "match"?, "group"?}` per line (JSON or JSON Lines)."""
    items = []
    for line, record in parse_records(decode_text(raw, source), source):
        where = f"{source} line {line}"
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) \
                or not isinstance(record.get("expected"), str):
            raise DatasetError(f"{where}: expected an object with text fields 'prompt' and 'expected'.")
        how = record.get("match", "contains")
        if how not in MATCHES:
            raise DatasetError(f"{where}: 'match' must be one of {', '.join(MATCHES)}, got {how!r}.")
        kind = group or record.get("group", "taught")
        if kind not in GROUPS:
            raise DatasetError(f"{where}: 'group' must be one of {', '.join(GROUPS)}, got {kind!r}.")
        items.append(GateItem(record["prompt"], record["expected"], how, kind))
    return items


def load_items(run_dir: Path | None, control_set: Path) -> list[GateItem]:
    """The run's own items (written by a feedback run) plus the control set."""
    items: list[GateItem] = []
    if run_dir is not None and (run_dir / ITEMS_FILE).is_file():
        items += parse_items((run_dir / ITEMS_FILE).read_bytes(), ITEMS_FILE)
    try:
        items += parse_items(control_set.read_bytes(), control_set.name, group="control")
    except OSError:
        raise DatasetError(f"The control set {control_set} cannot be read; set storage.control_set.") from None
    return items


async def run_gate(backend: ChatBackend, adapter: str | None, items: list[GateItem], *, system_prompt: str,
                   notes: Callable[[str], list[str]] | None = None, min_control_kept: float = 0.9,
                   answer_tokens: int = ANSWER_TOKENS) -> GateReport:
    """Base (before teaching) and candidate (adapter + memory) answers, all submitted at once so the
    engine batches them side by side."""
    def ask(prompt: str, adapter_name: str | None, with_notes: bool) -> Any:
        user: Message = {"role": "user", "content": prompt}
        messages = [*system_messages(system_prompt, notes(prompt) if notes and with_notes else None), user]
        return backend.complete(messages, GenerationOptions(max_new_tokens=answer_tokens, adapter=adapter_name))

    base = [ask(i.prompt, None, False) for i in items]
    candidate = [ask(i.prompt, adapter, True) for i in items]
    answers = await asyncio.gather(*base, *candidate)
    before, after = answers[: len(items)], answers[len(items):]
    rows = [GateAnswer(i.prompt, i.expected, i.group, b.strip(), c.strip(), matches(b, i.expected, i.match),
                       matches(c, i.expected, i.match)) for i, b, c in zip(items, before, after)]
    return GateReport(adapter, rows, min_control_kept)


def save_report(run_dir: Path, report: GateReport) -> Path:
    path = run_dir / GATE_FILE
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["GATE_FILE", "GateItem", "GateAnswer", "GateReport", "check_gate", "load_items", "parse_items",
           "save_report"]
