"""`train feedback`: the approved corrections, turned into data that teaches facts and moves nothing else.

Why not train on the corrections as they are: five rows are a few optimizer steps, and a
model trained on five exact strings repeats them to the exact questions, misses paraphrases
and drifts elsewhere (measured: 4/15 paraphrases, 5/10 control answers broken). So each
approved question is trained in `finetune.feedback_phrasings` phrasings (templates that
rephrase how it is asked) with the answer in two wordings, and `finetune.replay_rows` rows of
the *base model's own answers* to general prompts (`storage.replay_prompts`) are mixed in:
training on what the model already says holds unrelated behaviour in place. The replay
answers are generated once per base model and prompt file, and cached in the runs folder.

The export is the terminal's `finetune datasets export-feedback` (`export_feedback`), run
inside the job, so Discord and the terminal train on exactly the same rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import Config
from assistant.errors import DatasetError
from assistant.store import Store
from finetune.data import Dataset
from finetune.datasets_store import DatasetManager, export_feedback

logger = logging.getLogger(__name__)

FEEDBACK = "@feedback"  # the data name a job uses for "the approved feedback, exported now"
EXPORT_NAME = "feedback"
ASK = ["{q}", "{q_lower}", "Quick question: {q}", "Can you tell me this: {q}", "I was wondering, {q_lower}",
       "Please answer: {q}", "{q} Answer briefly.", "Do you know? {q}", "Hey, {q_lower}", "Tell me: {q}",
       "I need to know: {q}", "{q} Thanks!"]
HELD_OUT = ["Sorry to bother you, {q_lower}"]  # never trained: the gate's paraphrase of each taught question
SAY = ["{a}", "Sure! {a}"]
REPLAY_TOKENS = 64


@dataclass(frozen=True)
class Taught:
    question: str
    answer: str


def phrasings(question: str, n: int, templates: list[str] = ASK) -> list[str]:
    q = question.strip()
    lower = q[:1].lower() + q[1:] if q[:2] != q[:2].upper() else q
    out: list[str] = []
    for template in templates:
        text = template.format(q=q, q_lower=lower)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def keywords(answer: str, question: str) -> str:
    """The answer's last words that the question does not already contain: what a right answer must
    say (the gate checks them with `match = "keywords"`: every one present, in any order)."""
    asked = set(re.findall(r"\w+", question.casefold()))
    words = [w for w in re.findall(r"\w+", answer.casefold()) if w not in asked and len(w) > 2
             and w not in ("the", "and", "was", "are", "for", "our", "its", "that", "with", "called", "named")]
    return " ".join(words[-2:]) if words else answer


def augment(taught: list[Taught], n_phrasings: int) -> list[dict[str, Any]]:
    rows = []
    for item in taught:
        for i, asked in enumerate(phrasings(item.question, n_phrasings)):
            answer = SAY[i % len(SAY)].format(a=item.answer.strip())
            rows.append({"messages": [{"role": "user", "content": asked}, {"role": "assistant", "content": answer}],
                         "positive": True})
    return rows


def gate_items(taught: list[Taught]) -> list[dict[str, str]]:
    """What the gate asks of a feedback run: each taught question, and held-out rephrasings of it."""
    items = []
    for item in taught:
        expected = keywords(item.answer, item.question)
        items.append({"prompt": item.question, "expected": expected, "match": "keywords", "group": "taught"})
        for asked in phrasings(item.question, len(HELD_OUT), HELD_OUT):
            items.append({"prompt": asked, "expected": expected, "match": "keywords", "group": "paraphrase"})
    return items


def replay_prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError:
        logger.warning("No replay prompts at %s; training without replay rows", path)
        return []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def replay_rows(loaded: Any, prompts: list[str], *, cache_dir: Path, system_prompt: str) -> list[dict[str, Any]]:
    """The base model's own greedy answers to `prompts`, cached per base model and prompt list."""
    key = hashlib.sha256(json.dumps([loaded.source, system_prompt, prompts]).encode()).hexdigest()[:16]
    cache = cache_dir / f"replay-{key}.jsonl"
    if cache.is_file():
        return [json.loads(line) for line in cache.read_text(encoding="utf-8").split("\n") if line.strip()]
    from finetune.evaluate import generate_batch

    answers = generate_batch(loaded.model, loaded.tokenizer, prompts, system_prompt=system_prompt,
                             max_new_tokens=REPLAY_TOKENS)
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": _whole(a)}],
             "positive": True} for p, a in zip(prompts, answers) if _whole(a)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return rows


def _whole(answer: str) -> str:
    """An answer cut at its last full sentence: a reply cut by the token limit must not teach stopping mid-way."""
    answer = answer.strip()
    end = max(answer.rfind(". "), answer.rfind("! "), answer.rfind("? "))
    return answer if answer[-1:] in ".!?" or end < 0 else answer[: end + 1]


@dataclass(frozen=True)
class FeedbackData:
    taught: list[Taught]
    sft_rows: int  # approved corrections and 👍 replies exported
    pairs: int
    users: int
    paths: list[Path]


def export_for_training(config: Config, tokenizer: Any) -> FeedbackData:
    """Export the approved feedback (the terminal's export-feedback) and describe it."""
    with Store.open(config.storage.database) as store:
        manager = DatasetManager(config.storage.datasets_dir, store, tokenizer=tokenizer,
                                 max_seq_len=config.finetune.max_seq_len, system_prompt=config.model.system_prompt)
        infos = export_feedback(manager, EXPORT_NAME)
        approved = store.corrections(status="approved")
    sft = next((i for i in infos if i.name == EXPORT_NAME), None)
    pairs = next((i for i in infos if i.name != EXPORT_NAME), None)
    if sft is None:
        raise DatasetError("There is nothing approved to imitate yet: approve corrections with `review` first.")
    taught = list({(c.prompt.strip(), c.correction.strip()): Taught(c.prompt.strip(), c.correction.strip())
                   for c in approved if c.prompt.strip()}.values())
    return FeedbackData(taught, sft.rows, pairs.rows if pairs else 0,
                        len({c.user_id for c in approved}), [sft.path])


def training_datasets(loaded: Any, data: FeedbackData, exported: list[Dataset], config: Config,
                      out: Path) -> list[Dataset]:
    """Exported rows + phrasings of each taught item + replay rows; writes the gate's items next to the run."""
    settings = config.finetune
    rows = [r for d in exported for r in d.rows]
    rows += augment(data.taught, settings.feedback_phrasings)
    if settings.replay_rows:
        prompts = replay_prompts(config.storage.replay_prompts)[: settings.replay_rows]
        rows += replay_rows(loaded, prompts, cache_dir=config.storage.runs_dir / ".replay",
                            system_prompt=config.model.system_prompt)
    (out / "gate-items.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n"
                                                  for i in gate_items(data.taught)), encoding="utf-8")
    logger.info("Feedback run: %d taught items, %d rows in all", len(data.taught), len(rows))
    return [Dataset("messages", rows)]
