"""INTERACTION_CREATE payloads, built from what the bot registered.

Option values are typed from the bot's own command definitions (the same way
the Discord client does), so a test writes ``{"file": attachment, "count": 3}``
and gets correct option types and a ``resolved`` section; an option the bot did
not declare is a test error, not something Discord would ever send.
"""

from __future__ import annotations

import secrets
from typing import Any

from . import payloads
from .models import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    Attachment,
    Channel,
    Command,
    InteractionRecord,
    Message,
    Role,
    User,
)
from .state import World

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(3, 12)


def _resolve(world: World, kind: int, value: Any, resolved: dict[str, dict[str, Any]]) -> Any:
    g = world.guild
    if kind == ATTACHMENT:
        if not isinstance(value, Attachment):
            raise TypeError("attachment options take an Attachment (server.upload(...))")
        resolved.setdefault("attachments", {})[str(value.id)] = payloads.attachment(value)
        return str(value.id)
    if kind in (USER, MENTIONABLE) and not isinstance(value, Role):
        u = world.find_user(value)
        resolved.setdefault("users", {})[str(u.id)] = payloads.user(u)
        if u.id in g.members:
            member = payloads.member(g.members[u.id], with_user=False, guild=g)
            resolved.setdefault("members", {})[str(u.id)] = member
        return str(u.id)
    if kind in (ROLE, MENTIONABLE):
        r = value if isinstance(value, Role) else world.find_role(value)
        resolved.setdefault("roles", {})[str(r.id)] = payloads.role(r)
        return str(r.id)
    if kind == CHANNEL:
        c: Channel = world.find_channel(value)
        resolved.setdefault("channels", {})[str(c.id)] = {
            **payloads.channel(c), "permissions": str(payloads.ALL_PERMISSIONS),
        }
        return str(c.id)
    return {INTEGER: int, NUMBER: float, BOOLEAN: bool}.get(kind, str)(value)


def build_options(
    world: World,
    definitions: list[dict[str, Any]],
    values: dict[str, Any],
    resolved: dict[str, dict[str, Any]],
    focused: str | None = None,
) -> list[dict[str, Any]]:
    by_name = {d["name"]: d for d in definitions}
    out: list[dict[str, Any]] = []
    for name, value in values.items():
        if name not in by_name:
            raise KeyError(f"the command has no option {name!r} (declared: {sorted(by_name)})")
        kind = int(by_name[name]["type"])
        if name == focused:  # autocomplete sends the partial text, unresolved
            out.append({"name": name, "type": kind, "value": str(value), "focused": True})
        else:
            out.append({"name": name, "type": kind, "value": _resolve(world, kind, value, resolved)})
    missing = [d["name"] for d in definitions if d.get("required") and d["name"] not in values]
    if missing and focused is None:
        raise KeyError(f"required options missing: {missing}")
    return out


def _base(
    world: World, itype: int, user: User, channel: Channel, data: dict[str, Any]
) -> dict[str, Any]:
    iid = world.ids.next()
    g = world.guild if channel.guild_id else None
    body: dict[str, Any] = {
        "id": str(iid),
        "application_id": str(world.application_id),
        "type": itype,
        "data": data,
        "token": f"fakediscord-{iid}-{secrets.token_urlsafe(24)}",
        "version": 1,
        "channel_id": str(channel.id),
        "channel": payloads.channel(channel),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 10 * 1024 * 1024,
    }
    if g is not None:
        body.update(
            guild_id=str(g.id),
            guild={"id": str(g.id), "locale": "en-US", "features": []},
            guild_locale="en-US",
            member=payloads.member(g.members[user.id], guild=g),
            app_permissions=str(payloads.permissions(g, g.members[world.bot.id])),
            authorizing_integration_owners={"0": str(g.id)},
            context=0,
        )
    else:
        body.update(
            user=payloads.user(user),
            app_permissions=str(payloads.ALL_PERMISSIONS),
            authorizing_integration_owners={"0": "0"},
            context=1,
        )
    return body


