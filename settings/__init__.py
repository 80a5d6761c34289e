"""Threadline's settings: the typed sections (`settings.model`) and the TOML loader (`settings.loader`).

A leaf package: it imports nothing of Threadline's, so models/, daemon/, admin/ and the shell on top may all
import it without an arrow running back up.
"""

from settings.loader import DEFAULT_CONFIG_NAME, find_config_file, load_settings
from settings.model import (
    DEFAULT_DATABASE_URL,
    NO_PASSWORD,
    AdminSettings,
    AlertSettings,
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

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_DATABASE_URL",
    "NO_PASSWORD",
    "AdminSettings",
    "AlertSettings",
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
