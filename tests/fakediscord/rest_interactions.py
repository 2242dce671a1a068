"""Application command registry, interaction callbacks and interaction webhooks.

Discord's interaction rules are reproduced because they decide whether a slow
bot works at all: the first callback must come within 3 s, only once; a
followup to a deferred response replaces the "thinking..." message.
"""

from __future__ import annotations

import re
import time
from typing import Any

from . import payloads
from .models import (
    APPLICATION_COMMAND,
    CB_AUTOCOMPLETE,
    CB_DEFERRED_MESSAGE,
    CB_DEFERRED_UPDATE,
    CB_MESSAGE,
    CB_MODAL,
    CB_UPDATE,
    EPHEMERAL,
    LOADING,
    Callback,
    InteractionRecord,
    Message,
)
from .rest import ApiError, Reply, Request, RestApi, RouteTable, not_found
from .rest_messages import form_error, message_fields

routes = RouteTable()

_NAME = re.compile(r"^[-_\w]{1,32}$")


# -- application commands ------------------------------------------------------------------
def _check_app(api: RestApi, req: Request) -> int | None:
    if req.snowflake("application_id") != api.world.application_id:
        raise ApiError(403, 20012, "You are not authorized to perform this action on this application")
    return req.snowflake("guild_id") if "guild_id" in req.params else None


