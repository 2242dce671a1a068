"""The instant memory hears taught facts asked back in other words (real MiniLM weights).

The facts and questions here are not the benchmark's (`bench/bench_memory.py`, where the
thresholds were chosen): a held-out check that they carry over to facts nobody tuned them on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from assistant.config import MemoryConfig
from assistant.embedding import SentenceEmbedder, embedder_dir, is_embedder_ready, load_embedder
from assistant.errors import ConfigError
from assistant.memory import Fact, TeachingMemory, build_memory
from tests.conftest import REPO

MODELS = REPO / "models"
pytestmark = pytest.mark.skipif(not is_embedder_ready(MODELS), reason="run `assistant models fetch --only embed`")

TAUGHT = {  # question -> (answer, what a right answer contains, asked back in other words)
    "When does the swimming pool open?": ("The community pool opens at 7 am on weekdays.", "7 am", [
        "What time does the pool open?", "when's the pool opening on weekdays", "Is the pool open early in the morning?"]),
    "Who is the moderator of the art channel?": ("Priya Kandel moderates the art channel.", "Priya", [
        "Who moderates art?", "Who runs the art channel?", "who's the art channel mod"]),
    "What's the name of our Minecraft server?": ("Our Minecraft server is called Emberfall.", "Emberfall", [
        "What is the Minecraft server called?", "name of the minecraft server?", "Which Minecraft world do we play on?"]),
    "How much is the yearly membership fee?": ("The yearly membership fee is 40 euros.", "40 euros", [
        "How much does membership cost per year?", "What's the annual fee?", "how expensive is it to be a member"]),
    "Where do we meet for the hiking trip?": ("We meet at the north gate of Lindenpark for the hiking trip.", "Lindenpark", [
        "Where's the meeting point for the hike?", "Where should I go for the hiking trip?", "hike meetup location?"]),
}
UNRELATED = ["What time is it?", "Who painted the Mona Lisa?", "How do I install Minecraft?", "What is a membership card?",
             "Where is Mount Everest?", "How do I swim faster?", "How much is 15 euros in dollars?",
             "Tell me a fun fact about art.", "What is the best Minecraft seed?", "Who moderates Reddit?",
             "What is a hiking boot?", "What is the capital of France?"]
FACTS = [Fact(q, answer) for q, (answer, _, _) in TAUGHT.items()]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    loaded = load_embedder(MODELS, "all-minilm-l6-v2")
    assert loaded is not None
    return loaded


def recalled(memory: TeachingMemory) -> int:
    return sum(bool(hits := memory.recall(asked)) and expected in hits[0].answer
               for _, expected, paraphrases in TAUGHT.values() for asked in paraphrases)


def test_numpy_encoder_matches_transformers(embedder: SentenceEmbedder) -> None:
    """Our numpy BERT is the sentence-transformers pipeline: BertModel, mean pooling, L2 norm."""
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, BertModel

    texts = ["Who's the mascot?", "A longer sentence, with punctuation; and UPPER case words.", "é 中文 <|im_start|>"]
    folder = embedder_dir(MODELS)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = BertModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    ours = embedder.embed(texts)
    assert ours.shape == (3, 384) and np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.allclose(embedder.embed(texts[:1]), ours[:1], atol=1e-5), "padding in a batch changes nothing"


def test_paraphrases_are_recalled_and_unrelated_questions_are_not(embedder: SentenceEmbedder) -> None:
    memory = TeachingMemory(MemoryConfig(), lambda: FACTS, embedder)
    words_only = TeachingMemory(MemoryConfig(embedder="none"), lambda: FACTS)
    assert recalled(memory) >= 14, "at least 14 of 15 paraphrases bring back their fact"
    assert recalled(words_only) < recalled(memory), "the embedder is what hears the paraphrases"
    assert {q: [f.question for f in memory.recall(q)] for q in UNRELATED} == {q: [] for q in UNRELATED}
    for question, (answer, _, _) in TAUGHT.items():
        assert memory.recall(question)[0].answer == answer, "the exact question, of course"


class Counting:
    def __init__(self, inner: SentenceEmbedder) -> None:
        self.inner, self.texts = inner, 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_a_refresh_embeds_only_new_facts(embedder: SentenceEmbedder) -> None:
    facts = FACTS[:2]
    counting = Counting(embedder)
    memory = TeachingMemory(MemoryConfig(), lambda: list(facts), counting)
    assert counting.texts == 4  # two questions, two answers
    facts.append(FACTS[2])
    memory.refresh()
    assert counting.texts == 6 and len(memory) == 3
    assert memory.recall("name of the minecraft server?")[0].answer == FACTS[2].answer


def test_without_the_embedder_memory_falls_back_to_word_overlap(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="assistant.embedding"):
        memory = build_memory(MemoryConfig(), tmp_path, lambda: FACTS)
    assert memory.embedder is None and "models fetch --only embed" in caplog.text
    assert memory.recall("What time does the pool open?")[0].answer == FACTS[0].answer
    assert build_memory(MemoryConfig(embedder="none"), MODELS, lambda: FACTS).embedder is None


def test_config_refuses_an_unknown_embedder(tmp_path: Path) -> None:
    from assistant.config import load_config

    path = tmp_path / "config.toml"
    path.write_text('[memory]\nembedder = "word2vec"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="embedder"):
        load_config(path, environ={})


def test_many_texts_are_embedded_in_batches_with_the_same_result(embedder: SentenceEmbedder) -> None:
    texts = [f"Question number {i} about the {'pool' if i % 2 else 'art channel'}?" for i in range(70)]
    together = embedder.embed(texts)
    assert together.shape == (70, 384)
    assert np.allclose(together[[0, 33, 69]], embedder.embed([texts[0], texts[33], texts[69]]), atol=1e-5)
