"""Threadline's typed settings: frozen dataclasses, one per section of the configuration file.

This package is a leaf at the bottom of the house: it imports nothing of Threadline's, and models/, daemon/,
admin/ and the shell may all import it. Each part receives the section it needs (a `MatchingSettings`, an
`AlertSettings`, ...) and never reads the file or the environment itself. Secrets are `Secret` values that
never show themselves in logs, reprs or pages.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "sqlite:///threadline.db"


class ConfigError(Exception):
    """A configuration mistake; the message is one line naming the file and the key."""


class MailboxSettingsError(ValueError):
    """A mailbox's settings break a rule; `key` names the offending setting (the file's key name)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class Secret:
    """A secret value that never shows itself in logs, reprs or pages."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # may carry a password from url_env
    echo: bool = False


@dataclass(frozen=True)
class TeamSettings:
    domains: tuple[str, ...] = ()
    timezone: str = "UTC"
    locale: str = "en_US"  # how the panel writes money, numbers and dates (a CLDR locale, e.g. "de_DE")


@dataclass(frozen=True)
class MatchingSettings:
    """How mail is matched and read: who becomes a contact, and the caps that bound what one message costs
    (docs/sync.md explains each)."""

    create_contacts: str = "sent"
    ignore: tuple[str, ...] = ()
    freemail_domains: tuple[str, ...] = ()
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_message_bytes: int = 25 * 1024 * 1024
    batch_size: int = 200
    max_header_bytes: int = 100 * 1024
    max_recipients: int = 100
    max_mime_depth: int = 30
    max_mime_parts: int = 500
    parse_timeout_seconds: float = 20.0
    parse_workers: int = 0  # 0: one per CPU core
    history_days: int = 365  # skipped mail is indexed this long, to be linked when its people become contacts


class MailboxAuth(enum.StrEnum):
    """How a mailbox signs in to its IMAP server."""

    PASSWORD = "password"  # noqa: S105 (LOGIN with a password)
    OAUTH = "oauth"  # SASL XOAUTH2/OAUTHBEARER with a user's delegated OAuth grant
    APP = "app"  # SASL XOAUTH2/OAUTHBEARER with an app-only token (client credentials, e.g. Microsoft 365)


class Sharing(enum.StrEnum):
    """Who may read the whole of a mailbox's messages: everyone (shared) or its owner (private)."""

    SHARED = "shared"
    PRIVATE = "private"


class SaslMechanism(enum.StrEnum):
    XOAUTH2 = "xoauth2"
    OAUTHBEARER = "oauthbearer"


class MailboxSource(enum.StrEnum):
    """Where a mailbox is defined: the TOML file (read-only in the panel) or the database (managed there)."""

    CONFIG = "config"
    DATABASE = "database"


# A mailbox that signs in with OAuth has no password; sync code that scrubs the password out of error text
# sees an empty secret and has nothing to scrub.
NO_PASSWORD = Secret("", "no password: this mailbox signs in with OAuth")


@dataclass(frozen=True)
class MailboxSettings:
    name: str
    host: str
    username: str
    password: Secret = field(default=NO_PASSWORD, repr=False)
    port: int = 993
    security: str = "ssl"
    folders: tuple[str, ...] = ()
    owner: str | None = None
    poll_seconds: int = 60
    idle: bool = True
    tls_ca_file: str | None = None
    timeout_seconds: float = 30.0
    address: str | None = None
    auth: MailboxAuth = MailboxAuth.PASSWORD
    provider: str | None = None  # the [oauth.NAME] provider of an oauth or app mailbox
    sasl: SaslMechanism | None = None  # None: the provider's mechanism
    sharing: Sharing = Sharing.SHARED
    source: MailboxSource = MailboxSource.CONFIG

    @property
    def uses_oauth(self) -> bool:
        return self.auth is not MailboxAuth.PASSWORD


class OAuthPreset(enum.StrEnum):
    MICROSOFT = "microsoft"
    GOOGLE = "google"
    GENERIC = "generic"


