"""`assistant chat` (a terminal conversation) and `assistant ask` (one answer, for scripts)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from assistant.app import new_conversation, open_backend
from assistant.config import Config
from assistant.llm import default_options

logger = logging.getLogger(__name__)

HELP = "Commands: /reset clears the conversation, /exit (or Ctrl-D) leaves."


async def _chat(config: Config, adapter: str | None) -> int:
    backend = await open_backend(config, adapter)
    conversation = new_conversation(config, backend)
    print(f"Talking to {config.model.name}. {HELP}", flush=True)
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                print()
                return 0
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                conversation.reset()
                print("(conversation cleared)")
                continue
            if text.startswith("/"):
                print(f"Unknown command {text.split()[0]}. {HELP}")
                continue
            print("assistant> ", end="", flush=True)
            async for delta in conversation.reply(text, default_options(config.model)):
                print(delta, end="", flush=True)
            print(flush=True)
    finally:
        await backend.aclose()


async def _ask(config: Config, args: argparse.Namespace) -> int:
    question = args.question
    if args.audio:
        from assistant.speech.service import transcribe_file

        transcript = await asyncio.to_thread(transcribe_file, config, Path(args.audio))
        question = transcript.text
        print(f"(heard: {question})", file=sys.stderr)
    if not question or not question.strip():
        print("error: give a question, or --audio FILE", file=sys.stderr)
        return 2
    # One answer: merging the active adapter in the background would compete with it for the CPU
    # and be cut off at exit (an `assistant chat` or the bot merges it).
    model = dataclasses.replace(config.model, merge_active_adapter=False)
    backend = await open_backend(dataclasses.replace(config, model=model), args.adapter)
    try:
        conversation = new_conversation(config, backend)
        options = default_options(config.model, spoken=bool(args.speak),
                                  **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}))
        answer = "".join([d async for d in conversation.reply(question.strip(), options)]).strip()
    finally:
        await backend.aclose()
    print(answer, flush=True)
    if args.speak:
        from assistant.speech.service import synthesize_to_file

        out = await asyncio.to_thread(synthesize_to_file, config, answer, Path(args.speak))
        print(f"(spoken answer written to {out})", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace, config: Config) -> int:
    return asyncio.run(_chat(config, args.adapter))


def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    return asyncio.run(_ask(config, args))


def register(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="talk to the assistant in the terminal")
    chat.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder to use")
    chat.set_defaults(handler=cmd_chat)
    ask = sub.add_parser("ask", help="answer one question and exit (greedy by default: reproducible)")
    ask.add_argument("question", nargs="?", help="the question (or use --audio)")
    ask.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder to use")
    ask.add_argument("--max-new-tokens", type=int, metavar="N", help="longest answer, in tokens")
    ask.add_argument("--audio", metavar="FILE", help="ask by voice: transcribe this audio file first")
    ask.add_argument("--speak", metavar="OUT", help="also speak the answer into OUT (.wav or .ogg)")
    ask.set_defaults(handler=cmd_ask)