def _validate_options(options: list[dict[str, Any]], where: str) -> None:
    if len(options) > 25:
        raise form_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    for i, opt in enumerate(options):
        name = opt.get("name", "")
        if not _NAME.match(name) or name != name.lower():
            raise form_error(f"{where}.{i}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not 1 <= len(opt.get("description", "")) <= 100:
            raise form_error(f"{where}.{i}.description", "BASE_TYPE_BAD_LENGTH",
                             "Must be between 1 and 100 in length.")
        if len(opt.get("choices") or []) > 25:
            raise form_error(f"{where}.{i}.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if opt.get("type") in (1, 2):
            _validate_options(opt.get("options") or [], f"{where}.{i}.options")
        elif opt.get("required"):
            if seen_optional:
                raise form_error(where, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                 "Required options must be placed before non-required options")
        else:
            seen_optional = True


def validate_command(raw: dict[str, Any]) -> None:
    name = raw.get("name", "")
    if int(raw.get("type", 1)) == 1:
        if not _NAME.match(name) or name != name.lower():
            raise form_error("name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not 1 <= len(raw.get("description", "")) <= 100:
            raise form_error("description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        _validate_options(raw.get("options") or [], "options")
    elif not 1 <= len(name) <= 32:
        raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")


@routes.route("GET", "/applications/{application_id}/commands")
@routes.route("GET", "/applications/{application_id}/guilds/{guild_id}/commands")
async def list_commands(api: RestApi, req: Request) -> Any:
    return [payloads.command(c) for c in api.world.commands_for(_check_app(api, req))]


@routes.route("POST", "/applications/{application_id}/commands")
@routes.route("POST", "/applications/{application_id}/guilds/{guild_id}/commands")
async def upsert_command(api: RestApi, req: Request) -> Any:
    guild_id = _check_app(api, req)
    validate_command(req.json or {})
    cmd, created = api.world.upsert_command(guild_id, req.json)
    return Reply(201 if created else 200, payloads.command(cmd))


@routes.route("PUT", "/applications/{application_id}/commands")
@routes.route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
async def overwrite_commands(api: RestApi, req: Request) -> Any:
    guild_id = _check_app(api, req)
    raws = req.json or []
    for raw in raws:
        validate_command(raw)
    keys = [(r["name"], int(r.get("type", 1))) for r in raws]
    if len(set(keys)) != len(keys):
        raise form_error("_errors", "APPLICATION_COMMANDS_DUPLICATE_NAME",
                         "Application command names must be unique")
    return [payloads.command(c) for c in api.world.overwrite_commands(guild_id, raws)]


def _command(api: RestApi, req: Request) -> Any:
    guild_id = _check_app(api, req)
    cmd = api.world.commands.get(req.snowflake("command_id"))
    if cmd is None or cmd.guild_id != guild_id:
        raise not_found("application command", 10063)
    return cmd


@routes.route("GET", "/applications/{application_id}/commands/{command_id}")
@routes.route("GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
async def get_command(api: RestApi, req: Request) -> Any:
    return payloads.command(_command(api, req))


@routes.route("PATCH", "/applications/{application_id}/commands/{command_id}")
@routes.route("PATCH", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
async def edit_command(api: RestApi, req: Request) -> Any:
    cmd = _command(api, req)
    raw = {**cmd.raw, **(req.json or {})}
    validate_command(raw)
    api.world.commands.pop(cmd.id)
    updated, _ = api.world.upsert_command(cmd.guild_id, raw)
    api.world.commands.pop(updated.id)
    updated.id = cmd.id
    api.world.commands[cmd.id] = updated
    return payloads.command(updated)


@routes.route("DELETE", "/applications/{application_id}/commands/{command_id}")
@routes.route("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
async def delete_command(api: RestApi, req: Request) -> Any:
    api.world.commands.pop(_command(api, req).id)
    return None


# -- interaction callbacks -----------------------------------------------------------------
def interaction_metadata(api: RestApi, rec: InteractionRecord) -> dict[str, Any]:
    user = payloads.user(rec.user)
    owners = {"0": str(rec.guild_id)} if rec.guild_id else {"1": str(rec.user.id)}
    legacy: dict[str, Any] = {
        "id": str(rec.id), "type": rec.type, "user": user,
        "name": rec.command.name if rec.command else "",
    }
    return {
        "metadata": {"id": str(rec.id), "type": rec.type, "user": user,
                     "authorizing_integration_owners": owners},
        "legacy": legacy,
    }


def _interaction_message(api: RestApi, rec: InteractionRecord, fields: dict[str, Any]) -> Message:
    assert rec.channel_id is not None
    return api.world.create_message(
        rec.channel_id,
        api.world.bot,
        webhook_id=api.world.application_id,
        interaction=interaction_metadata(api, rec),
        type=20 if rec.type == APPLICATION_COMMAND else 0,
        **fields,
    )


@routes.route("POST", "/interactions/{webhook_id}/{webhook_token}/callback")
async def callback(api: RestApi, req: Request) -> Any:
    rec = api.world.interactions.get(req.snowflake("webhook_id"))
    if rec is None or rec.token != req.params["webhook_token"]:
        raise ApiError(404, 10062, "Unknown interaction")
    if rec.callbacks:
        raise ApiError(400, 40060, "Interaction has already been acknowledged.")
    if time.monotonic() - rec.created_at > api.world.interaction_deadline:
        raise ApiError(404, 10062, "Unknown interaction")
    body = req.json or {}
    ctype = int(body.get("type", 0))
    data = body.get("data") or {}
    if ctype == CB_MESSAGE:
        rec.original = _interaction_message(api, rec, message_fields(api, data, req.files, rec.channel_id or 0))
    elif ctype == CB_DEFERRED_MESSAGE:
        flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
        rec.original = _interaction_message(api, rec, {"flags": flags})
    elif ctype == CB_UPDATE:
        if rec.message is None:
            raise ApiError(400, 40004, "Interaction has no message to update")
        fields = message_fields(api, data, req.files, rec.message.channel_id, editing=rec.message)
        api.world.edit_message(rec.message, **fields)
    elif ctype == CB_AUTOCOMPLETE:
        if len(data.get("choices") or []) > 25:
            raise form_error("data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    elif ctype not in (CB_DEFERRED_UPDATE, CB_MODAL):
        raise form_error("type", "BASE_TYPE_CHOICES", "Value must be one of (4, 5, 6, 7, 8, 9, 12).")
    rec.callbacks.append(Callback(time.monotonic(), ctype, data))
    api.world.notify()
    if req.query.get("with_response") in ("true", "True", "1"):
        resource: dict[str, Any] = {"type": ctype}
        if rec.original is not None:
            resource["message"] = payloads.message(api.world, rec.original)
        return {"interaction": {"id": str(rec.id), "type": rec.type}, "resource": resource}
    return Reply(204)


# -- interaction webhooks ------------------------------------------------------------------
def _by_token(api: RestApi, req: Request) -> InteractionRecord:
    if req.snowflake("webhook_id") != api.world.application_id:
        raise not_found("Webhook", 10015)
    for rec in api.world.interactions.values():
        if rec.token == req.params["webhook_token"]:
            return rec
    raise not_found("Webhook", 10015)


def _webhook_message(api: RestApi, req: Request, rec: InteractionRecord) -> Message:
    ident = req.params["message_id"]
    if ident == "@original":
        if rec.original is None:
            raise not_found("Message", 10008)
        return rec.original
    for m in rec.messages:
        if str(m.id) == ident:
            return m
    raise not_found("Message", 10008)


def _settle(api: RestApi, m: Message, fields: dict[str, Any]) -> Message:
    """Editing a deferred "thinking..." message turns it into the real response."""
    if m.flags & LOADING:
        fields["flags"] = (fields.get("flags", m.flags) | (m.flags & EPHEMERAL)) & ~LOADING
    return api.world.edit_message(m, **fields)


@routes.route("POST", "/webhooks/{webhook_id}/{webhook_token}")
async def followup(api: RestApi, req: Request) -> Any:
    rec = _by_token(api, req)
    if not rec.callbacks:
        raise not_found("Webhook", 10015)
    channel_id = rec.channel_id or 0
    if rec.original is not None and rec.original.flags & LOADING:
        fields = message_fields(api, req.json, req.files, channel_id, editing=rec.original)
        return payloads.message(api.world, _settle(api, rec.original, fields))
    fields = message_fields(api, req.json, req.files, channel_id)
    m = _interaction_message(api, rec, fields)
    rec.followups.append(m)
    return payloads.message(api.world, m)


@routes.route("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
async def get_webhook_message(api: RestApi, req: Request) -> Any:
    rec = _by_token(api, req)
    return payloads.message(api.world, _webhook_message(api, req, rec))


@routes.route("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
async def edit_webhook_message(api: RestApi, req: Request) -> Any:
    rec = _by_token(api, req)
    m = _webhook_message(api, req, rec)
    fields = message_fields(api, req.json, req.files, m.channel_id, editing=m)
    return payloads.message(api.world, _settle(api, m, fields))


@routes.route("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
async def delete_webhook_message(api: RestApi, req: Request) -> Any:
    rec = _by_token(api, req)
    api.world.delete_message(_webhook_message(api, req, rec))
    return None
