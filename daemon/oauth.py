"""OAuth 2.0 for mailbox sign-in: the only module that talks to authorization servers.

authlib's `OAuth2Session` (over requests) does the protocol work: the authorization code grant with PKCE
(RFC 7636, S256), refresh (RFC 6749 section 6), client credentials (section 4.4) and revocation (RFC 7009).
For the device authorization grant (RFC 8628) authlib has server parts but no client helper, so its first
request is a plain form POST through the same session and its polling goes through authlib's `fetch_token`
with the device_code grant type; this module handles `authorization_pending` and `slow_down` itself.

Callers get frozen dataclasses (`TokenSet`, `AuthorizationRequest`, `DeviceAuthorization`), never authlib or
requests objects, and every failure leaves as an `OAuthError`:
- `GrantRefusedError` when the provider refuses the user's grant (`invalid_grant`: expired or revoked
  refresh token, consent withdrawn, password reset). Only a person can fix that: the sync marks the mailbox
  "reconnect needed" and stops asking;
- `ClientRejectedError` when the provider refuses Threadline itself (wrong or expired client secret, app not
  allowed for this flow): the installer must fix [oauth.NAME];
- plain `OAuthError` for the rest (network, 5xx, a malformed answer): worth retrying later.
No message ever contains a token, a code or the client secret.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import OAuthError as AuthlibOAuthError
from authlib.integrations.requests_client import OAuth2Session

from settings.model import OAuthPreset, OAuthProviderSettings

__all__ = [
    "AuthorizationRequest",
    "ClientRejectedError",
    "DeviceAuthorization",
    "DeviceFlowError",
    "GrantRefusedError",
    "OAuthClient",
    "OAuthError",
    "TokenSet",
]

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
# Used when a token response leaves expires_in out (RFC 6749 lets it): assume the common one hour.
_DEFAULT_LIFETIME = timedelta(hours=1)
# Errors meaning the user's grant is gone for good (RFC 6749 5.2; Microsoft sends interaction_required and
# consent_required when a tenant admin withdraws consent or a policy now demands MFA).
_GRANT_REFUSED = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})
# Errors meaning the provider refuses the client (Threadline's registration), not the user.
_CLIENT_REJECTED = frozenset(
    {"invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope"}
)


class OAuthError(Exception):
    """An OAuth request failed; the message is readable and names the provider, never a secret."""


class GrantRefusedError(OAuthError):
    """The provider refused the user's grant: a person must connect the mailbox again."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ClientRejectedError(OAuthError):
    """The provider refused Threadline's client registration (id, secret, allowed grants or scopes)."""


class DeviceFlowError(OAuthError):
    """The device flow ended without a grant: the user declined, or the code expired."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)  # None: the provider sent none (keep the old)
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization code flow in progress: send the user to `url`, keep the rest for the callback."""

    url: str
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_uri: str = ""


@dataclass(frozen=True)
class DeviceAuthorization:
    """What to show the user (`user_code` at `verification_uri`) while `device_code` is polled."""

    user_code: str
    verification_uri: str
    expires_at: datetime
    interval: float
    device_code: str = field(repr=False)
    verification_uri_complete: str | None = None
    message: str | None = None  # Microsoft sends a ready-made sentence


def utcnow() -> datetime:
    return datetime.now(UTC)


