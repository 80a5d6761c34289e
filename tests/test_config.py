"""Configuration loading: defaults, where the file comes from, and one clear line for every mistake."""

from pathlib import Path

import pytest

from settings import DEFAULT_DATABASE_URL, Settings, find_config_file, load_settings
from threadline.cli import main

REPO = Path(__file__).resolve().parent.parent

MAILBOX = """
[[mailboxes]]
name = "jane"
host = "imap.example.com"
username = "jane@acme.com"
password_env = "JANE_IMAP_PASSWORD"
"""


def test_defaults_when_there_is_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config_file(None, environ={}) is None
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.database.url == DEFAULT_DATABASE_URL
    assert (settings.admin.host, settings.admin.port, settings.alerts.stall_days) == ("127.0.0.1", 8000, 14)
    assert settings.mailboxes == ()


def test_explicit_option_beats_environment_beats_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "threadline.toml").write_text("", encoding="utf-8")
    assert find_config_file(None, environ={}) == Path("threadline.toml")
    assert find_config_file(None, environ={"THREADLINE_CONFIG": "/etc/tl.toml"}) == Path("/etc/tl.toml")
    assert find_config_file("mine.toml", environ={"THREADLINE_CONFIG": "/etc/tl.toml"}) == Path("mine.toml")


def test_the_cli_reads_the_file_the_environment_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "threadline.toml").write_text('[database]\nurl = "sqlite:///cwd.db"\n', encoding="utf-8")
    env_file = tmp_path / "env.toml"
    env_file.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "env.db"}"\n[logging]\nlevel = "ERROR"\n', encoding="utf-8"
    )
    monkeypatch.setenv("THREADLINE_CONFIG", str(env_file))
    assert main(["db", "status"]) == 1  # not migrated yet: but it looked at env.db, not cwd.db
    out = capsys.readouterr().out
    assert f"database sqlite:///{tmp_path / 'env.db'}: revision empty" in out


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[database]\nurll = 'x'\n", {}, "database.urll: unknown key"),
        ("colour = 'blue'\n", {}, "colour: unknown key"),
        (
            "[alerts]\nstall_days = 'two weeks'\n",
            {},
            "alerts.stall_days: expected an integer, got 'two weeks'",
        ),
        (
            "[matching]\ncreate_contacts = 'everyone'\n",
            {},
            "matching.create_contacts: must be one of none, sent, sent_and_received; got 'everyone'",
        ),
        (
            "[[mailboxes]]\nname = 'jane'\nusername = 'jane@acme.com'\npassword_env = 'P'\n",
            {"P": "x"},
            "mailboxes[0].host: required key is missing",
        ),
        (
            MAILBOX.replace('password_env = "JANE_IMAP_PASSWORD"', 'password = "hunter2hunter2"'),
            {},
            "mailboxes[0].password: secrets are not written in the config file; "
            "use password_env or password_file",
        ),
        (
            MAILBOX,
            {},
            "mailboxes[0].password_env: environment variable JANE_IMAP_PASSWORD for mailbox 'jane' "
            "is not set",
        ),
        (
            "[team]\ntimezone = 'Mars/Olympus'\n",
            {},
            "team.timezone: unknown time zone 'Mars/Olympus' (use a name like 'Europe/Paris')",
        ),
        ("[database\nurl = 1\n", {}, "not valid TOML"),
        (
            "[metrics]\ntoken = 'hunter2hunter2hunter2hunter2'\n",
            {},
            "metrics.token: secrets are not written in the config file; use token_env or token_file",
        ),
        (
            "[metrics]\ntoken_env = 'SCRAPE'\n",
            {"SCRAPE": "hunter2"},
            "metrics.token_env: the metrics token from $SCRAPE is too short: use at least 24 random "
            "characters",
        ),
        (
            "[database]\nurl = 'postgresql+psycopg://crm:hunter2@db.internal/crm'\n",
            {},
            "database.url: a password in the URL's userinfo is a secret: use url_env or url_file instead",
        ),
        (
            "[database]\nurl = 'postgresql+psycopg://crm@db.internal/crm?sslmode=require&password=hunter2'\n",
            {},
            "database.url: a password in the URL's query string is a secret: use url_env or url_file instead",
        ),
        (
            "[database]\nurl_env = 'DB_URL'\n",
            {"DB_URL": "mysql://crm:hunter2@db.internal/crm?password=hunter2"},
            "database.url: only sqlite:/// and postgresql+psycopg:// URLs are supported, "
            "got 'mysql://crm:***@db.internal/crm?password=***'",
        ),
        ("[admin]\ntrusted_proxy_hops = -1\n", {}, "admin.trusted_proxy_hops: must be at least 0"),
    ],
)
def test_a_mistake_is_one_line_naming_file_and_key_and_exit_2(
    tmp_path, monkeypatch, capsys, text, env, expected
):
    monkeypatch.delenv("JANE_IMAP_PASSWORD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["--config", str(config), "db", "status"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"threadline: config error: {config}: ")
    assert expected in captured.err
    assert "Traceback" not in captured.err
    assert "hunter2" not in captured.err


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.toml"), "db", "status"]) == 2
    assert (
        capsys.readouterr().err
        == f"threadline: config error: {tmp_path / 'nope.toml'}: config file not found\n"
    )


def test_the_example_config_loads_cleanly():
    settings = load_settings(REPO / "config.example.toml", environ={})
    assert settings.mailboxes == ()
    assert settings.database.url == "sqlite:///threadline.db"
    assert settings.alerts.schedule == "0 8 * * mon-fri"


def test_secrets_never_appear_in_the_settings_repr(tmp_path):
    config = tmp_path / "secret.toml"
    (tmp_path / "smtp.secret").write_text("smtp-very-secret\n", encoding="utf-8")
    config.write_text(
        MAILBOX + '\n[smtp]\nhost = "smtp.example.com"\npassword_file = "smtp.secret"\n'
        '[admin]\nsecret_key_env = "KEY"\n[database]\nurl_env = "DB_URL"\n',
        encoding="utf-8",
    )
    environ = {
        "JANE_IMAP_PASSWORD": "imap-very-secret",
        "KEY": "signing-very-secret",
        "DB_URL": "postgresql+psycopg://crm:db-very-secret@db.internal/crm",
    }
    settings = load_settings(config, environ=environ)
    assert settings.mailboxes[0].password.reveal() == "imap-very-secret"
    assert settings.smtp.password is not None and settings.smtp.password.reveal() == "smtp-very-secret"
    text = repr(settings) + str(settings) + repr(settings.mailboxes) + repr(settings.smtp.password)
    for secret in ("imap-very-secret", "smtp-very-secret", "signing-very-secret"):
        assert secret not in text


def test_a_database_password_from_url_env_never_appears_in_the_settings_repr(tmp_path):
    config = tmp_path / "db.toml"
    config.write_text('[database]\nurl_env = "DB_URL"\n', encoding="utf-8")
    settings = load_settings(
        config, environ={"DB_URL": "postgresql+psycopg://crm:db-very-secret@db.internal/crm"}
    )
    assert "db-very-secret" not in repr(settings)


def test_metrics_are_off_until_a_token_is_configured(tmp_path):
    assert not load_settings(None).metrics.enabled
    (tmp_path / "metrics.token").write_text("0123456789abcdef0123456789abcdef\n", encoding="utf-8")
    config = tmp_path / "metrics.toml"
    config.write_text('[metrics]\ntoken_file = "metrics.token"\n', encoding="utf-8")
    settings = load_settings(config, environ={})
    assert settings.metrics.enabled and settings.metrics.token is not None
    assert settings.metrics.token.reveal() == "0123456789abcdef0123456789abcdef"
    assert "0123456789abcdef" not in repr(settings)


def test_cli_messages_never_show_a_database_password_from_url_env(tmp_path, capsys, monkeypatch):
    """A URL from url_env may carry a password (userinfo or query string); no message shows it."""
    config = tmp_path / "db.toml"
    config.write_text('[database]\nurl_env = "DB_URL"\n', encoding="utf-8")
    for url in (
        "postgresql+psycopg://crm:hunter2@127.0.0.1:1/crm?connect_timeout=2",
        "postgresql+psycopg://crm@127.0.0.1:1/crm?connect_timeout=2&password=hunter2",
    ):
        monkeypatch.setenv("DB_URL", url)
        assert main(["--config", str(config), "db", "status"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("threadline: database error on postgresql+psycopg://crm"), err
        assert "***" in err and "hunter2" not in err


def test_trusted_proxy_hops_is_read_from_the_admin_section(tmp_path):
    config = tmp_path / "proxy.toml"
    config.write_text("[admin]\ntrusted_proxy_hops = 1\n", encoding="utf-8")
    assert load_settings(config, environ={}).admin.trusted_proxy_hops == 1
    assert load_settings(None).admin.trusted_proxy_hops == 0
