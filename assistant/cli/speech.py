"""`assistant transcribe FILE` and `assistant say TEXT -o OUT.wav|OUT.ogg`: speech from the terminal.

Examples:
    assistant transcribe voice-message.ogg
    assistant transcribe talk.mp3 --json
    assistant say "Hello there. How are you?" -o hello.ogg --voice en_US-joe-medium
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from assistant.config import Config


def cmd_transcribe(args: argparse.Namespace, config: Config) -> int:
    from assistant.speech.service import SpeechService

    started = time.perf_counter()
    service = SpeechService(config.speech, config.storage)
    service.recognizer  # noqa: B018 - load now, so the timings below separate loading from work
    loaded = time.perf_counter()
    transcript = service.transcribe_sync(args.file, language=args.language)
    if args.json:
        out = transcript.as_dict()
        out["load_seconds"] = round(loaded - started, 3)
        out["total_seconds"] = round(time.perf_counter() - started, 3)
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(transcript.text)
    return 0


def cmd_say(args: argparse.Namespace, config: Config) -> int:
    from assistant.speech.service import synthesize_to_file

    text = sys.stdin.read() if args.text == "-" else args.text
    path = synthesize_to_file(config, text, args.output, voice=args.voice, language=args.language)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("transcribe", help="print what is said in an audio file (ogg, mp3, m4a, wav, webm, flac)")
    tr.add_argument("file", type=Path, help="audio file")
    tr.add_argument("--json", action="store_true", help="print segments, language and timings as JSON")
    tr.add_argument("--language", default=None, help="language spoken (default: speech.language)")
    tr.set_defaults(handler=cmd_transcribe)
    say = sub.add_parser("say", help="speak text into a .wav or .ogg file with a Piper voice")
    say.add_argument("text", help="what to say ('-' reads standard input)")
    say.add_argument("-o", "--output", type=Path, required=True, help="output file: .wav or .ogg")
    say.add_argument("--voice", default=None, help="voice name in the voices folder (default: speech.voice)")
    say.add_argument("--language", default=None, help="pick the voice mapped to this language in speech.voices")
    say.set_defaults(handler=cmd_say)