class OAuthClient:
    """The OAuth flows of one provider ([oauth.NAME]). Thread safe: each call uses its own HTTP session."""

    def __init__(self, provider: OAuthProviderSettings, *, now_fn: Callable[[], datetime] = utcnow) -> None:
        self.provider = provider
        self.now_fn = now_fn

    def __repr__(self) -> str:
        return f"<OAuthClient {self.provider.name} ({self.provider.preset.value})>"

    @property
    def device_flow_is_public(self) -> bool:
        """Microsoft runs the device flow for public clients only and refuses a client secret in it (and in
        every refresh of a grant it produced, AADSTS700025); other providers authenticate the client."""
        return self.provider.preset is OAuthPreset.MICROSOFT or self.provider.client_secret is None

    # -- authorization code with PKCE (the panel, and the CLI's browser flow) ------------------------------

    def begin_authorization(
        self, redirect_uri: str, *, login_hint: str | None = None
    ) -> AuthorizationRequest:
        """The provider's consent page URL with a fresh state and PKCE verifier (S256)."""
        provider = self.provider
        if not provider.authorize_url:
            raise OAuthError(f"[oauth.{provider.name}] has no authorize_url: the browser flow cannot be used")
        verifier = secrets.token_urlsafe(64)
        params: dict[str, str] = dict(provider.authorize_params)
        if login_hint:
            params["login_hint"] = login_hint
        with self._session(redirect_uri=redirect_uri) as session:
            url, state = session.create_authorization_url(
                provider.authorize_url, code_verifier=verifier, **params
            )
        return AuthorizationRequest(url=url, state=state, code_verifier=verifier, redirect_uri=redirect_uri)

    def finish_authorization(self, request: AuthorizationRequest, callback_url: str) -> TokenSet:
        """Exchange the code in the URL the provider sent the user back to; checks the state first."""
        query = parse_qs(urlsplit(callback_url).query)
        if query.get("error"):
            error = query["error"][0]
            description = (query.get("error_description") or [""])[0]
            raise GrantRefusedError(self._describe("authorization", error, description), error)
        state = (query.get("state") or [""])[0]
        if not secrets.compare_digest(state, request.state):
            raise OAuthError(
                f"{self.provider.name}: the answer does not belong to this sign-in (state differs)"
            )
        code = (query.get("code") or [""])[0]
        if not code:
            raise OAuthError(f"{self.provider.name}: the address has no authorization code")
        with self._session(redirect_uri=request.redirect_uri) as session:
            token = self._call(
                "code exchange",
                lambda: session.fetch_token(
                    self.provider.token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=request.code_verifier,
                    redirect_uri=request.redirect_uri,
                ),
            )
        return self._token_set(token, require_refresh=True)

    # -- device authorization grant (RFC 8628) ---------------------------------------------------------

    def start_device_authorization(self) -> DeviceAuthorization:
        provider = self.provider
        if not provider.device_url:
            raise OAuthError(f"[oauth.{provider.name}] has no device_url: the device flow cannot be used")
        public = self.device_flow_is_public
        with self._session(public=public) as session:
            data = {"scope": " ".join(provider.scopes)}
            auth = session.client_auth(session.token_endpoint_auth_method)
            body = self._call(
                "device authorization",
                lambda: self._json(session.post(provider.device_url or "", data=data, auth=auth)),
            )
        try:
            now = self.now_fn()
            return DeviceAuthorization(
                user_code=str(body["user_code"]),
                # RFC 8628 says verification_uri; Google and older Microsoft endpoints say verification_url
                verification_uri=str(body.get("verification_uri") or body["verification_url"]),
                verification_uri_complete=body.get("verification_uri_complete"),
                expires_at=now + timedelta(seconds=int(body.get("expires_in", 900))),
                interval=float(body.get("interval", 5)),
                device_code=str(body["device_code"]),
                message=body.get("message"),
            )
        except (KeyError, TypeError, ValueError):
            raise OAuthError(f"{provider.name}: the device authorization answer is incomplete") from None

    def poll_device_authorization(
        self,
        device: DeviceAuthorization,
        *,
        stop: threading.Event | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> TokenSet:
        """Poll the token endpoint until the user approves (TokenSet), declines or the code expires
        (DeviceFlowError), or `stop` is set (DeviceFlowError). `wait(seconds)` returns True to stop early."""
        stop = stop or threading.Event()
        wait = wait or stop.wait
        interval = max(device.interval, 1.0)
        with self._session(public=self.device_flow_is_public) as session:
            while True:
                if wait(interval) or stop.is_set():
                    raise DeviceFlowError(f"{self.provider.name}: stopped waiting for the sign-in")
                if self.now_fn() >= device.expires_at:
                    raise DeviceFlowError(
                        f"{self.provider.name}: the code expired before the sign-in finished"
                    )
                try:
                    token = session.fetch_token(
                        self.provider.token_url, grant_type=DEVICE_CODE_GRANT, device_code=device.device_code
                    )
                except AuthlibBaseError as exc:
                    error = str(getattr(exc, "error", "") or "")
                    if error == "authorization_pending":
                        continue
                    if error == "slow_down":
                        interval += 5  # RFC 8628 3.5: for this and every later request
                        continue
                    if error in ("access_denied", "expired_token", "authorization_declined"):
                        raise DeviceFlowError(
                            self._describe("sign-in", error, getattr(exc, "description", ""))
                        ) from None
                    raise self._translate("device code polling", exc) from None
                except (requests.RequestException, ValueError) as exc:
                    raise self._translate("device code polling", exc) from None
                return self._token_set(token, require_refresh=True)

    # -- refresh, client credentials, revocation ---------------------------------------------------------

    def refresh(self, refresh_token: str, *, public: bool = False) -> TokenSet:
        """A new access token for a stored grant. public=True for grants from a public-client device flow."""
        with self._session(public=public, scope=self.provider.scopes) as session:
            token = self._call(
                "token refresh",
                lambda: session.refresh_token(self.provider.token_url, refresh_token=refresh_token),
            )
        return self._token_set(token, require_refresh=False)

    def client_credentials(self) -> TokenSet:
        """An app-only access token (e.g. Microsoft 365 with an admin-granted application permission)."""
        if self.provider.client_secret is None:
            raise ClientRejectedError(
                f"[oauth.{self.provider.name}] has no client secret for app-only access"
            )
        with self._session(scope=self.provider.app_scopes) as session:
            token = self._call(
                "client credentials",
                lambda: session.fetch_token(self.provider.token_url, grant_type="client_credentials"),
            )
        return self._token_set(token, require_refresh=False)

    def revoke(
        self,
        token: str,
        *,
        token_type_hint: str = "refresh_token",  # noqa: S107
        public: bool = False,
    ) -> bool:
        """Revoke a token at the provider (RFC 7009); False when the provider has no revocation endpoint."""
        url = self.provider.revoke_url
        if not url:
            return False
        with self._session(public=public) as session:
            response = self._call(
                "revocation", lambda: session.revoke_token(url, token=token, token_type_hint=token_type_hint)
            )
            if response.status_code >= 400:
                raise OAuthError(f"{self.provider.name}: revocation failed with HTTP {response.status_code}")
        return True

    # -- plumbing ----------------------------------------------------------------------------------------

    def _session(
        self, *, public: bool = False, scope: Sequence[str] | None = None, redirect_uri: str | None = None
    ) -> OAuth2Session:
        provider = self.provider
        secret = None if public or provider.client_secret is None else provider.client_secret.reveal()
        session = OAuth2Session(
            client_id=provider.client_id,
            client_secret=secret,
            token_endpoint_auth_method="client_secret_post" if secret else "none",
            revocation_endpoint_auth_method="client_secret_post" if secret else "none",
            scope=" ".join(provider.scopes if scope is None else scope) or None,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            default_timeout=provider.timeout_seconds,
        )
        session.verify = provider.tls_ca_file or True
        session.trust_env = False  # no proxy or netrc credentials picked up from the environment
        session.max_redirects = 0
        return session

    def _call(self, action: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (AuthlibBaseError, requests.RequestException, ValueError) as exc:
            raise self._translate(action, exc) from None

    def _translate(self, action: str, exc: Exception) -> OAuthError:
        name = self.provider.name
        if isinstance(exc, AuthlibBaseError):
            error = str(getattr(exc, "error", "") or "error")
            description = str(getattr(exc, "description", "") or "")
            message = self._describe(action, error, description)
            if error in _GRANT_REFUSED:
                return GrantRefusedError(message, f"{error}: {description}".strip(": ") or error)
            if error in _CLIENT_REJECTED:
                return ClientRejectedError(message)
            return OAuthError(message)
        if isinstance(exc, requests.exceptions.SSLError):
            return OAuthError(f"{name}: {action}: TLS certificate not trusted or TLS failed")
        if isinstance(exc, requests.Timeout):
            return OAuthError(f"{name}: {action}: no answer within {self.provider.timeout_seconds:g}s")
        if isinstance(exc, requests.ConnectionError):
            return OAuthError(f"{name}: {action}: cannot connect to the provider")
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            return OAuthError(f"{name}: {action}: the provider answered HTTP {exc.response.status_code}")
        if isinstance(exc, requests.RequestException):
            return OAuthError(f"{name}: {action}: {type(exc).__name__}")
        return OAuthError(f"{name}: {action}: the provider's answer is not valid ({type(exc).__name__})")

    def _describe(self, action: str, error: str, description: str | None) -> str:
        detail = (
            f" ({description.strip().splitlines()[0][:300]})" if description and description.strip() else ""
        )
        return f"{self.provider.name}: {action} refused: {error}{detail}"

    @staticmethod
    def _json(response: requests.Response) -> Mapping[str, Any]:
        try:
            body = response.json()
        except ValueError:
            response.raise_for_status()
            raise
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        if "error" in body:
            raise AuthlibOAuthError(error=str(body["error"]), description=body.get("error_description"))
        response.raise_for_status()
        return body

    def _token_set(self, token: Mapping[str, Any], *, require_refresh: bool) -> TokenSet:
        name = self.provider.name
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise OAuthError(f"{name}: the token answer has no access token")
        token_type = str(token.get("token_type", "bearer")).lower()
        if token_type != "bearer":  # noqa: S105
            raise OAuthError(
                f"{name}: unsupported token type {token_type!r} (only bearer tokens sign in to mail)"
            )
        refresh_token = token.get("refresh_token") or None
        if require_refresh and refresh_token is None:
            hint = (
                " (add offline_access to scopes)"
                if self.provider.preset is OAuthPreset.MICROSOFT
                else " (Google: authorize_params access_type = 'offline')"
                if self.provider.preset is OAuthPreset.GOOGLE
                else ""
            )
            raise OAuthError(
                f"{name}: the provider gave no refresh token, so access would end within the hour{hint}"
            )
        try:
            lifetime = timedelta(seconds=int(token["expires_in"]))
        except (KeyError, TypeError, ValueError):
            lifetime = _DEFAULT_LIFETIME
        scope = token.get("scope")
        scopes = tuple(str(scope).split()) if scope else ()
        return TokenSet(
            access_token=access_token,
            expires_at=self.now_fn() + lifetime,
            refresh_token=str(refresh_token) if refresh_token else None,
            scopes=scopes,
        )
