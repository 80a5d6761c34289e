"""Mailboxes managed in the database, their OAuth grants, and the encryption of what they keep secret."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from models.activities import log_activity
from models.errors import DomainError, NotFoundError
from models.mailboxes import (
    MailboxFields,
    create_mailbox,
    effective_mailboxes,
    grant_access_token,
    grant_refresh_token,
    mailbox_fields,
    mark_reconnect_needed,
    pause_mailbox,
    remove_mailbox,
    resume_mailbox,
    store_grant,
    update_grant_tokens,
    update_mailbox,
)
from models.schema import Activity, ActivityKind, EmailSighting, GrantFlow, GrantState, Mailbox, OAuthGrant
from models.secrets import (
    SecretBox,
    SecretKeyError,
    check_stored_secrets,
    generate_key,
    rotate_stored_secrets,
)
from settings import (
    MailboxAuth,
    MailboxSettings,
    MailboxSource,
    OAuthPreset,
    OAuthProviderSettings,
    Secret,
    Sharing,
)
from tests.fixtures.factories import NOW

PROVIDERS = {
    "microsoft": OAuthProviderSettings(
        name="microsoft",
        preset=OAuthPreset.MICROSOFT,
        client_id="app",
        client_secret=Secret("s", "test"),
        token_url="https://login.example/token",
        app_scopes=("https://outlook.office365.com/.default",),
        tenant="contoso.example",
    )
}
PASSWORD = "imap-password-that-must-not-leak"
REFRESH = "refresh-token-that-must-not-leak"
ACCESS = "access-token-that-must-not-leak"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


def fields(**overrides: object) -> MailboxFields:
    base = MailboxFields(
        name="sales", host="imap.team.example", username="sales@team.example", address="sales@team.example"
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def raw(session, sql: str) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    return [tuple(row) for row in session.execute(text(sql))]


def test_a_mailbox_password_is_stored_encrypted_and_comes_back_as_a_secret(session, box, make_user):
    owner = make_user("jane@team.example")
    create_mailbox(
        session, fields(owner="Jane@Team.example"), password=PASSWORD, box=box, providers={}, now=NOW
    )
    session.commit()

    [(stored,)] = raw(session, "SELECT password_encrypted FROM mailboxes")
    assert isinstance(stored, str) and PASSWORD not in stored and stored.startswith("gAAAAA")
    [mailbox] = effective_mailboxes(session, (), box=box)
    assert mailbox.password.reveal() == PASSWORD
    assert PASSWORD not in repr(mailbox) and PASSWORD not in repr(session.scalar(select(Mailbox)))
    assert (mailbox.source, mailbox.owner, mailbox.sharing) == (
        MailboxSource.DATABASE,
        owner.email,
        Sharing.SHARED,
    )


def test_the_effective_list_is_the_config_files_then_the_databases_without_paused_ones(session, box):
    config = MailboxSettings(
        name="jane", host="imap.team.example", username="jane", password=Secret("p", "t")
    )
    create_mailbox(session, fields(name="a-shared"), password="x" * 8, box=box, providers={}, now=NOW)
    create_mailbox(
        session,
        fields(
            name="ms",
            host="outlook.office365.com",
            auth=MailboxAuth.OAUTH,
            provider="microsoft",
            sharing=Sharing.PRIVATE,
        ),
        box=box,
        providers=PROVIDERS,
        now=NOW,
    )
    session.commit()
    assert [m.name for m in effective_mailboxes(session, [config], box=box)] == ["jane", "a-shared", "ms"]
    ms = effective_mailboxes(session, [], box=box)[1]
    assert (ms.auth, ms.provider, ms.sharing, ms.password.reveal()) == (
        MailboxAuth.OAUTH,
        "microsoft",
        Sharing.PRIVATE,
        "",
    )

    pause_mailbox(session, "a-shared", now=NOW)
    session.commit()
    assert [m.name for m in effective_mailboxes(session, [config], box=box)] == ["jane", "ms"]
    assert len(effective_mailboxes(session, [config], box=box, include_paused=True)) == 3
    resume_mailbox(session, "a-shared", now=NOW)
    session.commit()
    assert len(effective_mailboxes(session, [config], box=box)) == 3


@pytest.mark.parametrize(
    ("overrides", "password", "message"),
    [
        ({"security": "none"}, "x" * 8, "security: 'none' sends the credentials in clear text"),
        ({}, None, "password: required for auth = 'password'"),
        (
            {"auth": MailboxAuth.OAUTH, "provider": "microsoft"},
            "x" * 8,
            "signs in with a token, not a password",
        ),
        ({"auth": MailboxAuth.OAUTH, "provider": "gmail"}, None, "no OAuth provider 'gmail' in [oauth]"),
        ({"port": 0}, "x" * 8, "port: must be at least 1"),
        ({"owner": "nobody@team.example"}, "x" * 8, "owner 'nobody@team.example' is not a Threadline user"),
    ],
)
def test_a_mailbox_that_could_not_work_is_refused_with_the_field_named(
    session, box, overrides, password, message
):
    with pytest.raises(DomainError) as error:
        create_mailbox(session, fields(**overrides), password=password, box=box, providers=PROVIDERS, now=NOW)
    assert message in str(error.value)
    assert session.scalar(select(Mailbox)) is None


def test_names_are_unique_across_the_config_file_and_the_database(session, box):
    create_mailbox(session, fields(), password="x" * 8, box=box, providers={}, now=NOW)
    with pytest.raises(DomainError, match="already exists"):
        create_mailbox(session, fields(), password="x" * 8, box=box, providers={}, now=NOW)
    with pytest.raises(DomainError, match="already defined in the config file"):
        create_mailbox(
            session,
            fields(name="jane"),
            password="x" * 8,
            box=box,
            providers={},
            config_names={"jane"},
            now=NOW,
        )


def test_without_a_key_a_password_cannot_be_stored(session):
    with pytest.raises(SecretKeyError, match=r"cannot store a mailbox password without an encryption key"):
        create_mailbox(session, fields(), password=PASSWORD, box=None, providers={}, now=NOW)


def test_editing_keeps_the_password_unless_a_new_one_is_given_and_never_renames(session, box):
    create_mailbox(session, fields(), password=PASSWORD, box=box, providers={}, now=NOW)
    current = mailbox_fields(session.scalar(select(Mailbox)))  # type: ignore[arg-type]
    update_mailbox(session, "sales", replace(current, poll_seconds=300), box=box, providers={}, now=NOW)
    [mailbox] = effective_mailboxes(session, (), box=box)
    assert (mailbox.poll_seconds, mailbox.password.reveal()) == (300, PASSWORD)
    update_mailbox(session, "sales", current, password="new-password", box=box, providers={}, now=NOW)
    assert effective_mailboxes(session, (), box=box)[0].password.reveal() == "new-password"
    with pytest.raises(DomainError, match="cannot be renamed"):
        update_mailbox(session, "sales", replace(current, name="other"), box=box, providers={}, now=NOW)


def test_moving_a_mailbox_to_oauth_drops_its_password_and_another_account_drops_its_grant(session, box):
    create_mailbox(session, fields(), password=PASSWORD, box=box, providers={}, now=NOW)
    as_oauth = fields(auth=MailboxAuth.OAUTH, provider="microsoft")
    update_mailbox(session, "sales", as_oauth, box=box, providers=PROVIDERS, now=NOW)
    assert raw(session, "SELECT password_encrypted FROM mailboxes") == [(None,)]
    store_grant(
        session,
        "sales",
        provider="microsoft",
        flow=GrantFlow.DEVICE_CODE,
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=NOW,
        scopes=(),
        box=box,
        now=NOW,
    )
    update_mailbox(
        session,
        "sales",
        replace(as_oauth, username="other@team.example"),
        box=box,
        providers=PROVIDERS,
        now=NOW,
    )
    assert session.scalar(select(OAuthGrant)) is None


def test_removing_a_mailbox_keeps_what_it_logged_and_hands_back_the_token_to_revoke(session, box):
    create_mailbox(
        session, fields(auth=MailboxAuth.OAUTH, provider="microsoft"), box=box, providers=PROVIDERS, now=NOW
    )
    store_grant(
        session,
        "sales",
        provider="microsoft",
        flow=GrantFlow.AUTHORIZATION_CODE,
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=NOW,
        scopes=("imap",),
        box=box,
        now=NOW,
    )
    activity = log_activity(
        session, kind=ActivityKind.NOTE, subject="Logged from sales", occurred_at=NOW, now=NOW
    )
    session.add(EmailSighting(activity=activity, mailbox="sales", folder="INBOX", seen_at=NOW))
    session.commit()

    assert remove_mailbox(session, "sales", box=box, now=NOW) == REFRESH
    session.commit()
    assert effective_mailboxes(session, (), box=box, include_paused=True) == ()
    assert session.scalar(select(OAuthGrant)) is None
    removed = session.scalar(select(Mailbox))
    assert removed is not None and removed.removed_at == NOW and removed.password_encrypted is None
    assert session.scalar(select(Activity.subject)) == "Logged from sales"
    assert session.scalar(select(EmailSighting.mailbox)) == "sales"
    with pytest.raises(NotFoundError):
        remove_mailbox(session, "sales", box=box, now=NOW)


def test_a_grant_keeps_its_tokens_encrypted_and_a_refusal_marks_it(session, box):
    store_grant(
        session,
        "jane",
        provider="microsoft",
        flow=GrantFlow.DEVICE_CODE,
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=NOW + timedelta(hours=1),
        scopes=("a", "b"),
        box=box,
        now=NOW,
    )
    session.commit()
    dump = " ".join(str(v) for row in raw(session, "SELECT * FROM oauth_grants") for v in row)
    assert REFRESH not in dump and ACCESS not in dump
    grant = session.scalar(select(OAuthGrant))
    assert grant is not None
    assert (grant_access_token(grant, box), grant_refresh_token(grant, box)) == (ACCESS, REFRESH)
    assert REFRESH not in repr(grant)

    # a refresh without a new refresh token (Google) keeps the stored one
    update_grant_tokens(
        session, grant, access_token="second", refresh_token=None, expires_at=NOW, box=box, now=NOW
    )
    assert (grant_access_token(grant, box), grant_refresh_token(grant, box)) == ("second", REFRESH)

    later = NOW + timedelta(minutes=5)
    mark_reconnect_needed(session, "jane", reason="invalid_grant: AADSTS70008 expired", now=NOW)
    mark_reconnect_needed(session, "jane", reason="invalid_grant: again", now=later)
    session.commit()
    assert grant.state is GrantState.RECONNECT_NEEDED
    assert grant.reconnect_needed_at == NOW  # the first time is kept
    assert grant.refresh_token_encrypted is None and grant.access_token_encrypted is None

    # connecting again replaces the grant and clears the state
    store_grant(
        session,
        "jane",
        provider="microsoft",
        flow=GrantFlow.AUTHORIZATION_CODE,
        access_token=ACCESS,
        refresh_token="new-refresh",
        expires_at=NOW,
        scopes=(),
        box=box,
        now=later,
    )
    assert (grant.state, grant.reconnect_reason, grant_refresh_token(grant, box)) == (
        GrantState.ACTIVE,
        None,
        "new-refresh",
    )


def test_stored_secrets_need_the_key_that_encrypted_them(session, box):
    check_stored_secrets(session, None)  # nothing stored: no key needed
    store_grant(
        session,
        "jane",
        provider="microsoft",
        flow=GrantFlow.DEVICE_CODE,
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=NOW,
        scopes=(),
        box=box,
        now=NOW,
    )
    session.commit()
    check_stored_secrets(session, box)
    with pytest.raises(SecretKeyError, match=r"holds 2 encrypted secrets .* no encryption key is configured"):
        check_stored_secrets(session, None)
    with pytest.raises(SecretKeyError, match="cannot be decrypted with the configured key"):
        check_stored_secrets(session, SecretBox([generate_key()]))


def test_rotation_re_encrypts_everything_with_the_new_key(session, box):
    old_key, new_key = generate_key(), generate_key()
    old = SecretBox([old_key])
    create_mailbox(session, fields(), password=PASSWORD, box=old, providers={}, now=NOW)
    store_grant(
        session,
        "jane",
        provider="microsoft",
        flow=GrantFlow.DEVICE_CODE,
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=NOW,
        scopes=(),
        box=old,
        now=NOW,
    )
    session.commit()
    assert rotate_stored_secrets(session, SecretBox([new_key, old_key])) == 3
    session.commit()
    only_new = SecretBox([new_key])
    check_stored_secrets(session, only_new)
    assert effective_mailboxes(session, (), box=only_new)[0].password.reveal() == PASSWORD
    with pytest.raises(SecretKeyError):
        check_stored_secrets(session, old)
    assert repr(only_new) == "SecretBox(1 key)"
