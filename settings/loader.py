"""Reading the configuration file: one TOML file turned into frozen, typed `Settings`.

Secrets are never written in the file: a key ending in `_env` names an environment variable, one ending in
`_file` names a file holding the secret. Any mistake in the file raises `ConfigError` with one line naming the
file and the key, which the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import babel

from settings.model import (
    DEFAULT_DATABASE_URL,
    NO_PASSWORD,
    SECURITY_CHOICES,
    AdminSettings,
    AlertSettings,
    ApiSettings,
    ConfigError,
    DatabaseSettings,
    LoggingSettings,
    MailboxAuth,
    MailboxSettings,
    MailboxSettingsError,
    MatchingSettings,
    MetricsSettings,
    OAuthPreset,
    OAuthProviderSettings,
    SaslMechanism,
    Secret,
    SecretsSettings,
    Settings,
    Sharing,
    SmtpSettings,
    TeamSettings,
    check_endpoint_url,
    is_loopback_host,
    preset_defaults,
    validate_mailbox,
)
from settings.urls import password_place, shown_url

DEFAULT_CONFIG_NAME = "threadline.toml"

T = TypeVar("T")


def find_config_file(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: --config, else $THREADLINE_CONFIG, else ./threadline.toml if present."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get("THREADLINE_CONFIG"):
        return Path(environ["THREADLINE_CONFIG"])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file (or the built-in defaults when path is None)."""
    environ = os.environ if environ is None else environ
    if path is None:
        return Settings()
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return _Reader(source, environ, path.parent).settings(data)


_SECURITY_CHOICES = SECURITY_CHOICES
_CREATE_CONTACTS_CHOICES = ("none", "sent", "sent_and_received")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# a guessable bearer token would make /metrics public in all but name
METRICS_TOKEN_MIN_LENGTH = 24


