"""Discord-style per-route rate limits, plus 429 injection for tests.

Every answer carries the ``X-RateLimit-*`` headers, because nextcord paces
itself from them: without them it assumes one request per second per route.
Limits are counted per bucket (route template + major parameter), and requests
over the limit either get a 429 (``enforce=True``, like Discord) or are only
recorded as violations.  Injected 429s let a test check the bot waits and retries.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BucketRule", "Injection", "RateLimiter", "Violation", "DEFAULT_RULES"]

MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id")


@dataclass(frozen=True)
class BucketRule:
    limit: int
    per: float


DEFAULT_RULE = BucketRule(50, 1.0)
DEFAULT_RULES: dict[str, BucketRule] = {
    # Discord's documented-in-practice message limits: 5 per 5 s per channel.
    "POST /channels/{channel_id}/messages": BucketRule(5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": BucketRule(5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": BucketRule(5, 1.0),
    "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": BucketRule(1, 0.25),
    "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": BucketRule(1, 0.25),
}


@dataclass
class Violation:
    """A request beyond its bucket's limit (answered 429 if enforcement is on)."""

    at: float
    method: str
    path: str
    route: str
    enforced: bool


@dataclass
class Injection:
    """``count`` upcoming requests matching ``pattern`` will get a 429."""

    pattern: str
    remaining: int
    retry_after: float
    is_global: bool = False
    hits: list[float] = field(default_factory=list)

    def matches(self, method: str, path: str, template: str) -> bool:
        want_method, _, want_path = self.pattern.partition(" ")
        if not want_path:  # no method given
            want_method, want_path = "*", want_method
        if want_method not in ("*", method):
            return False
        if "{" in want_path:
            return want_path == template
        return fnmatch.fnmatchcase(path, want_path)


@dataclass
class _Window:
    started: float
    count: int = 0


@dataclass
class Decision:
    """What the REST layer should do with one request."""

    status: int  # 200 = go ahead, 429 = answer with ``body``
    headers: dict[str, str]
    body: dict[str, Any] | None = None


class RateLimiter:
    def __init__(self) -> None:
        self.rules: dict[str, BucketRule] = dict(DEFAULT_RULES)
        self.enforce = True
        self.violations: list[Violation] = []
        self.injections: list[Injection] = []
        self.responses_429: list[tuple[float, str, str]] = []
        self._windows: dict[str, _Window] = {}

    def inject(self, pattern: str, count: int, retry_after: float, is_global: bool) -> Injection:
        inj = Injection(pattern, count, retry_after, is_global)
        self.injections.append(inj)
        return inj

    def check(self, method: str, path: str, template: str, params: dict[str, str]) -> Decision:
        route = f"{method} {template}"
        rule = self.rules.get(route, DEFAULT_RULE)
        major = ":".join(params.get(p, "") for p in MAJOR_PARAMETERS)
        key = f"{route}|{major}"
        # Unique per major parameter: nextcord keys its bucket table by this hash
        # alone, so a shared hash would merge unrelated channels' limits.
        bucket = hashlib.sha1(key.encode()).hexdigest()[:32]
        now = time.monotonic()

        for inj in self.injections:
            if inj.remaining > 0 and inj.matches(method, path, template):
                inj.remaining -= 1
                inj.hits.append(now)
                self.responses_429.append((now, method, path))
                return self._too_many(rule, bucket, inj.retry_after, inj.is_global, "user")

        window = self._windows.get(key)
        if window is None or now - window.started >= rule.per:
            window = self._windows[key] = _Window(now)
        reset_after = max(0.0, window.started + rule.per - now)
        if window.count >= rule.limit:
            self.violations.append(Violation(now, method, path, template, self.enforce))
            if self.enforce:
                self.responses_429.append((now, method, path))
                return self._too_many(rule, bucket, reset_after, False, "user")
        window.count += 1
        return Decision(200, self._headers(rule, bucket, rule.limit - window.count, reset_after))

    @staticmethod
    def _headers(rule: BucketRule, bucket: str, remaining: int, reset_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    def _too_many(
        self, rule: BucketRule, bucket: str, retry_after: float, is_global: bool, scope: str
    ) -> Decision:
        headers = self._headers(rule, bucket, 0, retry_after)
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        if is_global:
            headers["X-RateLimit-Global"] = "true"
            headers["X-RateLimit-Scope"] = "global"
        else:
            headers["X-RateLimit-Scope"] = scope
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(retry_after, 3),
            "global": is_global,
            "code": 0,
        }
        return Decision(429, headers, body)
