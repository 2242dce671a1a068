"""The `assistant` command: build config once, dispatch to a subcommand, turn errors into exit codes.

Each subcommand lives in its own module under `assistant/cli/` and exposes
`register(subparsers)`, which adds its parser and sets `handler=fn(args, config) -> int`.
Heavy imports (torch, whisper, nextcord) happen inside handlers, so `assistant --help`
and config errors are instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from assistant.app import run_edge
from assistant.config import Config
from assistant.omp import apply_thread_wait

COMMAND_MODULES = (
    "assistant.cli.run_cmd",
    "assistant.cli.chat",
    "assistant.cli.models",
    "assistant.cli.speech",
    "assistant.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="A local-first voice assistant.")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--debug-discord", action="store_true",
                        help="with --debug, also nextcord's debug lines (they contain voice session secrets)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse the flags, then let `assistant.app.run_edge` build the config and turn errors into exit codes."""
    args = parser.parse_args(argv)

    def handler(config: Config) -> int:
        # Read once by each OpenMP runtime (llama.cpp's, whisper.cpp's, torch's) when it first
        # loads: set before any command imports one. A policy already in the environment wins.
        apply_thread_wait(config.model.thread_wait)
        return int(args.handler(args, config) or 0)

    return run_edge(handler, config_path=args.config, debug=args.debug, debug_discord=args.debug_discord)


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
