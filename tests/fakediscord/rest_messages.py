"""Channel and message routes: send (JSON or multipart), edit, fetch, history,
delete, reactions, typing, pins.

Validation mirrors the Discord errors a chat bot really hits (2000-character
content, empty messages, editing someone else's message, replying to a deleted
message), because those are the bugs an end-to-end test should surface.
"""

from __future__ import annotations

import time
from typing import Any

from . import payloads
from .models import EPHEMERAL, IS_VOICE_MESSAGE, PUBLIC_THREAD, Attachment, Channel, Message
from .rest import ApiError, Reply, Request, RestApi, RouteTable, UploadedFile, not_found

routes = RouteTable()

MAX_CONTENT = 2000
_KEPT_FLAGS = EPHEMERAL | IS_VOICE_MESSAGE | (1 << 2) | (1 << 12)  # + suppress embeds/notifications


def form_error(field: str, code: str, message: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", {field: {"_errors": [{"code": code, "message": message}]}})


def channel_of(api: RestApi, req: Request) -> Channel:
    channel = api.world.channel_or_none(req.snowflake("channel_id"))
    if channel is None:
        raise not_found("Channel", 10003)
    return channel


def message_of(api: RestApi, req: Request) -> Message:
    channel = channel_of(api, req)
    m = api.world.messages.get(req.snowflake("message_id"))
    if m is None or m.deleted or m.channel_id != channel.id:
        raise not_found("Message", 10008)
    return m


def _new_attachment(api: RestApi, channel_id: int, up: UploadedFile, meta: dict[str, Any]) -> Attachment:
    return api.world.create_attachment(
        channel_id,
        meta.get("filename") or up.filename,
        up.data,
        description=meta.get("description"),
        duration_secs=meta.get("duration_secs"),
        waveform=meta.get("waveform"),
    )


def message_fields(
    api: RestApi,
    body: dict[str, Any] | None,
    files: list[UploadedFile],
    channel_id: int,
    editing: Message | None = None,
) -> dict[str, Any]:
    """Turn a create/edit body into World keyword arguments, validating like Discord."""
    body = body or {}
    fields: dict[str, Any] = {}
    if "content" in body or editing is None:
        content = body.get("content") or ""
        if not isinstance(content, str):
            content = str(content)
        if len(content) > MAX_CONTENT:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        fields["content"] = content
        fields["allowed_mentions"] = body.get("allowed_mentions")
    if "embeds" in body or "embed" in body or editing is None:
        embeds = body.get("embeds") or ([body["embed"]] if body.get("embed") else [])
        if len(embeds) > 10:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        fields["embeds"] = embeds
    if "components" in body or editing is None:
        fields["components"] = body.get("components") or []
    if "flags" in body or editing is None:
        fields["flags"] = int(body.get("flags") or 0) & _KEPT_FLAGS

    by_index = {f.index: f for f in files}
    metas = body.get("attachments")
    attachments: list[Attachment] = []
    used: set[int] = set()
    if metas is None and editing is not None and not files:
        pass  # attachments untouched
    else:
        for meta in metas or []:
            ident = int(meta["id"])
            if ident in by_index:
                attachments.append(_new_attachment(api, channel_id, by_index[ident], meta))
                used.add(ident)
            elif editing is not None and any(a.id == ident for a in editing.attachments):
                attachments.extend(a for a in editing.attachments if a.id == ident)
        if metas is None and editing is not None:
            attachments = list(editing.attachments)
        for index, up in sorted(by_index.items()):
            if index not in used:
                attachments.append(_new_attachment(api, channel_id, up, {}))
        fields["attachments"] = attachments

    if editing is None:
        empty = not (fields["content"] or fields["embeds"] or attachments or fields["components"]
                     or body.get("sticker_ids") or body.get("poll"))
        if empty:
            raise ApiError(400, 50006, "Cannot send an empty message")
    return fields


def reply_target(api: RestApi, body: dict[str, Any] | None) -> tuple[Message | None, bool]:
    """Resolve ``message_reference`` and whether the replied-to author gets pinged."""
    body = body or {}
    ref = body.get("message_reference")
    mentions = body.get("allowed_mentions") or {}
    ping = bool(mentions.get("replied_user", True))
    if not ref or ref.get("type", 0) != 0:
        return None, ping
    target = api.world.messages.get(int(ref.get("message_id") or 0))
    if target is None or target.deleted:
        if ref.get("fail_if_not_exists", True):
            raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        return None, ping
    return target, ping


@routes.route("GET", "/channels/{channel_id}")
async def get_channel(api: RestApi, req: Request) -> Any:
    return payloads.channel(channel_of(api, req))


@routes.route("POST", "/channels/{channel_id}/messages")
async def create_message(api: RestApi, req: Request) -> Any:
    channel = channel_of(api, req)
    fields = message_fields(api, req.json, req.files, channel.id)
    target, ping = reply_target(api, req.json)
    m = api.world.create_message(
        channel,
        api.world.bot,
        reference=target,
        mention_author=ping,
        tts=bool((req.json or {}).get("tts")),
        nonce=(req.json or {}).get("nonce"),
        **fields,
    )
    return payloads.message(api.world, m)


@routes.route("GET", "/channels/{channel_id}/messages/{message_id}")
async def get_message(api: RestApi, req: Request) -> Any:
    return payloads.message(api.world, message_of(api, req))


@routes.route("PATCH", "/channels/{channel_id}/messages/{message_id}")
async def edit_message(api: RestApi, req: Request) -> Any:
    m = message_of(api, req)
    if m.author.id != api.world.bot.id:
        raise ApiError(403, 50005, "Cannot edit a message authored by another user")
    fields = message_fields(api, req.json, req.files, m.channel_id, editing=m)
    return payloads.message(api.world, api.world.edit_message(m, **fields))


@routes.route("DELETE", "/channels/{channel_id}/messages/{message_id}")
async def delete_message(api: RestApi, req: Request) -> Any:
    api.world.delete_message(message_of(api, req))
    return None


@routes.route("POST", "/channels/{channel_id}/messages/bulk-delete")
async def bulk_delete(api: RestApi, req: Request) -> Any:
    channel = channel_of(api, req)
    for ident in (req.json or {}).get("messages", []):
        m = api.world.messages.get(int(ident))
        if m is not None and m.channel_id == channel.id and not m.deleted:
            api.world.delete_message(m)
    return None


@routes.route("GET", "/channels/{channel_id}/messages")
async def history(api: RestApi, req: Request) -> Any:
    """Newest first, like Discord, for ``before``, ``after`` and ``around``."""
    channel = channel_of(api, req)
    limit = max(1, min(100, int(req.query.get("limit", 50))))
    msgs = sorted(api.world.messages_in(channel), key=lambda m: m.id)
    msgs = [m for m in msgs if not m.ephemeral]
    if "before" in req.query:
        picked = [m for m in msgs if m.id < int(req.query["before"])][-limit:]
    elif "after" in req.query:
        picked = [m for m in msgs if m.id > int(req.query["after"])][:limit]
    elif "around" in req.query:
        pivot = int(req.query["around"])
        older = [m for m in msgs if m.id <= pivot][-((limit + 1) // 2):]
        newer = [m for m in msgs if m.id > pivot][: limit // 2]
        picked = older + newer
    else:
        picked = msgs[-limit:]
    return [payloads.message(api.world, m) for m in reversed(picked)]


@routes.route("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")
async def add_reaction(api: RestApi, req: Request) -> Any:
    m = message_of(api, req)
    emoji = req.params["emoji"]
    if not emoji or (len(emoji) > 8 and ":" not in emoji):
        raise ApiError(400, 10014, "Unknown Emoji")
    api.world.react(m, emoji, api.world.bot)
    return None


@routes.route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")
async def remove_own_reaction(api: RestApi, req: Request) -> Any:
    api.world.react(message_of(api, req), req.params["emoji"], api.world.bot, add=False)
    return None


@routes.route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}")
async def remove_user_reaction(api: RestApi, req: Request) -> Any:
    m = message_of(api, req)
    api.world.react(m, req.params["emoji"], req.snowflake("user_id"), add=False)
    return None


@routes.route("GET", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}")
async def reaction_users(api: RestApi, req: Request) -> Any:
    m = message_of(api, req)
    ids = m.reactions.get(req.params["emoji"], [])
    return [payloads.user(api.world.users[i]) for i in ids]


@routes.route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions")
async def clear_reactions(api: RestApi, req: Request) -> Any:
    m = message_of(api, req)
    for emoji, users in list(m.reactions.items()):
        for user_id in list(users):
            api.world.react(m, emoji, user_id, add=False)
    return None


@routes.route("POST", "/channels/{channel_id}/typing")
async def typing(api: RestApi, req: Request) -> Any:
    channel = channel_of(api, req)
    w = api.world
    w.typing.append((time.monotonic(), channel.id, w.bot.id))
    data: dict[str, Any] = {
        "channel_id": str(channel.id), "user_id": str(w.bot.id), "timestamp": int(time.time()),
    }
    if channel.guild_id:
        data.update(guild_id=str(channel.guild_id), member=payloads.member(w.guild.members[w.bot.id]))
    w.dispatch("TYPING_START", data)
    return Reply(204)


@routes.route("GET", "/channels/{channel_id}/pins")
async def pins(api: RestApi, req: Request) -> Any:
    channel = channel_of(api, req)
    return [payloads.message(api.world, m) for m in api.world.messages_in(channel) if m.pinned]


@routes.route("PUT", "/channels/{channel_id}/pins/{message_id}")
@routes.route("DELETE", "/channels/{channel_id}/pins/{message_id}")
async def pin(api: RestApi, req: Request) -> Any:
    m = message_of(api, req)
    m.pinned = req.method == "PUT"
    api.world.dispatch("MESSAGE_UPDATE", payloads.message(api.world, m, gateway=True))
    return None


@routes.route("POST", "/channels/{channel_id}/threads")
@routes.route("POST", "/channels/{channel_id}/messages/{message_id}/threads")
async def start_thread(api: RestApi, req: Request) -> Any:
    """A bot opening a thread per conversation; from a message, the thread's id is
    the message's id, as on Discord."""
    parent = channel_of(api, req)
    name = str((req.json or {}).get("name") or "")
    if not 1 <= len(name) <= 100:
        raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    thread_id = message_of(api, req).id if "message_id" in req.params else None
    thread = api.world.add_channel(name, PUBLIC_THREAD, parent=parent, owner=api.world.bot,
                                   channel_id=thread_id)
    return Reply(201, payloads.channel(thread))


@routes.route("PUT", "/channels/{channel_id}/thread-members/@me")
@routes.route("DELETE", "/channels/{channel_id}/thread-members/@me")
async def join_thread(api: RestApi, req: Request) -> Any:
    channel_of(api, req)
    return None
