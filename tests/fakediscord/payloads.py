"""JSON shapes of Discord objects, as the v10 API and gateway send them.

Kept separate from the records so the wire format (strings for snowflakes,
REST vs gateway differences such as ``guild_id``/``member`` on messages) lives
in one place and can be checked against Discord's documentation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .models import (
    DM,
    GUILD_VOICE,
    PUBLIC_THREAD,
    Attachment,
    Channel,
    Command,
    Guild,
    Member,
    Message,
    Role,
    User,
    VoiceState,
    iso,
)

if TYPE_CHECKING:
    from .state import World

ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 51) - 1


def user(u: User) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "username": u.username,
        "discriminator": "0",
        "global_name": u.global_name,
        "avatar": u.avatar,
        "bot": u.bot,
        "system": False,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
    }


def role(r: Role) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "color": r.color,
        "colors": {"primary_color": r.color, "secondary_color": None, "tertiary_color": None},
        "hoist": r.hoist,
        "icon": None,
        "unicode_emoji": None,
        "position": r.position,
        "permissions": str(r.permissions),
        "managed": False,
        "mentionable": r.mentionable,
        "flags": 0,
    }


def permissions(guild: Guild, member: Member) -> int:
    if member.user.id == guild.owner_id:
        return ALL_PERMISSIONS
    value = guild.roles[guild.id].permissions if guild.id in guild.roles else 0
    for role_id in member.role_ids:
        if role_id in guild.roles:
            value |= guild.roles[role_id].permissions
    return ALL_PERMISSIONS if value & ADMINISTRATOR else value


def member(m: Member, *, with_user: bool = True, guild: Guild | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "nick": m.nick,
        "avatar": None,
        "banner": None,
        "roles": [str(r) for r in m.role_ids],
        "joined_at": iso(m.joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user(m.user)
    if guild is not None:  # interactions carry the member's resolved permissions
        data["permissions"] = str(permissions(guild, m))
    return data


def channel(c: Channel) -> dict[str, Any]:
    if c.type == DM:
        return {
            "id": str(c.id),
            "type": DM,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user(r) for r in c.recipients],
        }
    data: dict[str, Any] = {
        "id": str(c.id),
        "type": c.type,
        "guild_id": str(c.guild_id),
        "name": c.name,
        "position": c.position,
        "parent_id": str(c.parent_id) if c.parent_id else None,
        "nsfw": False,
        "permission_overwrites": [],
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
    }
    if c.type == GUILD_VOICE:
        data.update(bitrate=64000, user_limit=0, rtc_region=None, video_quality_mode=1)
    elif c.type == PUBLIC_THREAD:
        now = iso(time.time())
        del data["permission_overwrites"], data["position"]
        data.update(
            owner_id=str(c.owner_id),
            message_count=0,
            member_count=1,
            total_message_sent=0,
            thread_metadata={
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        )
    else:
        data["topic"] = c.topic
    return data


def voice_state(world: World, vs: VoiceState, *, with_guild: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel_id": str(vs.channel_id) if vs.channel_id else None,
        "user_id": str(vs.user_id),
        "session_id": vs.session_id,
        "deaf": False,
        "mute": False,
        "self_deaf": vs.self_deaf,
        "self_mute": vs.self_mute,
        "self_stream": False,
        "self_video": False,
        "suppress": False,
        "request_to_speak_timestamp": None,
    }
    if with_guild:
        data["guild_id"] = str(vs.guild_id)
        m = world.guilds[vs.guild_id].members.get(vs.user_id)
        if m is not None:
            data["member"] = member(m)
    return data


def guild_create(world: World, g: Guild, *, all_members: bool) -> dict[str, Any]:
    """GUILD_CREATE; without the GUILD_MEMBERS intent Discord only includes the
    bot itself and members sitting in voice channels."""
    members = [
        m
        for m in g.members.values()
        if all_members or m.user.id == world.bot.id or m.user.id in g.voice_states
    ]
    channels = [c for c in g.channels.values() if c.type != PUBLIC_THREAD]
    threads = [c for c in g.channels.values() if c.type == PUBLIC_THREAD]
    return {
        "id": str(g.id),
        "name": g.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(g.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "features": [],
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
        "max_presences": None,
        "roles": [role(r) for r in g.roles.values()],
        "emojis": [],
        "stickers": [],
        "joined_at": iso(g.members[world.bot.id].joined_at),
        "large": False,
        "unavailable": False,
        "lazy": True,
        "member_count": len(g.members),
        "members": [member(m) for m in members],
        "channels": [channel(c) for c in channels],
        "threads": [channel(c) for c in threads],
        "voice_states": [voice_state(world, v, with_guild=False) for v in g.voice_states.values()],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment(a: Attachment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(a.id),
        "filename": a.filename,
        "size": a.size,
        "url": a.url,
        "proxy_url": a.url,
        "content_type": a.content_type,
    }
    for key in ("description", "duration_secs", "waveform", "width", "height"):
        value = getattr(a, key)
        if value is not None:
            data[key] = value
    return data


def emoji(key: str) -> dict[str, Any]:
    """Reaction keys are stored the way they appear in URLs: ``👍`` or ``name:id``."""
    if ":" in key:
        name, _, emoji_id = key.partition(":")
        return {"id": emoji_id, "name": name, "animated": False}
    return {"id": None, "name": key}


def message(world: World, m: Message, *, gateway: bool = False, depth: int = 0) -> dict[str, Any]:
    """A message object; ``gateway`` adds ``guild_id``/``member`` like MESSAGE_CREATE."""
    rev = m.revisions[-1]
    guild = world.guilds.get(m.guild_id) if m.guild_id else None
    data: dict[str, Any] = {
        "id": str(m.id),
        "type": m.type,
        "channel_id": str(m.channel_id),
        "author": user(m.author),
        "content": rev.content,
        "timestamp": iso(m.created_wall),
        "edited_timestamp": iso(m.edited_wall) if m.edited_wall else None,
        "tts": m.tts,
        "mention_everyone": m.mention_everyone,
        "mentions": [],
        "mention_roles": [str(r) for r in m.mention_roles],
        "attachments": [attachment(a) for a in rev.attachments],
        "embeds": list(rev.embeds),
        "components": list(rev.components),
        "pinned": m.pinned,
        "flags": rev.flags,
    }
    for u in m.mentions:
        entry = user(u)
        if gateway and guild is not None and u.id in guild.members:
            entry["member"] = member(guild.members[u.id], with_user=False)
        data["mentions"].append(entry)
    if m.nonce is not None:
        data["nonce"] = m.nonce
    if m.webhook_id:
        data["webhook_id"] = str(m.webhook_id)
    if m.application_id:
        data["application_id"] = str(m.application_id)
    if m.interaction:
        data["interaction_metadata"] = m.interaction["metadata"]
        data["interaction"] = m.interaction["legacy"]
    if m.reactions:
        data["reactions"] = [
            {
                "count": len(users),
                "count_details": {"burst": 0, "normal": len(users)},
                "me": world.bot.id in users,
                "me_burst": False,
                "burst_colors": [],
                "emoji": emoji(key),
            }
            for key, users in m.reactions.items()
            if users
        ]
    if m.reference:
        data["message_reference"] = m.reference
        if depth == 0:
            ref = m.referenced
            data["referenced_message"] = (
                message(world, ref, depth=1) if ref is not None and not ref.deleted else None
            )
    if gateway and guild is not None:
        data["guild_id"] = str(guild.id)
        if m.author.id in guild.members and not m.webhook_id:
            data["member"] = member(guild.members[m.author.id], with_user=False)
    return data


def command(c: Command) -> dict[str, Any]:
    data = dict(c.raw)
    data.update(
        id=str(c.id),
        application_id=str(c.application_id),
        version=str(c.version),
        type=c.type,
        name=c.name,
        description=c.description,
        options=c.options,
    )
    data.setdefault("default_member_permissions", None)
    data.setdefault("nsfw", False)
    data.setdefault("integration_types", [0])
    data.setdefault("contexts", None)
    if c.guild_id is not None:
        data["guild_id"] = str(c.guild_id)
    else:
        data.setdefault("dm_permission", True)
    return data