@dataclass(frozen=True)
class OAuthProviderSettings:
    """One OAuth 2.0 authorization server the mailboxes can sign in through ([oauth.NAME] in the file).

    The presets fill in the endpoints, scopes and SASL mechanism of Microsoft 365 and Google; every value
    can be overridden (which is also how tests point a provider at a server on loopback).
    """

    name: str
    preset: OAuthPreset
    client_id: str
    client_secret: Secret | None = field(default=None, repr=False)
    authorize_url: str = ""
    token_url: str = ""
    device_url: str | None = None  # RFC 8628 device authorization endpoint: the CLI's headless flow
    revoke_url: str | None = None  # RFC 7009 revocation endpoint, used when a mailbox is disconnected
    scopes: tuple[str, ...] = ()  # asked for by the user flows (authorization code, device code)
    app_scopes: tuple[str, ...] = ()  # asked for by the client credentials grant (app-only mailboxes)
    authorize_params: tuple[tuple[str, str], ...] = ()  # extra query parameters of the authorize URL
    sasl: SaslMechanism = SaslMechanism.XOAUTH2
    imap_host: str | None = None  # the default host of this provider's mailboxes
    redirect_uri: str | None = None  # where the CLI's browser flow sends the user back to
    tenant: str | None = None
    timeout_seconds: float = 30.0
    tls_ca_file: str | None = None


MICROSOFT_IMAP_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
)
GOOGLE_MAIL_SCOPES = ("https://mail.google.com/",)


def preset_defaults(preset: OAuthPreset, tenant: str | None) -> dict[str, object]:
    """The endpoints, scopes and mechanism a preset stands for; [oauth.NAME] keys override each one."""
    if preset is OAuthPreset.MICROSOFT:
        base = f"https://login.microsoftonline.com/{tenant or 'organizations'}/oauth2/v2.0"
        return {
            "authorize_url": f"{base}/authorize",
            "token_url": f"{base}/token",
            "device_url": f"{base}/devicecode",
            "revoke_url": None,  # Microsoft identity platform has no RFC 7009 endpoint
            "scopes": MICROSOFT_IMAP_SCOPES,
            "app_scopes": ("https://outlook.office365.com/.default",),
            "authorize_params": (),
            "sasl": SaslMechanism.XOAUTH2,
            "imap_host": "outlook.office365.com",
        }
    if preset is OAuthPreset.GOOGLE:
        return {
            "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
            "token_url": "https://oauth2.googleapis.com/token",
            # Google's device flow does not allow the mail scope: the CLI uses the browser flow instead
            "device_url": None,
            "revoke_url": "https://oauth2.googleapis.com/revoke",
            "scopes": GOOGLE_MAIL_SCOPES,
            "app_scopes": (),
            # without access_type=offline Google gives no refresh token; prompt=consent gives a new one on
            # every connect instead of only the first time
            "authorize_params": (("access_type", "offline"), ("prompt", "consent")),
            "sasl": SaslMechanism.XOAUTH2,
            "imap_host": "imap.gmail.com",
        }
    return {
        "authorize_url": "",
        "token_url": "",
        "device_url": None,
        "revoke_url": None,
        "scopes": (),
        "app_scopes": (),
        "authorize_params": (),
        "sasl": SaslMechanism.XOAUTH2,
        "imap_host": None,
    }


@dataclass(frozen=True)
class SecretsSettings:
    """The key that encrypts secrets stored in the database (OAuth refresh tokens, mailbox passwords).

    The key lives outside the database ([secrets] key_env or key_file). It may hold several Fernet keys
    separated by commas or spaces: the first encrypts, all of them decrypt, so a key is rotated by putting
    the new one first and running `threadline secrets rotate`.
    """

    key: Secret | None = field(default=None, repr=False)

    @property
    def keys(self) -> tuple[str, ...]:
        if self.key is None:
            return ()
        return tuple(k for k in self.key.reveal().replace(",", " ").split() if k)


@dataclass(frozen=True)
class AlertSettings:
    enabled: bool = True
    schedule: str = "0 8 * * mon-fri"
    stall_days: int = 14
    lead_window_days: int = 14
    lead_response_hours: int = 24
    remind_every_days: int = 7
    create_tasks: bool = False


@dataclass(frozen=True)
class SmtpSettings:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    from_address: str = "threadline@localhost"
    base_url: str = "http://127.0.0.1:8000"
    timeout_seconds: float = 30.0
    tls_ca_file: str | None = None
    # sign in with SASL XOAUTH2 as this mailbox's OAuth account (its grant), instead of a password
    oauth_mailbox: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class AdminSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: Secret | None = field(default=None, repr=False)
    secure_cookies: bool = False
    threads: int = 8
    trusted_proxy_hops: int = 0
    admins_read_private: bool = False  # admins read private mailboxes' bodies too (models.privacy)


@dataclass(frozen=True)
class ApiSettings:
    """`[api]`: the REST API's per-key rate limit, webhook delivery and the public website-form endpoint."""

    requests_per_minute: int = 600
    webhook_timeout_seconds: float = 10.0
    webhook_workers: int = 4
    webhook_retry_hours: int = 24
    form_submissions_per_hour: int = 20
    form_max_bytes: int = 16384


