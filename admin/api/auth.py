"""Who is calling the API: the API key in `Authorization: Bearer tl_...`, and its per-key rate limit.

The API reads no login cookie at all, so a browser's session can never make an API write (and CSRF has
nothing to ride on). A key acts as its user with that user's current role: the write checks are the panel's
own (admin.permissions.may_write). The rate limit is a moving window per key from the `limits` library (the
one Flask-Limiter is built on), kept in memory by each panel process.
"""

from __future__ import annotations

import math
import time

from flask import g
from flask import request as flask_request
from limits import RateLimitItemPerMinute, storage, strategies

from admin.api.problems import ApiProblem
from admin.context import db, now
from admin.permissions import may_write
from models.apikeys import key_for_token
from models.schema import ApiKey, Role, User


class RateLimiter:
    """`requests_per_minute` per API key (moving window)."""

    def __init__(self, requests_per_minute: int) -> None:
        self.item = RateLimitItemPerMinute(requests_per_minute)
        self.window = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def hit(self, key_id: int) -> tuple[bool, int, int]:
        """(allowed, remaining, seconds until a request is allowed again)."""
        allowed = self.window.hit(self.item, "api-key", str(key_id))
        stats = self.window.get_window_stats(self.item, "api-key", str(key_id))
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        return allowed, stats.remaining, retry


def authenticate(limiter: RateLimiter) -> None:
    """Find the request's key (401 otherwise) and count it against its limit (429 beyond)."""
    scheme, _, token = flask_request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="threadline"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(
            401, "Send an API key: Authorization: Bearer tl_...", field="Authorization", where="header",
            headers=challenge,
        )  # fmt: skip
    session = db()
    key = key_for_token(session, token.strip(), now=now())
    if key is None:
        raise ApiProblem(
            401, "This API key is unknown, revoked, or its user is deactivated.", field="Authorization",
            where="header", headers={**challenge, "WWW-Authenticate": 'Bearer error="invalid_token"'},
        )  # fmt: skip
    if session.dirty:
        session.commit()  # last_used_at, at most once a minute
    allowed, remaining, retry = limiter.hit(key.id)
    g.rate_limit_headers = {
        "RateLimit-Limit": str(limiter.item.amount),
        "RateLimit-Remaining": str(remaining),
    }
    if not allowed:
        raise ApiProblem(
            429,
            f"This key made more than {limiter.item.amount} requests in a minute: retry in {retry} seconds.",
            headers={**g.rate_limit_headers, "Retry-After": str(retry)},
        )
    g.api_key_id = key.id
    g.api_user_id = key.user_id


def api_key() -> ApiKey:
    key = db().get(ApiKey, g.api_key_id)
    assert key is not None
    return key


def api_user() -> User:
    user = db().get(User, g.api_user_id)
    assert user is not None
    return user


def is_manager_or_admin() -> bool:
    return api_user().role in (Role.ADMIN, Role.MANAGER)


def require_write(record: object) -> None:
    """403 unless the key's user may change this record (the panel's rule)."""
    user = api_user()
    if not may_write(user.role, user.id, record):
        raise ApiProblem(403, "Your role does not let you change this record: it is owned by someone else.")
