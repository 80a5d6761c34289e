"""Database URLs and the passwords they may carry: where a URL holds one, and the URL fit to show.

A password may sit in the URL's userinfo (`postgresql+psycopg://crm:PASSWORD@db/crm`) or in its query string
(`...?password=PASSWORD`, libpq's `password` and `sslpassword`). The config file refuses both (a secret goes
in url_env or url_file), and anything that shows a URL (config errors, CLI messages, logs) shows
`shown_url(url)`, which hides both. The URL is read by SQLAlchemy's own parser, the one that connects.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
HIDDEN = "***"


def _parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def password_place(url: str) -> str | None:
    """Where `url` carries a password ("userinfo" or "query string"), or None when it carries none."""
    parsed = _parse(url)
    if parsed is None:
        return None
    if parsed.password is not None:
        return "userinfo"
    if any(key.lower() in SECRET_QUERY_KEYS for key in parsed.query):
        return "query string"
    return None


def shown_url(url: str) -> str:
    """`url` with any password hidden, fit for messages and logs."""
    parsed = _parse(url)
    if parsed is None:
        return "(a URL that cannot be read)"
    secret_keys = [key for key in parsed.query if key.lower() in SECRET_QUERY_KEYS]
    if not secret_keys:
        return parsed.render_as_string(hide_password=True)
    # render without the secret keys, then name them with a placeholder value
    kept = parsed.difference_update_query(secret_keys).render_as_string(hide_password=True)
    hidden = "&".join(f"{key}={HIDDEN}" for key in secret_keys)
    return f"{kept}{'&' if '?' in kept else '?'}{hidden}"
