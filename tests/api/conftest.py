"""Fixtures for the REST API's tests: the panel's app (tests/admin/conftest.py) and clients holding a key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from models.apikeys import create_api_key
from models.schema import User
from tests.admin.conftest import app, csrf_from, fresh, log_in, login, make_email, settings_for  # noqa: F401
from tests.fixtures.factories import NOW
from tests.fixtures.receiver import receiver  # noqa: F401 (fixture)


@dataclass
class ApiClient:
    """A test client that sends an API key with every request."""

    client: FlaskClient
    token: str
    user: User

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.get(url, headers=self._headers(headers), **kwargs)

    def post(self, url: str, json: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.post(url, json=json, headers=self._headers(headers), **kwargs)

    def patch(self, url: str, json: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.patch(url, json=json, headers=self._headers(headers), **kwargs)

    def delete(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.delete(url, headers=self._headers(headers), **kwargs)


@pytest.fixture
def api_client(app: Flask, session: Session) -> Callable[[User], ApiClient]:  # noqa: F811
    def make(user: User) -> ApiClient:
        made = create_api_key(session, user, name="tests", now=NOW)
        session.commit()
        return ApiClient(app.test_client(), made.token, user)

    return make


def problem(response: Any) -> dict[str, Any]:
    """The problem details of an error response (RFC 9457), checked for shape."""
    assert response.headers["Content-Type"] == "application/problem+json", response.text[:300]
    body = response.get_json(force=True)
    assert body["status"] == response.status_code
    assert body["title"] and body["detail"]
    return dict(body)


def fields_of(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}