def _record(world: World, body: dict[str, Any], user: User, channel: Channel) -> InteractionRecord:
    rec = InteractionRecord(
        int(body["id"]), body["token"], body["type"], user, channel.id, channel.guild_id, body
    )
    world.interactions[rec.id] = rec
    return rec


def slash(
    world: World, name: str, options: dict[str, Any], user: User, channel: Channel,
    *, focused: str | None = None,
) -> InteractionRecord:
    """``name`` may be ``"group sub"`` to reach sub-commands."""
    root, *path = name.split()
    cmd: Command = world.find_command(root)
    resolved: dict[str, dict[str, Any]] = {}
    definitions, chain = cmd.options, []
    for part in path:
        match = next((o for o in definitions if o["name"] == part and o["type"] in (1, 2)), None)
        if match is None:
            raise KeyError(f"/{root} has no sub-command {part!r}")
        chain.append(match)
        definitions = match.get("options") or []
    opts = build_options(world, definitions, options, resolved, focused)
    for sub in reversed(chain):
        opts = [{"name": sub["name"], "type": sub["type"], "options": opts}]
    data: dict[str, Any] = {"id": str(cmd.id), "name": cmd.name, "type": cmd.type, "options": opts}
    if resolved:
        data["resolved"] = resolved
    if cmd.guild_id:
        data["guild_id"] = str(cmd.guild_id)
    kind = AUTOCOMPLETE if focused is not None else APPLICATION_COMMAND
    rec = _record(world, _base(world, kind, user, channel, data), user, channel)
    rec.command = cmd
    return rec


def context_menu(
    world: World, name: str, target: User | Message, user: User, channel: Channel
) -> InteractionRecord:
    """User (type 2) or message (type 3) context-menu command."""
    is_message = isinstance(target, Message)
    cmd = world.find_command(name, type=3 if is_message else 2)
    resolved: dict[str, dict[str, Any]] = {}
    if isinstance(target, Message):
        resolved["messages"] = {str(target.id): payloads.message(world, target)}
    else:
        _resolve(world, USER, target, resolved)
    data = {"id": str(cmd.id), "name": cmd.name, "type": cmd.type, "target_id": str(target.id),
            "resolved": resolved}
    rec = _record(world, _base(world, APPLICATION_COMMAND, user, channel, data), user, channel)
    rec.command = cmd
    return rec


def _find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for comp in components:
        if comp.get("custom_id") == custom_id:
            return comp
        inner = _find_component(comp.get("components") or [], custom_id)
        if inner is not None:
            return inner
    return None


def component(
    world: World, message: Message, custom_id: str, user: User, values: list[str] | None = None
) -> InteractionRecord:
    comp = _find_component(message.components, custom_id)
    if comp is None:
        raise KeyError(f"message {message.id} has no component {custom_id!r}")
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp.get("type", 2)}
    if values is not None:
        data["values"] = list(values)
    channel = world.find_channel(message.channel_id)
    body = _base(world, MESSAGE_COMPONENT, user, channel, data)
    body["message"] = payloads.message(world, message)
    rec = _record(world, body, user, channel)
    rec.message = message
    return rec


def modal_submit(
    world: World, opened_by: InteractionRecord, values: dict[str, str], user: User
) -> InteractionRecord:
    """Answer the modal the bot opened in response to ``opened_by``."""
    modal = next((cb.data for cb in opened_by.callbacks if cb.type == 9), None)
    if modal is None:
        raise KeyError("the bot did not open a modal for that interaction")
    rows = [
        {"type": 1, "components": [{"type": 4, "custom_id": cid, "value": value}]}
        for cid, value in values.items()
    ]
    data = {"custom_id": modal.get("custom_id"), "components": rows}
    channel = world.find_channel(opened_by.channel_id or world.general.id)
    return _record(world, _base(world, MODAL_SUBMIT, user, channel, data), user, channel)
