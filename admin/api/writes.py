"""What every write of the API shares: one transaction per request, committed when the view succeeded, and
`Idempotency-Key` on POST.

A POST carrying `Idempotency-Key` stores its answer (status, body, Location) under that key for the calling
API key, in the same transaction as the write itself, so the write and its record commit together or not at
all. The same key again answers the stored response (with `Idempotent-Replayed: true`) and writes nothing;
the same key with another body is refused (422 naming the header). Two requests racing with one key: the
second's commit fails on the unique (api key, key) pair, it rolls back and replays the first's answer.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from flask import Response, g, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from admin.api.problems import ApiProblem
from admin.context import db, now
from models.schema import IdempotentRequest

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
IDEMPOTENCY_DOC = {
    "parameters": [
        {
            "in": "header",
            "name": HEADER,
            "required": False,
            "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH},
            "description": "a unique string per intended write: a retried request with the same key is "
            "answered with the first answer and writes nothing",
        }
    ]
}


def _fingerprint() -> str:
    return hashlib.sha256(
        request.method.encode() + request.path.encode() + b"\0" + request.get_data()
    ).hexdigest()


def _replay(stored: IdempotentRequest) -> Response:
    if stored.fingerprint != _fingerprint():
        raise ApiProblem(
            422, "This Idempotency-Key was used for another request.", field=HEADER, where="header"
        )
    response = Response(stored.body, status=stored.status_code, mimetype="application/json")
    if stored.location:
        response.headers["Location"] = stored.location
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _stored(key: str) -> IdempotentRequest | None:
    return db().scalar(
        select(IdempotentRequest).where(
            IdempotentRequest.api_key_id == g.api_key_id, IdempotentRequest.key == key
        )
    )


def committed(view: Callable[..., Any]) -> Callable[..., Any]:
    """Commit the view's writes when it answered 2xx (an error rolls back: admin.api.problem_for); on POST,
    honour Idempotency-Key. Put it above flask-smorest's decorators (it wraps the finished response)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER, "").strip() if request.method == "POST" else ""
        if len(key) > MAX_KEY_LENGTH:
            raise ApiProblem(422, f"At most {MAX_KEY_LENGTH} characters.", field=HEADER, where="header")
        session = db()
        if key:
            stored = _stored(key)
            if stored is not None:
                return _replay(stored)
        response = view(*args, **kwargs)
        if not isinstance(response, Response) or response.status_code >= 400:
            return response
        if key:
            session.add(
                IdempotentRequest(
                    api_key_id=g.api_key_id, key=key, fingerprint=_fingerprint(),
                    status_code=response.status_code, body=response.get_data(as_text=True),
                    location=response.headers.get("Location"), created_at=now(),
                )
            )  # fmt: skip
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            stored = _stored(key) if key else None
            if stored is None:
                raise ApiProblem(
                    409, "Another request changed the same record at the same moment: retry."
                ) from None
            return _replay(stored)
        return response

    return wrapper
