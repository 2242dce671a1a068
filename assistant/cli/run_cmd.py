"""`assistant run`: the main job — the Discord bot when a token is set, else the terminal chat."""

from __future__ import annotations

import argparse
import logging

from assistant.config import Config

logger = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    if config.discord_token:
        from assistant.discord.bot import run_bot

        return run_bot(config)
    logger.info("%s is not set: starting the terminal conversation instead of the Discord bot.",
                config.discord.token_env)
    from assistant.cli.chat import cmd_chat

    return cmd_chat(argparse.Namespace(adapter=None), config)


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the assistant: the Discord bot if DISCORD_TOKEN is set, else chat here")
    run.set_defaults(handler=cmd_run)
