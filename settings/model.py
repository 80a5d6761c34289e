"""Threadline's typed settings: frozen dataclasses, one per section of the configuration file.

This package is a leaf at the bottom of the house: it imports nothing of Threadline's, and models/, daemon/,
admin/ and the shell may all import it. Each part receives the section it needs (a `MatchingSettings`, an
`AlertSettings`, ...) and never reads the file or the environment itself. Secrets are `Secret` values that
never show themselves in logs, reprs or pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "sqlite:///threadline.db"


class ConfigError(Exception):
    """A configuration mistake; the message is one line naming the file and the key."""


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


@dataclass(frozen=True)
class MatchingSettings:
    create_contacts: str = "sent"
    ignore: tuple[str, ...] = ()
    freemail_domains: tuple[str, ...] = ()
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_message_bytes: int = 25 * 1024 * 1024
    batch_size: int = 200


@dataclass(frozen=True)
class MailboxSettings:
    name: str
    host: str
    username: str
    password: Secret = field(repr=False)
    port: int = 993
    security: str = "ssl"
    folders: tuple[str, ...] = ()
    owner: str | None = None
    poll_seconds: int = 60
    idle: bool = True
    tls_ca_file: str | None = None
    timeout_seconds: float = 30.0
    address: str | None = None


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
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def mailbox(self, name: str) -> MailboxSettings:
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        raise ConfigError(f"{self.source}: no mailbox named {name!r} in [[mailboxes]]")
