"""Threadline's settings: the typed sections (`settings.model`) and the TOML loader (`settings.loader`).

A leaf package: it imports nothing of Threadline's, so models/, daemon/, admin/ and the shell on top may all
import it without an arrow running back up.
"""

from settings.loader import DEFAULT_CONFIG_NAME, find_config_file, load_settings
from settings.model import (
    DEFAULT_DATABASE_URL,
    AdminSettings,
    AlertSettings,
    ConfigError,
    DatabaseSettings,
    LoggingSettings,
    MailboxSettings,
    MatchingSettings,
    Secret,
    Settings,
    SmtpSettings,
    TeamSettings,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_DATABASE_URL",
    "AdminSettings",
    "AlertSettings",
    "ConfigError",
    "DatabaseSettings",
    "LoggingSettings",
    "MailboxSettings",
    "MatchingSettings",
    "Secret",
    "Settings",
    "SmtpSettings",
    "TeamSettings",
    "find_config_file",
    "load_settings",
]
