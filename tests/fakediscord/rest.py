"""REST plumbing (routing, auth, rate limits, Discord-shaped errors) and the small
routes: gateway discovery, users, guild lookups, application info, CDN.

Responses are built by hand: nextcord compares ``Content-Type`` with ``==`` to
``application/json``, so aiohttp's ``json_response`` (which appends a charset)
would make every body look like text.  Unknown routes answer Discord's 404 and
are logged loudly, so a missing route shows up as a failure, not a hang.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp import BodyPartReader
from multidict import MultiMapping

from . import cdn, payloads
from .state import World

if TYPE_CHECKING:
    from .ratelimit import RateLimiter

log = logging.getLogger("fakediscord")


class ApiError(Exception):
    """Raised by handlers; becomes Discord's ``{"message", "code"}`` error body."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None):
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors


def not_found(what: str, code: int) -> ApiError:
    return ApiError(404, code, f"Unknown {what}")


@dataclass
class UploadedFile:
    index: int
    filename: str
    content_type: str
    data: bytes


@dataclass
class Request:
    method: str
    path: str
    route: str
    params: dict[str, str]
    query: MultiMapping[str]
    json: Any
    files: list[UploadedFile]

    def snowflake(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise ApiError(400, 50035, "Invalid Form Body", {name: "Value is not snowflake."})


@dataclass
class Reply:
    status: int = 200
    body: Any = None


@dataclass
class RequestRecord:
    """One REST call as the server saw it (tests assert on these)."""

    at: float
    method: str
    path: str
    route: str
    status: int = 0
    body: Any = None
    files: list[str] = field(default_factory=list)


Handler = Callable[["RestApi", Request], Awaitable[Any]]


class RouteTable:
    """Collects ``(method, template, handler)``; templates use Discord's ``{names}``."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, Handler]] = []

    def route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.entries.append((method, template, handler))
            return handler

        return register


class Router:
    def __init__(self, *tables: RouteTable) -> None:
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        for table in tables:
            for method, template, handler in table.entries:
                pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
                self._routes.append((method, template, re.compile(f"^{pattern}$"), handler))

    def match(self, method: str, path: str) -> tuple[str, dict[str, str], Handler | None] | None:
        """``(template, params, handler)``; handler None means wrong method (405).

        Literal segments win over placeholders (``/users/@me`` over ``/users/{user_id}``).
        """
        best: tuple[int, str, dict[str, str], Handler | None] | None = None
        for m, template, pattern, handler in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            rank = template.count("{") + (100 if m != method else 0)
            if best is None or rank < best[0]:
                params = {k: unquote(v) for k, v in found.groupdict().items()}
                best = (rank, template, params, handler if m == method else None)
        return None if best is None else best[1:]


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"Via": "1.1 google", **(headers or {})}
    if status == 204 or body is None:
        return web.Response(status=204 if body is None and status < 300 else status, headers=hdrs)
    hdrs["Content-Type"] = "application/json"
    return web.Response(status=status, body=json.dumps(body).encode(), headers=hdrs)


def error_body(err: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"message": err.message, "code": err.code}
    if err.errors is not None:
        body["errors"] = err.errors
    return body


NO_AUTH = re.compile(r"^/(gateway|interactions/|webhooks/\d+/[^/]+)")


class RestApi:
    def __init__(self, world: World, limiter: RateLimiter, router: Router, token: str | None) -> None:
        self.world, self.limiter, self.router, self.token = world, limiter, router, token
        self.gateway_url = ""
        self.requests: list[RequestRecord] = []
        self.unknown_routes: list[str] = []
        self.errors: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        version = re.match(r"^/api/v(\d+)(/.*)$", raw)
        path = version.group(2) if version else raw
        record = RequestRecord(time.monotonic(), request.method, unquote(path), "")
        self.requests.append(record)
        try:
            return await self._handle(request, path, record)
        except ApiError as err:
            record.status = err.status
            return json_reply(err.status, error_body(err))
        except Exception as exc:
            # A fakediscord bug: loud, and 501 so nextcord fails at once instead of
            # retrying a 500 with growing sleeps.
            log.exception("fakediscord: %s %s crashed", request.method, path)
            self.errors.append(f"{request.method} {record.path}: {exc!r}")
            record.status = 501
            return json_reply(501, {"message": f"fakediscord bug: {exc!r}", "code": 0})
        finally:
            self.world.notify()

    async def _handle(self, request: web.Request, path: str, record: RequestRecord) -> web.Response:
        matched = self.router.match(request.method, path)
        if matched is None:
            self.unknown_routes.append(f"{request.method} {record.path}")
            log.error("fakediscord: no route for %s %s (answering 404)", request.method, path)
            raise ApiError(404, 0, "404: Not Found")
        template, params, handler = matched
        record.route = template
        if handler is None:
            raise ApiError(405, 0, "405: Method Not Allowed")
        if not NO_AUTH.match(path):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bot ") or (self.token is not None and auth[4:] != self.token):
                raise ApiError(401, 0, "401: Unauthorized")
        decision = self.limiter.check(request.method, record.path, template, params)
        if decision.status == 429:
            record.status = 429
            return json_reply(429, decision.body, decision.headers)
        body, files = await self._read_body(request)
        record.body, record.files = body, [f.filename for f in files]
        req = Request(request.method, record.path, template, params, request.query, body, files)
        result = await handler(self, req)
        reply = result if isinstance(result, Reply) else Reply(200 if result is not None else 204, result)
        record.status = reply.status
        return json_reply(reply.status, reply.body, decision.headers)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
        if not request.can_read_body:
            return None, []
        if request.content_type == "multipart/form-data":
            body: Any = None
            files: list[UploadedFile] = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # nested multipart: Discord does not use it
                name = part.name or ""
                data = await part.read(decode=False)
                if name == "payload_json":
                    body = _parse_json(bytes(data))
                elif (index := re.fullmatch(r"files\[(\d+)\]", name)) is not None:
                    files.append(
                        UploadedFile(
                            int(index.group(1)),
                            part.filename or f"file{index.group(1)}",
                            part.headers.get("Content-Type", "application/octet-stream"),
                            bytes(data),
                        )
                    )
            return body, files
        raw = await request.read()
        return (_parse_json(raw) if raw else None), []

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """``/attachments/{channel}/{id}/{filename}``: the bytes a test uploaded."""
        response = cdn.serve(self.world.attachments, request)
        self.requests.append(RequestRecord(time.monotonic(), "GET", request.path, "CDN", response.status))
        self.world.notify()
        return response

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        self.unknown_routes.append(f"{request.method} {request.path}")
        log.error("fakediscord: no route for %s %s (answering 404)", request.method, request.path)
        return json_reply(404, {"message": "404: Not Found", "code": 0})


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, 50109, "The request body contains invalid JSON.")


# -- small routes ------------------------------------------------------------------------
routes = RouteTable()


@routes.route("GET", "/gateway")
async def get_gateway(api: RestApi, req: Request) -> Any:
    return {"url": api.gateway_url}


@routes.route("GET", "/gateway/bot")
async def get_gateway_bot(api: RestApi, req: Request) -> Any:
    return {
        "url": api.gateway_url,
        "shards": 1,
        "session_start_limit": {
            "total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1,
        },
    }


@routes.route("GET", "/users/@me")
async def get_me(api: RestApi, req: Request) -> Any:
    return {**payloads.user(api.world.bot), "verified": True, "mfa_enabled": False, "email": None}


@routes.route("GET", "/users/{user_id}")
async def get_user(api: RestApi, req: Request) -> Any:
    user = api.world.users.get(req.snowflake("user_id"))
    if user is None:
        raise not_found("User", 10013)
    return payloads.user(user)


@routes.route("POST", "/users/@me/channels")
async def open_dm(api: RestApi, req: Request) -> Any:
    recipient = int((req.json or {}).get("recipient_id", 0))
    if recipient not in api.world.users:
        raise not_found("User", 10013)
    return payloads.channel(api.world.dm_channel(recipient))


@routes.route("GET", "/users/@me/guilds")
async def my_guilds(api: RestApi, req: Request) -> Any:
    return [
        {"id": str(g.id), "name": g.name, "icon": None, "owner": False,
         "permissions": str(payloads.permissions(g, g.members[api.world.bot.id])), "features": []}
        for g in api.world.guilds.values()
    ]


@routes.route("DELETE", "/users/@me/guilds/{guild_id}")
async def leave_guild(api: RestApi, req: Request) -> Any:
    _guild(api, req)
    api.world.remove_bot_from(req.snowflake("guild_id"))
    return Reply(204)


@routes.route("GET", "/oauth2/applications/@me")
@routes.route("GET", "/applications/@me")
async def application_info(api: RestApi, req: Request) -> Any:
    w = api.world
    return {
        "id": str(w.application_id), "name": w.bot.username, "icon": None,
        "description": "", "summary": "", "rpc_origins": [], "bot_public": True,
        "bot_require_code_grant": False, "owner": payloads.user(w.alice), "team": None,
        "verify_key": "0" * 64, "flags": 0, "bot": payloads.user(w.bot),
    }


def _guild(api: RestApi, req: Request) -> Any:
    guild = api.world.guilds.get(req.snowflake("guild_id"))
    if guild is None:
        raise not_found("Guild", 10004)
    return guild


@routes.route("GET", "/guilds/{guild_id}")
async def get_guild(api: RestApi, req: Request) -> Any:
    g = _guild(api, req)
    data = payloads.guild_create(api.world, g, all_members=False)
    for key in ("members", "channels", "threads", "voice_states", "presences", "joined_at"):
        data.pop(key, None)
    data.update(approximate_member_count=len(g.members), approximate_presence_count=0)
    return data


@routes.route("GET", "/guilds/{guild_id}/channels")
async def get_guild_channels(api: RestApi, req: Request) -> Any:
    return [payloads.channel(c) for c in _guild(api, req).channels.values() if c.type != 11]


@routes.route("GET", "/guilds/{guild_id}/roles")
async def get_roles(api: RestApi, req: Request) -> Any:
    return [payloads.role(r) for r in _guild(api, req).roles.values()]


@routes.route("GET", "/guilds/{guild_id}/members/{user_id}")
async def get_member(api: RestApi, req: Request) -> Any:
    member = _guild(api, req).members.get(req.snowflake("user_id"))
    if member is None:
        raise not_found("Member", 10007)
    return payloads.member(member)


@routes.route("GET", "/guilds/{guild_id}/members")
async def list_members(api: RestApi, req: Request) -> Any:
    after = int(req.query.get("after", 0))
    limit = int(req.query.get("limit", 1))
    members = sorted(_guild(api, req).members.values(), key=lambda m: m.user.id)
    return [payloads.member(m) for m in members if m.user.id > after][:limit]


@routes.route("GET", "/guilds/{guild_id}/members/search")
async def search_members(api: RestApi, req: Request) -> Any:
    query = req.query.get("query", "").lower()
    return [
        payloads.member(m)
        for m in _guild(api, req).members.values()
        if m.user.username.lower().startswith(query)
        or (m.nick or m.user.global_name or "").lower().startswith(query)
    ][: int(req.query.get("limit", 1))]
