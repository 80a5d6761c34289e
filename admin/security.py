"""The panel's HTTP hardening: security headers with a per-request script nonce, and the client's real address
behind trusted reverse proxies.

Content-Security-Policy: scripts run only from the panel's own files or from an inline `<script>` carrying
this response's nonce (Flask-Admin puts it on its own tags through `csp_nonce_generator`; our templates use
`csp_nonce()`); no inline event handler (`onclick=...`) or `javascript:` URL runs at all. Styles may still be
inline (Bootstrap widgets set them); nothing loads from elsewhere.

`[admin] trusted_proxy_hops = N` applies werkzeug's ProxyFix for N proxies: the client address (used by the
login throttle and Flask-Login's session protection) and the scheme come from the last N entries of
X-Forwarded-For and X-Forwarded-Proto. With 0 (the default) those headers are ignored, since anyone can send
them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

STATIC_PREFIX = "/admin/threadline-static"


def csp_nonce() -> str:
    """This response's script nonce (made on first use)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return str(g.csp_nonce)


def content_security_policy(nonce: str | None, form_targets: Sequence[str] = ()) -> str:
    """The policy; `form_targets` are other origins a form on the page may lead to (browsers apply
    form-action to the redirect after a POST too: "Connect mailbox" ends at the provider's consent page)."""
    scripts = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    forms = " ".join(["'self'", *form_targets])
    return (
        f"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src {scripts}; "
        f"frame-src 'self'; object-src 'none'; base-uri 'self'; form-action {forms}; frame-ancestors 'self'"
    )


def trust_proxies(app: Flask, hops: int) -> None:
    """Take the client's address and scheme from the headers of `hops` reverse proxies (0: ignore them)."""
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]


def init_security(app: Flask) -> None:
    app.context_processor(lambda: {"csp_nonce": csp_nonce})

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", content_security_policy(g.get("csp_nonce")))
        if not request.path.startswith(STATIC_PREFIX) and request.path != "/favicon.ico":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
