"""`threadline api-key create|list|revoke`: the secret printed once, never listed, revocation."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from models.schema import ApiKey


def test_api_key_create_list_and_revoke(cli, db, make_user):
    make_user("jane@team.example")
    created = cli("api-key", "create", "jane@team.example", "--name", "Zapier")
    assert created.code == 0, created.err
    token = created.out.strip().splitlines()[-1]
    assert token.startswith("tl_") and len(token) > 40
    with db.sessions() as session:
        key = session.scalars(select(ApiKey)).one()
        assert key.token_hash == hashlib.sha256(token.encode()).hexdigest()
    listed = cli("api-key", "list")
    assert listed.code == 0 and "Zapier" in listed.out and "jane@team.example" in listed.out
    assert token not in listed.out and "active" in listed.out
    revoked = cli("api-key", "revoke", str(key.id))
    assert revoked.code == 0 and "revoked" in revoked.out
    assert "revoked" in cli("api-key", "list").out


def test_api_key_create_for_an_unknown_user_says_so(cli, db):
    result = cli("api-key", "create", "nobody@team.example", "--name", "x")
    assert result.code == 1 and "no user nobody@team.example" in result.err
    assert cli("api-key", "revoke", "99").code == 1
