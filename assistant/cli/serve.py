"""`assistant serve`: expose the local model as an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web

from assistant.config import Config

logger = logging.getLogger(__name__)


async def _serve(config: Config, host: str, port: int) -> int:
    from assistant.app import open_backend
    from assistant.llm import default_options
    from assistant.openai_server import create_app

    backend = await open_backend(config)
    app = create_app(backend, model_name=config.model.name, defaults=default_options(config.model),
                     api_key=config.openai_api_key, bind_host=host,
                     max_concurrent=config.serve.max_concurrent_requests, max_body_bytes=config.serve.max_body_bytes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"Serving {config.model.name} at http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await backend.aclose()
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from assistant.openai_server import is_loopback

    if not is_loopback(args.host) and not config.openai_api_key:
        print(f"error: serving on {args.host} lets other machines use the model; set an API key in "
              f"{config.model.openai_api_key_env} first (clients send it as 'Authorization: Bearer KEY'), "
              "or bind to 127.0.0.1.")
        return 2
    return asyncio.run(_serve(config, args.host, args.port))


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve the local model as an OpenAI-compatible API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.set_defaults(handler=cmd_serve)
