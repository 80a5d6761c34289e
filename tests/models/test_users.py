"""Staff names: one rule for creating and renaming, so no name carries a line break into a digest's header."""

from __future__ import annotations

import re

import pytest

from models.errors import DomainError
from models.users import MAX_NAME_LENGTH, create_user, normalize_user_name, update_user


def test_names_are_trimmed_and_fall_back_to_the_address():
    assert normalize_user_name("  Ann Owner ", email="ann@team.example") == "Ann Owner"
    assert normalize_user_name("Zoë Ünal-Ñúñez", email="zoe@team.example") == "Zoë Ünal-Ñúñez"
    assert normalize_user_name("   ", email="ann@team.example") == "ann@team.example"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Ann\nBcc: evil@attacker.example", "a line break"),
        ("Ann\rOwner", "a line break"),
        ("Ann\u2028Owner", "a line break"),
        ("Ann\x85Owner", "a line break"),
        ("Ann\tOwner", "the control character '\\t'"),
        ("Ann\x00Owner", "the control character '\\x00'"),
        ("x" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH} characters"),
    ],
)
def test_line_breaks_control_characters_and_overlong_names_are_refused(name, message):
    with pytest.raises(DomainError, match=re.escape(message)):
        normalize_user_name(name, email="ann@team.example")


def rename(session, user, name):
    update_user(
        session,
        user,
        email=user.email,
        name=name,
        role=user.role,
        active=user.active,
        alerts_enabled=user.alerts_enabled,
    )


def test_create_and_update_apply_the_same_rule(session, now):
    user = create_user(session, "ann@team.example", name="Ann", role="rep", password="long enough", now=now)
    with pytest.raises(DomainError, match="line break"):
        create_user(
            session, "bob@team.example", name="Bob\r\nBcc: x@y", role="rep", password="long enough", now=now
        )
    with pytest.raises(DomainError, match="line break"):
        rename(session, user, "Ann\nBcc: evil@attacker.example")
    assert user.name == "Ann"
    rename(session, user, " Ann Owner ")
    session.commit()
    session.expire_all()
    assert user.name == "Ann Owner"
