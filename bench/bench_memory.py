"""Instant memory recall: are taught facts found when people ask them back in their own words,
and left out of questions about something else? Word overlap (BM25) alone vs BM25 + sentence
embeddings (the default), on the learning loop's 5 facts:

- the 15 held-out paraphrases of `datasets/learning-facts.jsonl`;
- 25 questions asked back the way people type (`ASKED_BACK` below: shorter, other words);
- unrelated questions that must recall nothing: the shipped control set, the replay prompts and
  near misses that share words with a fact (`NEAR_MISSES`).

The thresholds (`memory.min_similarity` 0.65, `min_answer_similarity` 0.55) were chosen here;
`tests/test_memory_embedding.py` checks them on facts and questions that were not.

    python -m bench.bench_memory        # writes bench/results/memory.md
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from assistant.config import MemoryConfig
from assistant.memory import Fact, TeachingMemory, build_memory
from bench.common import machine, write_results

REPO = Path(__file__).resolve().parents[1]
FACTS = [json.loads(line) for line in (REPO / "datasets" / "learning-facts.jsonl").read_text().splitlines()]
ASKED_BACK = {  # the fact's `expected` -> questions
    "Brightwater": ["Who set up the Velmora Guild?", "who started velmora guild", "Who's behind the Velmora Guild?",
                    "Velmora Guild founder?", "Who is the person that created the Velmora Guild?"],
    "Orlume": ["Zantheria's main city?", "what city is zantheria governed from",
               "What's the capital of Zantheria again?", "Where is the seat of government in Zantheria?",
               "capital zantheria"],
    "copper-falcon": ["whats the wifi pw in the lab", "How do I get on the lab wifi? what's the password",
                      "lab wifi password pls", "What is the password for the wireless network in the lab?",
                      "Can you give me the lab Wi-Fi key?"],
    "Quibbles": ["Who's the mascot?", "What's our mascot's name?", "What is the server mascot?",
                 "Does our server have a mascot?", "What's the purple otter called?"],
    "Thursday": ["When is game night?", "When do we play games every week?", "what day is game night",
                 "Is game night on Friday?", "What time is the weekly game night?"],
}
NEAR_MISSES = ["What day is it today?", "How do I reset my Wi-Fi router?", "Who founded Microsoft?",
               "What's a good name for a cat?", "Tell me a joke about otters.", "What is a password manager?",
               "Which city is the capital of Japan?", "When is Christmas?", "What games do you like?",
               "Who is the founder of Apple?", "How many days are in a week?", "Which animal is the mascot of Linux?",
               "How do I join the guild?", "What is the wifi speed?", "Who won the game last night?",
               "What's the password policy here?", "Who founded the Roman Empire?"]


def unrelated() -> list[str]:
    control = [json.loads(line)["prompt"] for line in (REPO / "datasets" / "control.jsonl").read_text().splitlines()]
    replay = [line.strip() for line in (REPO / "datasets" / "replay_prompts.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    return sorted(set(control + replay + NEAR_MISSES))


def measure(memory: TeachingMemory) -> dict[str, object]:
    def right(question: str, expected: str) -> bool:
        hits = memory.recall(question)
        return bool(hits) and expected in hits[0].answer

    held_out = sum(right(q, f["expected"]) for f in FACTS for q in f["paraphrases"])
    asked = [(q, e) for e, qs in ASKED_BACK.items() for q in qs]
    missed = [q for q, e in asked if not right(q, e)]
    false = [q for q in unrelated() if memory.recall(q)]
    times = []
    for question in [q for q, _ in asked]:
        start = time.perf_counter()
        memory.recall(question)
        times.append((time.perf_counter() - start) * 1000)
    return {"held_out": held_out, "asked": len(asked) - len(missed), "asked_n": len(asked), "missed": missed,
            "false": false, "ms": statistics.median(times)}


def main() -> None:
    facts = [Fact(f["prompt"], f["answer"]) for f in FACTS]
    rows = {"BM25 alone (`memory.embedder = \"none\"`)": measure(TeachingMemory(MemoryConfig(embedder="none"),
                                                                                   lambda: facts)),
            "BM25 + all-MiniLM-L6-v2 (default)": measure(build_memory(MemoryConfig(), REPO / "models", lambda: facts))}
    n_unrelated = len(unrelated())
    lines = [f"5 taught facts (`datasets/learning-facts.jsonl`); {n_unrelated} unrelated questions (control set, "
             "replay prompts, near misses that share a word with a fact). A question counts as answered when its "
             "first recalled fact is the right one. Recall time: median per question (the embedding runs in numpy on OpenBLAS, this CPU).", "",
             "| recall | 15 held-out paraphrases | 25 asked back in other words | unrelated questions that "
             "recalled a fact | ms per question |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['held_out']}/15 | {r['asked']}/{r['asked_n']} | "
                     f"{len(r['false'])}/{n_unrelated} | {r['ms']:.1f} |")  # type: ignore[arg-type]
    for name, r in rows.items():
        if r["missed"] or r["false"]:
            lines += ["", f"{name}: missed {r['missed']}; recalled on unrelated {r['false']}"]
    lines += ["", f"Machine: {machine()}."]
    print("\n".join(lines))
    print(f"written to {write_results('memory', 'Instant memory: taught facts asked back in other words', lines)}")


if __name__ == "__main__":
    main()
