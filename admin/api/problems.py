"""Errors of the REST API as RFC 9457 problem details (`application/problem+json`).

Every error under /api/v1 is one JSON object with `type`, `title`, `status` and `detail`; an error about
what the client sent also has `errors`, one entry per wrong field with its name (`field`), where it was
(`in`: query, body, header or path), a JSON pointer into the request (`pointer`) and what is wrong
(`detail`). Nothing in a problem repeats a secret the client sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from flask import Response
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger("threadline.api")

PROBLEM_TYPE = "application/problem+json"
API_PREFIX = "/api/"

# webargs' locations -> the words a client knows
_LOCATIONS = {
    "json": "body",
    "query": "query",
    "querystring": "query",
    "headers": "header",
    "view_args": "path",
}


class ApiProblem(Exception):
    """Raised anywhere in a request to answer with a problem; `field` names the part of the request at
    fault."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        where: str = "body",
        headers: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.where = where
        self.headers = dict(headers or {})
        self.title = title

    def response(self) -> Response:
        errors = [field_error(self.field, self.where, self.detail)] if self.field else None
        return problem_response(
            self.status, self.detail, errors=errors, headers=self.headers, title=self.title
        )


class ProblemSchema(ma.Schema):
    """The body of every error (documentation of the OpenAPI document)."""

    type = ma.fields.String(metadata={"example": "about:blank"})
    title = ma.fields.String(metadata={"example": "Unprocessable Content"})
    status = ma.fields.Integer(metadata={"example": 422})
    detail = ma.fields.String(metadata={"example": "email: Not a valid email address."})
    errors = ma.fields.List(
        ma.fields.Dict(),
        metadata={
            "description": "one entry per wrong field: field, in (query, body, header, path), pointer, detail"
        },
    )


def field_error(field: str, where: str, detail: str) -> dict[str, str]:
    return {"field": field, "in": where, "pointer": "#/" + field.replace(".", "/"), "detail": detail}


def problem_response(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested messages -> (dotted field, sentence) pairs."""
    if isinstance(messages, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            pairs.extend(_flatten(value, "" if key == "_schema" and not prefix else name))
        return pairs
    if isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            return [(prefix, " ".join(messages))]
        pairs = []
        for item in messages:
            pairs.extend(_flatten(item, prefix))
        return pairs
    return [(prefix, str(messages))]


def from_http_exception(error: HTTPException) -> Response:
    """A werkzeug/webargs error as a problem; webargs' validation messages become field errors."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages") if isinstance(data, Mapping) else None
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type", "content-length")}
    if messages:
        errors = []
        for location, fields in messages.items():
            where = _LOCATIONS.get(location, location)
            for name, sentence in _flatten(fields):
                errors.append(field_error(name or "(request)", where, sentence))
        detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
        return problem_response(status, detail, errors=errors, headers=headers)
    sentences = {
        401: "Send an API key: Authorization: Bearer tl_...",
        404: "There is nothing at this address.",
        405: "This address does not take that method.",
        413: "The request body is larger than the API accepts.",
        415: "Send the body as application/json.",
        500: "The server hit an error and logged it; this request changed nothing.",
    }
    detail = sentences.get(status) or error.description or error.name
    return problem_response(status, detail, headers=headers)