class _Table:
    """One TOML table being read; remembers which keys were used so unknown ones are reported."""

    def __init__(self, reader: _Reader, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{reader.source}: {where}: expected a table")
        self.reader = reader
        self.data: dict[str, Any] = data
        self.where = where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.reader.source}: {self.key(name)}: {problem}")

    def _get(self, name: str, kind: type[T], kind_name: str, default: T | None, required: bool) -> T | None:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise self.fail(name, "required key is missing")
            return default
        value = self.data[name]
        # bool is an int in Python; a number where a bool is expected (or the reverse) is a mistake
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(name, f"expected {kind_name}, got {_describe(value)}")
        return value

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(name, str, "a string", default, required)
        if value is not None and required and not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def required_string(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self._get(name, int, "an integer", default, False)
        assert value is not None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise self.fail(name, f"must be at least {minimum}{upper}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        self.used.add(name)
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"expected a number, got {_describe(value)}")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, bool, "true or false", default, False)
        assert value is not None
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        assert value is not None
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        self.used.add(name)
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, f"expected a list of strings, got {_describe(value)}")
        return tuple(value)

    def secret(self, name: str, *, required: bool, owner: str = "") -> Secret | None:
        """Read NAME_env / NAME_file; a secret written directly under NAME is refused."""
        env_key, file_key = f"{name}_env", f"{name}_file"
        self.used.update({name, env_key, file_key})
        label = f" for {owner}" if owner else ""
        if name in self.data:
            raise self.fail(
                name, f"secrets are not written in the config file; use {env_key} or {file_key} instead"
            )
        env_name = self.string(env_key)
        file_name = self.string(file_key)
        if env_name and file_name:
            raise self.fail(env_key, f"set either {env_key} or {file_key}, not both")
        if env_name:
            value = self.reader.environ.get(env_name)
            if not value:
                raise self.fail(env_key, f"environment variable {env_name}{label} is not set")
            return Secret(value, f"${env_name}")
        if file_name:
            secret_path = self.reader.resolve(file_name)
            try:
                value = secret_path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self.fail(file_key, f"cannot read {secret_path}{label}: {exc.strerror}") from None
            if not value:
                raise self.fail(file_key, f"{secret_path}{label} is empty")
            return Secret(value, str(secret_path))
        if required:
            raise self.fail(
                env_key, f"required: set {env_key} (an environment variable) or {file_key}{label}"
            )
        return None

    def table(self, name: str) -> _Table:
        self.used.add(name)
        return _Table(self.reader, self.data.get(name, {}), self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


class _Reader:
    def __init__(self, source: str, environ: Mapping[str, str], base_dir: Path) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = base_dir

    def resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def settings(self, data: dict[str, Any]) -> Settings:
        root = _Table(self, data, "")
        providers = self.oauth_providers(root)
        settings = Settings(
            source=self.source,
            database=self._section(root, "database", self.database),
            team=self._section(root, "team", self.team),
            matching=self._section(root, "matching", self.matching),
            mailboxes=self.mailboxes(root, providers),
            alerts=self._section(root, "alerts", self.alerts),
            smtp=self._section(root, "smtp", self.smtp),
            admin=self._section(root, "admin", self.admin),
            metrics=self._section(root, "metrics", self.metrics),
            api=self._section(root, "api", self.api),
            logging=self._section(root, "logging", self.logging),
            secrets=self._section(root, "secrets", self.secrets),
            oauth=providers,
        )
        root.finish()
        return settings

    def _section(self, root: _Table, name: str, build: Callable[[_Table], T]) -> T:
        table = root.table(name)
        value = build(table)
        table.finish()
        return value

    def database(self, t: _Table) -> DatabaseSettings:
        url_secret = (
            t.secret("url", required=False) if ("url_env" in t.data or "url_file" in t.data) else None
        )
        if url_secret is not None:
            url = url_secret.reveal()
        else:
            t.used.update({"url_env", "url_file"})
            url = t.string("url", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL
            place = password_place(url)
            if place is not None:
                raise t.fail(
                    "url", f"a password in the URL's {place} is a secret: use url_env or url_file instead"
                )
        if not url.startswith(("sqlite", "postgresql")):
            raise t.fail(
                "url", f"only sqlite:/// and postgresql+psycopg:// URLs are supported, got {shown_url(url)!r}"
            )
        return DatabaseSettings(url=url, echo=t.boolean("echo", False))

    def team(self, t: _Table) -> TeamSettings:
        domains = tuple(d.strip().lower().lstrip("@") for d in t.strings("domains"))
        for domain in domains:
            if not domain or "." not in domain or " " in domain:
                raise t.fail("domains", f"{domain!r} is not a domain name")
        tz = t.string("timezone", "UTC") or "UTC"
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise t.fail("timezone", f"unknown time zone {tz!r} (use a name like 'Europe/Paris')") from None
        locale = t.string("locale", "en_US") or "en_US"
        try:
            babel.Locale.parse(locale)
        except (ValueError, babel.UnknownLocaleError):
            raise t.fail(
                "locale", f"unknown locale {locale!r} (use a name like 'en_US' or 'de_DE')"
            ) from None
        return TeamSettings(domains=domains, timezone=tz, locale=locale)

    def matching(self, t: _Table) -> MatchingSettings:
        return MatchingSettings(
            create_contacts=t.choice("create_contacts", "sent", _CREATE_CONTACTS_CHOICES),
            ignore=tuple(p.strip().lower() for p in t.strings("ignore")),
            freemail_domains=tuple(d.strip().lower() for d in t.strings("freemail_domains")),
            max_attachment_bytes=t.integer("max_attachment_bytes", 10 * 1024 * 1024),
            max_message_bytes=t.integer("max_message_bytes", 25 * 1024 * 1024, minimum=1024),
            batch_size=t.integer("batch_size", 200, minimum=1, maximum=5000),
            max_header_bytes=t.integer("max_header_bytes", 100 * 1024, minimum=1024),
            max_recipients=t.integer("max_recipients", 100, minimum=1),
            max_mime_depth=t.integer("max_mime_depth", 30, minimum=1, maximum=100),
            max_mime_parts=t.integer("max_mime_parts", 500, minimum=1),
            parse_timeout_seconds=t.number("parse_timeout_seconds", 20.0, minimum=0.1),
            parse_workers=t.integer("parse_workers", 0, minimum=0, maximum=64),
            history_days=t.integer("history_days", 365, minimum=1, maximum=36500),
        )

    def mailboxes(
        self, root: _Table, providers: dict[str, OAuthProviderSettings]
    ) -> tuple[MailboxSettings, ...]:
        root.used.add("mailboxes")
        raw = root.data.get("mailboxes", [])
        if not isinstance(raw, list):
            raise root.fail("mailboxes", "use [[mailboxes]] blocks (an array of tables)")
        result: list[MailboxSettings] = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            t = _Table(self, item, f"mailboxes[{index}]")
            name = t.required_string("name")
            if name in seen:
                raise t.fail("name", f"mailbox name {name!r} is used twice")
            seen.add(name)
            auth = MailboxAuth(t.choice("auth", "password", tuple(m.value for m in MailboxAuth)))
            provider_name = t.string("provider")
            provider = providers.get(provider_name) if provider_name else None
            default_host = provider.imap_host if provider is not None else None
            # an unknown provider is the mistake to report, not the host it would have given
            host = t.string("host", default_host or "") if default_host or provider_name else None
            host = host if host is not None else t.required_string("host")
            security = t.choice("security", "ssl", _SECURITY_CHOICES)
            default_port = 993 if security == "ssl" else 143
            owner = t.string("owner")
            address = t.string("address")
            ca_file = t.string("tls_ca_file")
            sasl = t.string("sasl")
            if sasl is not None and sasl not in tuple(m.value for m in SaslMechanism):
                raise t.fail("sasl", f"must be one of xoauth2, oauthbearer; got {sasl!r}")
            password = (
                t.secret("password", required=True, owner=f"mailbox {name!r}")
                if auth is MailboxAuth.PASSWORD
                else self._no_password(t, auth)
            )
            mailbox = MailboxSettings(
                name=name,
                host=host or "",
                username=t.required_string("username"),
                password=password or NO_PASSWORD,
                port=t.integer("port", default_port, minimum=1, maximum=65535),
                security=security,
                folders=t.strings("folders"),
                owner=owner.lower() if owner else None,
                poll_seconds=t.integer("poll_seconds", 60, minimum=1),
                idle=t.boolean("idle", True),
                tls_ca_file=str(self.resolve(ca_file)) if ca_file else None,
                timeout_seconds=t.number("timeout_seconds", 30.0, minimum=1.0),
                address=address.lower() if address else None,
                auth=auth,
                provider=provider_name,
                sasl=SaslMechanism(sasl) if sasl else None,
                sharing=Sharing(t.choice("sharing", "shared", tuple(m.value for m in Sharing))),
            )
            try:
                validate_mailbox(mailbox, providers)
            except MailboxSettingsError as exc:
                raise t.fail(exc.key, exc.problem) from None
            t.finish()
            result.append(mailbox)
        return tuple(result)

    @staticmethod
    def _no_password(t: _Table, auth: MailboxAuth) -> None:
        for key in ("password", "password_env", "password_file"):
            t.used.add(key)
            if key in t.data:
                raise t.fail(
                    key, f"a mailbox with auth = {auth.value!r} signs in with a token, not a password"
                )

    def oauth_providers(self, root: _Table) -> dict[str, OAuthProviderSettings]:
        """[oauth.NAME] tables: one per authorization server (a preset, or every endpoint given)."""
        section = root.table("oauth")
        providers: dict[str, OAuthProviderSettings] = {}
        for name in section.data:
            t = section.table(name)
            providers[name] = self.oauth_provider(name, t)
            t.finish()
        section.finish()
        return providers

    def oauth_provider(self, name: str, t: _Table) -> OAuthProviderSettings:
        presets = tuple(p.value for p in OAuthPreset)
        preset = OAuthPreset(t.choice("preset", name if name in presets else "generic", presets))
        tenant = t.string("tenant")
        if tenant is not None and preset is not OAuthPreset.MICROSOFT:
            raise t.fail("tenant", "only for preset = 'microsoft'")
        defaults = preset_defaults(preset, tenant)

        def url(key: str, *, required: bool) -> str | None:
            default = defaults.get(key)
            value = t.string(key, default if isinstance(default, str) else None)
            if not value:
                if required:
                    raise t.fail(key, f"required for preset = {preset.value!r}")
                return None
            problem = check_endpoint_url(value)
            if problem:
                raise t.fail(key, problem)
            return value

        def words(key: str) -> tuple[str, ...]:
            if key in t.data:
                return t.strings(key)
            t.used.add(key)
            default = defaults[key]
            assert isinstance(default, tuple)
            return default

        params_table = t.table("authorize_params")
        params: dict[str, str] = {}
        for key, default_value in defaults["authorize_params"]:  # type: ignore[attr-defined]
            params[key] = default_value
        for key in params_table.data:
            params[key] = params_table.required_string(key)
        params_table.finish()
        sasl_default = defaults["sasl"]
        assert isinstance(sasl_default, SaslMechanism)
        imap_default = defaults["imap_host"]
        ca_file = t.string("tls_ca_file")
        return OAuthProviderSettings(
            name=name,
            preset=preset,
            client_id=t.required_string("client_id"),
            client_secret=t.secret("client_secret", required=False, owner=f"[oauth.{name}]"),
            authorize_url=url("authorize_url", required=False) or "",
            token_url=url("token_url", required=True) or "",
            device_url=url("device_url", required=False),
            revoke_url=url("revoke_url", required=False),
            scopes=words("scopes"),
            app_scopes=words("app_scopes"),
            authorize_params=tuple(sorted(params.items())),
            sasl=SaslMechanism(t.choice("sasl", sasl_default.value, tuple(m.value for m in SaslMechanism))),
            imap_host=t.string("imap_host", imap_default if isinstance(imap_default, str) else None),
            redirect_uri=url("redirect_uri", required=False),
            tenant=tenant,
            timeout_seconds=t.number("timeout_seconds", 30.0, minimum=1.0),
            tls_ca_file=str(self.resolve(ca_file)) if ca_file else None,
        )

    def secrets(self, t: _Table) -> SecretsSettings:
        key = t.secret("key", required=False, owner="[secrets]")
        settings = SecretsSettings(key=key)
        if key is not None:
            label = "key_env" if "key_env" in t.data else "key_file"
            if not settings.keys:
                raise t.fail(label, "the key is empty")
            for number, value in enumerate(settings.keys, start=1):
                if not _is_fernet_key(value):
                    raise t.fail(
                        label,
                        f"key {number} is not a Fernet key (32 bytes in URL-safe base64, 44 characters); "
                        "make one with `threadline secrets generate-key`",
                    )
        return settings

    def alerts(self, t: _Table) -> AlertSettings:
        schedule = t.string("schedule", "0 8 * * mon-fri") or ""
        if len(schedule.split()) != 5:
            raise t.fail("schedule", f"expected a cron expression with 5 fields, got {schedule!r}")
        return AlertSettings(
            enabled=t.boolean("enabled", True),
            schedule=schedule,
            stall_days=t.integer("stall_days", 14, minimum=1),
            lead_window_days=t.integer("lead_window_days", 14, minimum=1),
            lead_response_hours=t.integer("lead_response_hours", 24, minimum=1),
            remind_every_days=t.integer("remind_every_days", 7, minimum=1),
            create_tasks=t.boolean("create_tasks", False),
        )

    def smtp(self, t: _Table) -> SmtpSettings:
        host = t.string("host", "") or ""
        security = t.choice("security", "starttls", _SECURITY_CHOICES)
        if host and security == "none" and not is_loopback_host(host):
            raise t.fail("security", f"'none' is refused for {host}; use starttls or ssl")
        default_port = {"ssl": 465, "starttls": 587, "none": 25}[security]
        ca_file = t.string("tls_ca_file")
        oauth_mailbox = t.string("oauth_mailbox")
        if oauth_mailbox and ("password_env" in t.data or "password_file" in t.data):
            raise t.fail("oauth_mailbox", "sign in with a password or with oauth_mailbox, not both")
        return SmtpSettings(
            host=host,
            port=t.integer("port", default_port, minimum=1, maximum=65535),
            security=security,
            username=t.string("username"),
            password=t.secret("password", required=False, owner="[smtp]"),
            from_address=t.string("from_address", "threadline@localhost") or "threadline@localhost",
            base_url=(t.string("base_url", "http://127.0.0.1:8000") or "").rstrip("/"),
            timeout_seconds=t.number("timeout_seconds", 30.0, minimum=1.0),
            tls_ca_file=str(self.resolve(ca_file)) if ca_file else None,
            oauth_mailbox=oauth_mailbox or None,
        )

    def api(self, t: _Table) -> ApiSettings:
        return ApiSettings(
            requests_per_minute=t.integer("requests_per_minute", 600, minimum=1),
            webhook_timeout_seconds=t.number("webhook_timeout_seconds", 10.0, minimum=1.0),
            webhook_workers=t.integer("webhook_workers", 4, minimum=1, maximum=64),
            webhook_retry_hours=t.integer("webhook_retry_hours", 24, minimum=1),
            form_submissions_per_hour=t.integer("form_submissions_per_hour", 20, minimum=1),
            form_max_bytes=t.integer("form_max_bytes", 16384, minimum=1024, maximum=1048576),
        )

    def admin(self, t: _Table) -> AdminSettings:
        return AdminSettings(
            host=t.string("host", "127.0.0.1") or "127.0.0.1",
            port=t.integer("port", 8000, minimum=1, maximum=65535),
            secret_key=t.secret("secret_key", required=False, owner="[admin]"),
            secure_cookies=t.boolean("secure_cookies", False),
            threads=t.integer("threads", 8, minimum=1, maximum=64),
            trusted_proxy_hops=t.integer("trusted_proxy_hops", 0, minimum=0, maximum=10),
            admins_read_private=t.boolean("admins_read_private", False),
        )

    def metrics(self, t: _Table) -> MetricsSettings:
        token = t.secret("token", required=False, owner="[metrics]")
        if token is not None and len(token.reveal()) < METRICS_TOKEN_MIN_LENGTH:
            key = "token_env" if token.source.startswith("$") else "token_file"
            raise t.fail(
                key,
                f"the metrics token from {token.source} is too short: use at least "
                f"{METRICS_TOKEN_MIN_LENGTH} random characters (e.g. `openssl rand -hex 32`)",
            )
        return MetricsSettings(token=token)

    def logging(self, t: _Table) -> LoggingSettings:
        level = (t.string("level", "INFO") or "INFO").upper()
        if level not in _LOG_LEVELS:
            raise t.fail("level", f"must be one of {', '.join(_LOG_LEVELS)}; got {level!r}")
        return LoggingSettings(level=level)


def _is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode("ascii"))) == 32 and len(value) == 44
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
