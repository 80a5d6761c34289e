"""Threadline's settings: the typed sections (`settings.model`) and the TOML loader (`settings.loader`).

A leaf package: it imports nothing of Threadline's, so models/, daemon/, admin/ and the shell on top may all
import it without an arrow running back up.
"""

from typing import TYPE_CHECKING, Any

from settings.model import (
    DEFAULT_DATABASE_URL,
    NO_PASSWORD,
    AdminSettings,
    AlertSettings,
    ApiSettings,
    ConfigError,
    DatabaseSettings,
    LoggingSettings,
    MailboxAuth,
    MailboxSettings,
    MailboxSettingsError,
    MailboxSource,
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
    is_loopback_host,
    validate_mailbox,
)

if TYPE_CHECKING:
    from settings.loader import DEFAULT_CONFIG_NAME, find_config_file, load_settings

# The loader needs SQLAlchemy (database URLs) and Babel (locales), which take most of a second to import; the
# parser's worker processes only need the model, so the loader is imported when first asked for.
_FROM_LOADER = frozenset({"DEFAULT_CONFIG_NAME", "find_config_file", "load_settings"})


def __getattr__(name: str) -> Any:
    if name in _FROM_LOADER:
        from settings import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'settings' has no attribute {name!r}")


__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_DATABASE_URL",
    "NO_PASSWORD",
    "AdminSettings",
    "AlertSettings",
    "ApiSettings",
    "ConfigError",
    "DatabaseSettings",
    "LoggingSettings",
    "MailboxAuth",
    "MailboxSettings",
    "MailboxSettingsError",
    "MailboxSource",
    "MatchingSettings",
    "MetricsSettings",
    "OAuthPreset",
    "OAuthProviderSettings",
    "SaslMechanism",
    "Secret",
    "SecretsSettings",
    "Settings",
    "Sharing",
    "SmtpSettings",
    "TeamSettings",
    "find_config_file",
    "is_loopback_host",
    "load_settings",
    "validate_mailbox",
]
