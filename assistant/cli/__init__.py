"""The `assistant` command: build config once, dispatch to a subcommand, turn errors into exit codes.

Each subcommand lives in its own module under `assistant/cli/` and exposes
`register(subparsers)`, which adds its parser and sets `handler=fn(args, config) -> int`.
Heavy imports (torch, whisper, nextcord) happen inside handlers, so `assistant --help`
and config errors are instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from assistant.config import Config, load_config, parse_config
from assistant.errors import AssistantError

COMMAND_MODULES = (
    "assistant.cli.run_cmd",
    "assistant.cli.chat",
    "assistant.cli.models",
    "assistant.cli.speech",
    "assistant.cli.serve",
)

DEFAULT_CONFIG = Path("config.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="A local-first voice assistant.")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def resolve_config(path: Path | None) -> Config:
    """--config PATH must exist; without it ./config.toml is used when present, else defaults."""
    if path is not None:
        return load_config(path)
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG)
    return parse_config({})


def setup_logging(debug: bool) -> None:
    """Our own INFO lines (what was loaded, where) on stderr; third-party chatter only with --debug."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for ours in ("assistant", "finetune"):
        logging.getLogger(ours).setLevel(logging.DEBUG if debug else logging.INFO)


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, build the config once, run the handler; every AssistantError becomes one line and an exit code.

    Shared by the `assistant` and `finetune` commands so both edges behave the same.
    """
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    try:
        config = resolve_config(args.config)
        # Read once by the OpenMP runtime (llama.cpp's and torch's) when it first loads: set it
        # before any command imports either. An explicit OMP_WAIT_POLICY in the environment wins.
        os.environ.setdefault("OMP_WAIT_POLICY", config.model.thread_wait.upper())
        return int(args.handler(args, config) or 0)
    except AssistantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
