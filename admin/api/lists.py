"""What every list of the API shares: the query arguments, cursor pagination and the owner filter.

Pages are cut by keyset on the record's id (ids only grow), newest first by default: the cursor holds the
last id shown and the order, so rows inserted while a client pages through appear at the start (or, for
`order=oldest`, at the end) and never shift, repeat or hide the rows of the pages still to come.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import marshmallow as ma
from marshmallow import fields, validate
from sqlalchemy import Select, func, or_
from sqlalchemy.orm import InstrumentedAttribute

from admin.api.auth import api_user
from admin.api.problems import ApiProblem
from admin.context import db
from models.schema import Role, User

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class ListArgs(ma.Schema):
    class Meta:
        unknown = ma.RAISE  # a misspelt filter is an error, not a silently unfiltered list

    cursor = fields.String(metadata={"description": "next_cursor of the previous page"})
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))
    order = fields.String(load_default="newest", validate=validate.OneOf(["newest", "oldest"]))
    q = fields.String(validate=validate.Length(1, 200), metadata={"description": "search words"})
    updated_since = fields.AwareDateTime(
        metadata={"description": "only records changed at or after this time (ISO 8601 with offset)"}
    )
    owner = fields.String(metadata={"description": "user id, user email, or `me`"})


def page_schema(item: type[ma.Schema]) -> type[ma.Schema]:
    """The schema of one page of `item`s: {"data": [...], "next_cursor": "..." or null}."""
    name = item.__name__.removesuffix("Out") + "Page"
    attrs: dict[str, Any] = {
        "data": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(
            allow_none=True, required=True, metadata={"description": "null on the last page"}
        ),
    }
    return type(name, (ma.Schema,), attrs)


def _encode(order: str, last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{order[0]}:{last_id}".encode()).decode().rstrip("=")


def _decode(cursor: str, order: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        last_id = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiProblem(
            422, "This cursor is not one the API gave out.", field="cursor", where="query"
        ) from None
    if kind != order[0]:
        raise ApiProblem(
            422, "This cursor belongs to a list in the other order.", field="cursor", where="query"
        )
    return last_id


def paginate(
    query: Select[Any], id_column: InstrumentedAttribute[int], args: dict[str, Any]
) -> dict[str, Any]:
    """One page of the query's rows after the cursor, and the cursor of the next page."""
    order: str = args["order"]
    limit: int = args["limit"]
    newest = order == "newest"
    if args.get("cursor"):
        last_id = _decode(args["cursor"], order)
        query = query.where(id_column < last_id if newest else id_column > last_id)
    query = query.order_by(id_column.desc() if newest else id_column.asc()).limit(limit + 1)
    rows = list(db().scalars(query).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return {"data": rows, "next_cursor": _encode(order, rows[-1].id) if more and rows else None}


def record_or_404(model: type[T], record_id: int) -> T:
    """The record with this id, or a 404 problem naming what is missing."""
    record = db().get(model, record_id)
    if record is None:
        raise ApiProblem(404, f"{model.__name__} {record_id} does not exist.")
    return record


def resolve_user(value: str, *, field: str = "owner", where: str = "query") -> User:
    """A user named by id, email or `me` (the key's user); 422 naming the field otherwise."""
    text = value.strip()
    if text.lower() == "me":
        return api_user()
    user: User | None
    if text.isdigit():
        user = db().get(User, int(text))
    else:
        user = db().query(User).filter(func.lower(User.email) == text.lower()).one_or_none()
    if user is None:
        raise ApiProblem(
            422, f"No user {text!r}: give a user id, an email or `me`.", field=field, where=where
        )
    return user


def since(query: Select[Any], column: Any, args: dict[str, Any]) -> Select[Any]:
    when = args.get("updated_since")
    return query.where(column >= when) if when is not None else query


def words(column: Any, *more: Any, q: str) -> Any:
    """A case-insensitive substring match of `q` on any of the columns."""
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return or_(*(c.ilike(pattern, escape="\\") for c in (column, *more)))


def owner_for_write(value: str | None, *, current: Any = None) -> User | None:
    """The owner a write asks for: the key's user by default on a new record; anyone else only for a manager
    or an admin (a rep gives records to no one else: the panel's rule)."""
    user = api_user()
    if value is None:
        return user if current is None else None
    owner = resolve_user(value, field="owner", where="body")
    if owner.id != user.id and user.role not in (Role.ADMIN, Role.MANAGER):
        raise ApiProblem(403, "A rep can only make themselves the owner.", field="owner", where="body")
    return owner
