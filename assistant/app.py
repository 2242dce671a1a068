"""Build the assistant's services from config, once: the one place the runtime is assembled.

The Discord bot, the terminal commands (`assistant chat/ask/serve`) and the training
process all start here, so they load the same backend with the same adapter, open the same
store and resolve `config.toml` the same way. Nothing here parses arguments or knows a front
end: an edge parses its own flags, then calls `run_edge` with what it parsed.

Arrows: `assistant.discord` and `assistant.cli` import this module; this module imports only
the core (config, engines, speech, store, adapters); `finetune` imports only the core.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from assistant.adapters import AdapterManager, active_adapter
from assistant.config import Config, load_config, parse_config
from assistant.conversation import Conversation
from assistant.errors import AdapterError, AssistantError
from assistant.llm import ChatBackend, create_backend
from assistant.llm.catalog import resolve_model_source
from assistant.store import Store

if TYPE_CHECKING:
    from assistant.speech.service import SpeechService

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config.toml")


def resolve_config(path: Path | None) -> Config:
    """--config PATH must exist; without it ./config.toml is used when present, else defaults."""
    if path is not None:
        return load_config(path)
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG)
    return parse_config({})


def setup_logging(debug: bool, *, debug_discord: bool = False) -> None:
    """Our own INFO lines (what was loaded, where) on stderr; third-party chatter only with --debug.
    nextcord stays at INFO even then unless `debug_discord`: its debug lines print voice-gateway
    frames with the voice token and the transport's secret key."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for ours in ("assistant", "finetune"):
        logging.getLogger(ours).setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:
        logging.getLogger("nextcord").setLevel(logging.DEBUG if debug_discord else logging.INFO)


def run_edge(handler: Callable[[Config], int | None], *, config_path: Path | None, debug: bool,
             debug_discord: bool = False) -> int:
    """Set up logging, build the config once, run `handler`; every AssistantError becomes one line and an exit code.

    Shared by `assistant`, `finetune` and the training process so every edge behaves the same.
    """
    setup_logging(debug, debug_discord=debug_discord)
    try:
        config = resolve_config(config_path)
        return int(handler(config) or 0)
    except AssistantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


async def open_backend(config: Config, adapter: str | None = None, *, use_active: bool = True) -> ChatBackend:
    """Create the configured backend with the adapter to use.

    The adapter is the argument, else `model.adapter`, else (with `use_active`) the one
    `finetune adapters activate` chose, so the terminal answers like the bot does.
    """
    backend = await asyncio.to_thread(create_backend, config.model, config.storage.models_dir,
                                      api_key=config.openai_api_key)
    path = adapter or config.model.adapter
    if path:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            await backend.aclose()
            raise AdapterError(f"The adapter folder {folder} does not exist.")
        await backend.load_adapter("active", str(folder))
        backend.set_active_adapter("active")
    elif use_active and backend.supports_adapters:
        active = active_adapter(config)
        if active is not None:
            try:
                await backend.load_adapter(active.parent.name, str(active))
                backend.set_active_adapter(active.parent.name)
                logger.info("Using the active adapter %s", active.parent.name)
            except AdapterError as exc:
                logger.warning("Not using the active adapter: %s", exc)
    return backend


def new_conversation(config: Config, backend: ChatBackend) -> Conversation:
    return Conversation(backend, system_prompt=config.model.system_prompt,
                        context_tokens=config.model.context_tokens, reply_tokens=config.model.max_new_tokens)


def open_speech(config: Config) -> SpeechService | None:
    """The speech service when its models are provisioned; without it the assistant still chats in text."""
    from assistant.speech.service import SpeechService

    try:
        return SpeechService(config.speech, config.storage)
    except Exception as exc:  # noqa: BLE001 - the assistant still chats in text without speech
        logger.warning("Speech is off: %s", exc)
        return None


@dataclass
class Runtime:
    """What every long-running front end needs: the model, the adapters kept in step with it, storage, speech."""

    config: Config
    backend: ChatBackend
    store: Store
    adapters: AdapterManager
    speech: SpeechService | None

    async def aclose(self) -> None:
        await self.backend.aclose()
        self.store.close()


async def build_runtime(config: Config, *, backend: ChatBackend | None = None) -> Runtime:
    """Load the model (unless given), open the store, load the active adapter and speech."""
    if backend is None:
        backend = await open_backend(config, use_active=False)  # the AdapterManager loads the active one
    store = Store.open(config.storage.database)
    base_source = resolve_model_source(config.model.name, config.storage.models_dir)
    adapters = AdapterManager(config.storage.runs_dir, backend, base_source)
    if not config.model.adapter:
        await adapters.load_active()
    speech = await asyncio.to_thread(open_speech, config)
    return Runtime(config=config, backend=backend, store=store, adapters=adapters, speech=speech)