@dataclass(frozen=True)
class MetricsSettings:
    """`/metrics` on the panel's address: off (404) until a bearer token is configured."""

    token: Secret | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.token is not None


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"


@dataclass(frozen=True)
class Settings:
    source: str = "built-in defaults"
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    team: TeamSettings = field(default_factory=TeamSettings)
    matching: MatchingSettings = field(default_factory=MatchingSettings)
    mailboxes: tuple[MailboxSettings, ...] = ()
    alerts: AlertSettings = field(default_factory=AlertSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    oauth: Mapping[str, OAuthProviderSettings] = field(default_factory=dict)

    def mailbox(self, name: str) -> MailboxSettings:
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        raise ConfigError(f"{self.source}: no mailbox named {name!r} in [[mailboxes]]")


# ---- rules every mailbox follows, wherever it is defined (the file or the panel) ---------------------------

SECURITY_CHOICES = ("ssl", "starttls", "none")


def is_loopback_host(host: str) -> bool:
    """localhost or a loopback address: the only hosts secrets may travel to unencrypted."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_endpoint_url(url: str) -> str | None:
    """Why an OAuth endpoint URL is unusable (None when it is fine): https, or http to loopback only."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"{url!r} would send secrets unencrypted; use https (http is allowed for localhost only)"
    return None


def validate_mailbox(mailbox: MailboxSettings, providers: Mapping[str, OAuthProviderSettings]) -> None:
    """Raise MailboxSettingsError for a mailbox that could not work or would leak its credentials.

    One owner for these rules: the config loader and the database's mailbox operations both call it.
    """
    if not mailbox.name.strip() or len(mailbox.name) > 200:
        raise MailboxSettingsError("name", "must be 1 to 200 characters")
    _check_sign_in(mailbox, providers)
    if not mailbox.host.strip():
        raise MailboxSettingsError("host", "required key is missing")
    if not mailbox.username.strip():
        raise MailboxSettingsError("username", "required key is missing")
    if not 1 <= mailbox.port <= 65535:
        raise MailboxSettingsError("port", f"must be at least 1 and at most 65535, got {mailbox.port}")
    if mailbox.security not in SECURITY_CHOICES:
        raise MailboxSettingsError(
            "security", f"must be one of {', '.join(SECURITY_CHOICES)}; got {mailbox.security!r}"
        )
    if mailbox.security == "none" and not is_loopback_host(mailbox.host):
        raise MailboxSettingsError(
            "security",
            f"'none' sends the credentials in clear text and is refused for {mailbox.host}; use ssl",
        )
    if mailbox.poll_seconds < 1:
        raise MailboxSettingsError("poll_seconds", f"must be at least 1, got {mailbox.poll_seconds}")


def _check_sign_in(mailbox: MailboxSettings, providers: Mapping[str, OAuthProviderSettings]) -> None:
    if mailbox.auth is MailboxAuth.PASSWORD:
        if mailbox.provider is not None:
            raise MailboxSettingsError("provider", "only for auth = 'oauth' or 'app'")
        if not mailbox.password.reveal():
            raise MailboxSettingsError("password_env", "required for auth = 'password'")
        return
    if mailbox.password.reveal():
        raise MailboxSettingsError(
            "password_env",
            f"a mailbox with auth = {mailbox.auth.value!r} signs in with a token, not a password",
        )
    if not mailbox.provider:
        raise MailboxSettingsError("provider", f"required for auth = {mailbox.auth.value!r}: an [oauth.NAME]")
    provider = providers.get(mailbox.provider)
    if provider is None:
        known = ", ".join(sorted(providers)) or "none configured"
        raise MailboxSettingsError(
            "provider", f"no OAuth provider {mailbox.provider!r} in [oauth] (known: {known})"
        )
    if mailbox.auth is MailboxAuth.APP:
        if provider.preset is OAuthPreset.GOOGLE:
            raise MailboxSettingsError(
                "auth", "Google has no client credentials grant for mail; use auth = 'oauth'"
            )
        if provider.client_secret is None:
            raise MailboxSettingsError(
                "auth",
                f"app-only access needs a client secret: set client_secret_env in [oauth.{provider.name}]",
            )
        if not provider.app_scopes:
            raise MailboxSettingsError(
                "auth", f"set app_scopes in [oauth.{provider.name}] for app-only access"
            )
        if provider.preset is OAuthPreset.MICROSOFT and provider.tenant in _MICROSOFT_SHARED_TENANTS:
            raise MailboxSettingsError(
                "auth",
                f"app-only access is granted by one tenant: set tenant in [oauth.{provider.name}] to your "
                "tenant id or domain (not common/organizations)",
            )


_MICROSOFT_SHARED_TENANTS = (None, "common", "organizations", "consumers")
