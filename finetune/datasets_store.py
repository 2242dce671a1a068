"""Managed datasets in `storage.datasets_dir`: add, list, show, archive, select, export feedback.

Why a folder per dataset plus a row in the store: the folder (`NAME/data.jsonl` in canonical
form + `meta.json`) is what training reads and what a human can inspect; the store row is
what the bot lists and selects from. Names come from users typing in Discord, so every name
is checked (`check_name`) before it touches a path, and nothing is written until the whole
file has validated.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import logging
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import DatasetError
from assistant.names import is_valid_name
from assistant.prompting import DEFAULT_GUARD, SpecialTokenGuard, guard_for
from assistant.provision import fsync_dir, fsync_tree
from assistant.store import Store
from finetune.data import Dataset, load_rows, preference_pairs, sft_rows, to_jsonl
from finetune.masking import tokenize_rows

logger = logging.getLogger(__name__)

DATA_FILE = "data.jsonl"
META_FILE = "meta.json"
ARCHIVE = "archive"


def check_name(name: str) -> str:
    """A dataset name safe to use as one folder name, or a DatasetError saying what is allowed."""
    if not is_valid_name(name) or name == ARCHIVE:
        raise DatasetError(f"Invalid dataset name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit (no slashes, no '..').")
    return name


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    format: str
    kind: str
    rows: int
    tokens: int
    sha256: str
    path: Path


class DatasetManager:
    """Datasets under `root`, registered in `store`. Token counts need the base model's tokenizer."""

    def __init__(self, root: Path, store: Store, *, tokenizer: Any = None, max_seq_len: int = 512,
                 system_prompt: str = "") -> None:
        self.root = root
        self.store = store
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.system_prompt = system_prompt

    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def add_bytes(self, raw: bytes, *, name: str, source: str, fmt: str = "auto", replace: bool = False) -> DatasetInfo:
        """Validate everything, then write the dataset atomically and register it."""
        check_name(name)
        final = self.folder(name)
        if final.exists() and not replace:
            raise DatasetError(f"A dataset named {name!r} already exists; pick another name or archive it first.")
        dataset = load_rows(raw, source, fmt=fmt)
        self._refuse_markers(dataset, source)
        tokens = self._count_tokens(dataset, source)
        body = to_jsonl(dataset.rows)
        digest = hashlib.sha256(body).hexdigest()
        meta = {"name": name, "format": dataset.format, "kind": dataset.kind, "rows": len(dataset.rows),
                "tokens": tokens, "sha256": digest, "source": source,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.root.mkdir(parents=True, exist_ok=True)
        stage = self.root / f".{name}.staging"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        (stage / DATA_FILE).write_bytes(body)
        (stage / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        fsync_tree(stage)  # whole on disk before it takes the name training reads
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
        fsync_dir(self.root)
        self.store.upsert_dataset(name=name, sha256=digest, format=dataset.format, rows=len(dataset.rows),
                                  tokens=tokens, path=str(final))
        logger.info("Stored dataset %s: %d rows, %d tokens", name, len(dataset.rows), tokens)
        return self.info(name)

    def add_file(self, path: Path, *, name: str, fmt: str = "auto", replace: bool = False) -> DatasetInfo:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"Cannot read {path} ({exc.strerror}); check the file name.") from None
        return self.add_bytes(raw, name=name, source=path.name, fmt=fmt, replace=replace)

    def _refuse_markers(self, dataset: Dataset, source: str) -> None:
        """An uploaded row that spells a control token would fake turn boundaries: refuse the file."""
        guard = guard_for(self.tokenizer) if self.tokenizer is not None else DEFAULT_GUARD
        for index, row in enumerate(dataset.rows, start=1):
            for text in row_texts(row):
                marker = guard.find(text)
                if marker is not None:
                    raise DatasetError(f"{source} row {index}: contains the model's control token {marker!r}, "
                                       "which would fake a chat turn; remove it (nothing was stored).")

    def _count_tokens(self, dataset: Dataset, source: str) -> int:
        if self.tokenizer is None:
            return 0
        rows = sft_rows(dataset)
        if dataset.kind == "preference":  # the rejected side must fit too
            rows = rows + [{"messages": [*r["prompt"], {"role": "assistant", "content": r["rejected"]}]}
                           for r in dataset.rows]
        return sum(len(t.input_ids) for t in tokenize_rows(self.tokenizer, rows, max_seq_len=self.max_seq_len,
                                                              system_prompt=self.system_prompt, source=source))

    def info(self, name: str) -> DatasetInfo:
        folder = self.folder(name)
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DatasetError(f"No dataset named {name!r}; see `finetune datasets list`.") from None
        return DatasetInfo(name, meta["format"], meta["kind"], meta["rows"], meta["tokens"], meta["sha256"],
                           folder / DATA_FILE)

    def list(self) -> list[DatasetInfo]:
        if not self.root.is_dir():
            return []
        return [self.info(p.name) for p in sorted(self.root.iterdir())
                if p.is_dir() and is_valid_name(p.name) and p.name != ARCHIVE and (p / META_FILE).is_file()]

    def load(self, name: str) -> Dataset:
        info = self.info(name)
        canonical = "preference" if info.kind == "preference" else "messages"  # stored rows are canonical
        return load_rows(info.path.read_bytes(), f"dataset {name}", fmt=canonical)

    def archive(self, name: str) -> Path:
        """Pack NAME into archive/NAME-<time>.tar.gz (with a manifest) and remove it from the active set."""
        info = self.info(name)
        folder = self.folder(name)
        target_dir = self.root / ARCHIVE
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.tar.gz"
        manifest = {"name": name, "sha256": info.sha256, "rows": info.rows, "tokens": info.tokens,
                    "format": info.format, "archived": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": sorted(p.name for p in folder.iterdir())}
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=f"{name}/{path.name}")
            blob = json.dumps(manifest, indent=2).encode("utf-8")
            entry = tarfile.TarInfo(f"{name}/manifest.json")
            entry.size = len(blob)
            tar.addfile(entry, io.BytesIO(blob))
        partial.rename(target)
        shutil.rmtree(folder)
        self.store.archive_dataset(name, str(target))
        return target

    def select(self, names: "builtins.list[str]") -> "builtins.list[str]":
        """Set what the next job trains on; every name must be an active dataset."""
        for name in names:
            self.info(name)
        self.store.select_datasets(names)
        return self.store.selected_datasets()

    def selected(self) -> "builtins.list[str]":
        return self.store.selected_datasets()


def row_texts(row: dict[str, Any]) -> list[str]:
    """Every piece of text in a canonical row (SFT or preference)."""
    if "messages" in row:
        return [m["content"] for m in row["messages"]]
    return [m["content"] for m in row["prompt"]] + [row["chosen"], row["rejected"]]


def feedback_rows(store: Store, guard: SpecialTokenGuard = DEFAULT_GUARD) -> tuple[list[dict[str, Any]],
                                                                                 list[dict[str, Any]]]:
    """SFT rows and preference pairs from *approved* corrections and 👍/👎 reactions.

    A correction gives an SFT row (prompt → correction) and a pair (correction chosen, the bot's
    original reply rejected). A reply with a positive reaction score is an SFT row to imitate; a
    negative score is a `positive: false` row (never imitated). Pending and rejected items are
    never exported; the same prompt and answer from several users count once; people's text is
    escaped so it cannot spell a control token (prompting.py).
    """
    sft: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for c in store.corrections(status="approved"):
        key = (" ".join(c.prompt.casefold().split()), " ".join(c.correction.casefold().split()))
        if not c.prompt.strip() or key in seen:
            continue
        seen.add(key)
        prompt = [{"role": "user", "content": guard.escape(c.prompt)}]
        answer = guard.escape(c.correction)
        sft.append({"messages": [*prompt, {"role": "assistant", "content": answer}], "positive": True})
        if c.original_reply.strip() and c.original_reply.strip() != c.correction.strip():
            pairs.append({"prompt": prompt, "chosen": answer, "rejected": guard.escape(c.original_reply)})
    for r in store.labelled_replies(status="approved"):
        if r.score != 0 and r.prompt.strip() and r.reply.strip():
            sft.append({"messages": [{"role": "user", "content": guard.escape(r.prompt)},
                                     {"role": "assistant", "content": guard.escape(r.reply)}],
                        "positive": r.score > 0})
    return sft, pairs


def export_feedback(manager: DatasetManager, name: str) -> list[DatasetInfo]:
    """Store corrections and reactions as datasets NAME (SFT) and NAME-pairs (preference pairs)."""
    check_name(name)
    guard = guard_for(manager.tokenizer) if manager.tokenizer is not None else DEFAULT_GUARD
    sft, pairs = feedback_rows(manager.store, guard)
    made = []
    if any(r["positive"] for r in sft):
        made.append(manager.add_bytes(to_jsonl(sft), name=name, source="stored feedback", fmt="messages",
                                      replace=True))
    if pairs:
        made.append(manager.add_bytes(to_jsonl(pairs), name=f"{name}-pairs", source="stored corrections",
                                      fmt="preference", replace=True))
    if not made:
        raise DatasetError("There are no approved corrections or rated replies to export yet; use `correct` or "
                           "react with 👍/👎 on the assistant's replies, then approve them (`review`, or "
                           "`finetune feedback approve`).")
    return made


__all__ = ["DatasetInfo", "DatasetManager", "check_name", "export_feedback", "feedback_rows",
           "preference_pairs", "sft_rows"]
