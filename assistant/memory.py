"""Instant memory: approved corrections retrieved into the prompt of a question like theirs.

Why retrieval next to LoRA: training takes minutes and can move unrelated answers; a fact an
admin approved should be answered right away, and a question that resembles no taught one
must get exactly the prompt it got before (so its answer cannot change). Two judges, either
of which recalls a fact:
- BM25 over the taught questions (no weights): the score is normalised by the taught
  question's score against itself, so `memory.min_score` means "share of the taught
  question's own evidence" whatever the corpus size. Exact words, typos in names included.
- Sentence embeddings (`assistant/embedding.py`): the question's cosine similarity to the
  taught question (`min_similarity`) or to the taught answer (`min_answer_similarity`, for
  questions asked about what the answer says). This is what hears paraphrases: "Who's the
  mascot?" shares one word with "What is our server's mascot called?".
Below both thresholds nothing is added.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from assistant.config import MemoryConfig
from assistant.store import Store

K1 = 1.2
B = 0.75
STOPWORDS = frozenset("""a an the is are was were be been am do does did of to in on at for from by with and or
what whats who whom whose which when where why how i me my you your yours we our us it its this that these those
there here please tell say can could would will shall should may might must just about know let lets give
some any much many very also it's i'm is it s""".split())


def terms(text: str) -> list[str]:
    """Lower-cased content words, with a crude plural/verb-ending fold (BM25 needs no stemmer to work)."""
    words = re.findall(r"[\w'-]+", text.casefold())
    out = []
    for word in words:
        word = word.strip("'-").removesuffix("'s")
        if not word or word in STOPWORDS:
            continue
        for suffix in ("ly", "es", "s", "ed", "ing"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


@dataclass(frozen=True)
class Fact:
    question: str
    answer: str


class Bm25:
    """Okapi BM25 over short documents (the taught questions)."""

    def __init__(self, docs: list[list[str]]) -> None:
        self.docs = [Counter(d) for d in docs]
        self.lengths = [len(d) for d in docs]
        self.avg = sum(self.lengths) / len(docs) if docs else 1.0
        df: Counter[str] = Counter(t for d in docs for t in set(d))
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def score(self, query: list[str], index: int) -> float:
        doc, length = self.docs[index], self.lengths[index]
        total = 0.0
        for term in set(query):
            tf = doc.get(term, 0)
            if tf:
                total += self.idf[term] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / max(self.avg, 1e-9)))
        return total


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length rows, one per text."""
        ...


class TeachingMemory:
    """Approved facts, refreshed from a loader (the store) when they change; safe from any thread."""

    def __init__(self, config: MemoryConfig, load: Callable[[], list[Fact]], embedder: Embedder | None = None) -> None:
        self.config = config
        self._load = load
        self.embedder = embedder
        self._lock = threading.Lock()
        self._facts: list[Fact] = []
        self._index = Bm25([])
        self._self_scores: list[float] = []
        self._vectors: dict[str, np.ndarray] = {}  # text -> its embedding, kept across refreshes
        self._questions = self._answers = np.zeros((0, 0), np.float32)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the approved facts (after a review decision)."""
        facts = self._load() if self.config.enabled else []
        docs = [terms(f.question) for f in facts]
        index = Bm25(docs)
        selfs = [index.score(d, i) for i, d in enumerate(docs)]
        vectors = self._embed([f.question for f in facts] + [f.answer for f in facts])
        questions, answers = vectors[:len(facts)], vectors[len(facts):]
        with self._lock:
            self._facts, self._index, self._self_scores = facts, index, selfs
            self._questions, self._answers = questions, answers

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts`, computing only those not seen before (refreshes are frequent);
        the cache keeps exactly the current facts' texts, so rejected ones do not pile up."""
        if self.embedder is None or not texts:
            return np.zeros((len(texts), 0), np.float32)
        with self._lock:
            known = dict(self._vectors)
        new = sorted({t for t in texts if t not in known})
        if new:
            known.update(zip(new, self.embedder.embed(new), strict=True))
        with self._lock:
            self._vectors = {t: known[t] for t in texts}
        return np.stack([known[t] for t in texts])

    def __len__(self) -> int:
        return len(self._facts)

    def recall(self, question: str) -> list[Fact]:
        """The taught facts close enough to `question`, best first (at most `max_facts`)."""
        query = terms(question)
        with self._lock:
            facts, index, selfs = self._facts, self._index, self._self_scores
            questions, answers = self._questions, self._answers
        if not question.strip() or not facts:
            return []
        closeness = [index.score(query, i) / selfs[i] / self.config.min_score if selfs[i] > 0 and query else 0.0
                     for i in range(len(facts))]
        if self.embedder is not None and questions.size:
            asked = self.embedder.embed([question])[0]
            closeness = np.maximum.reduce([np.asarray(closeness), questions @ asked / self.config.min_similarity,
                                           answers @ asked / self.config.min_answer_similarity]).tolist()
        scored = []
        for i, fact in enumerate(facts):
            if closeness[i] >= 1.0:  # 1 = exactly at a threshold
                scored.append((closeness[i], -i, fact))
        scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
        seen: set[str] = set()
        picked = []
        for _, _, fact in scored:
            if fact.answer not in seen:
                seen.add(fact.answer)
                picked.append(fact)
        return picked[: self.config.max_facts]

    def notes(self, question: str) -> list[str]:
        """The recalled facts as lines for the system prompt."""
        return [f"Q: {f.question} A: {f.answer}" for f in self.recall(question)]


def build_memory(config: MemoryConfig, models_dir: Path, load: Callable[[], list[Fact]]) -> TeachingMemory:
    """The memory with the configured embedder (BM25 alone when it is off or not provisioned)."""
    from assistant.embedding import load_embedder

    return TeachingMemory(config, load, load_embedder(models_dir, config.embedder) if config.enabled else None)


def approved_facts(store: Store) -> list[Fact]:
    """The approved corrections as facts (the only ones memory may recall)."""
    return [Fact(c.prompt, c.correction) for c in store.corrections(status="approved") if c.prompt.strip()]
