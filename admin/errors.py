"""Error pages inside the panel's layout (one sentence and a way back), and the favicon.

Every HTTP error from the panel's own views, from Flask-Admin's views (their `abort(403)`, `abort(404)`) and
from Flask itself (unknown address, wrong method, refused CSRF token, server error) is answered here: as the
panel's page for a browser, as `{"ok": false, "error": ...}` for a script that asked for JSON. If the layout
itself cannot be drawn (the database is down), a bare page with the same sentence and link is sent instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_from_directory, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from admin.api.problems import API_PREFIX, from_http_exception
from admin.context import state_of

log = logging.getLogger("threadline.admin")

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class ErrorText:
    title: str
    sentence: str


ERRORS = {
    400: ErrorText("Bad request", "The page sent something the panel could not use: go back and try again."),
    403: ErrorText("Not allowed", "Your role does not let you open or change this."),
    404: ErrorText("Not found", "There is nothing at this address: the record may have been deleted."),
    405: ErrorText("Not allowed", "This address does not take that kind of request."),
    413: ErrorText("Too large", "What was sent is larger than the panel accepts."),
    500: ErrorText(
        "Something went wrong", "The panel hit an error and logged it; this request changed nothing."
    ),
}
CSRF_SENTENCE = (
    "The form had expired or came from elsewhere, so it was refused: reload the page and try again."
)


def _text_for(error: HTTPException) -> ErrorText:
    code = error.code or 500
    if isinstance(error, CSRFError):
        return ErrorText("Refused", CSRF_SENTENCE)
    return ERRORS.get(code) or ErrorText(error.name, error.description or error.name)


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return request.is_json or best == "application/json"


def _roll_back(app: Flask) -> None:
    try:
        state_of(app).db_session.rollback()
    except Exception:  # a lost connection: the error page is drawn without the database
        log.exception("could not roll back the failed request's session")


def init_errors(app: Flask, index_view: Any) -> None:
    """Answer HTTP errors with the panel's error page, drawn by `index_view` (which provides the layout)."""

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> BaseResponse | HTTPException | tuple[Any, int]:
        code = error.code or 500
        if code < 400:
            return error  # redirects are not errors
        if request.path.startswith(API_PREFIX):  # e.g. an unknown address under /api/v1: no blueprint's
            return from_http_exception(error)
        if code >= 500:
            # whatever the failed request had written is dropped before the page reads anything
            _roll_back(app)
            original = getattr(error, "original_exception", None)
            if original is not None:
                log.error("unhandled error on %s %s", request.method, request.path, exc_info=original)
        text = _text_for(error)
        if _wants_json():
            return jsonify({"ok": False, "error": text.sentence}), code
        logged_in = bool(current_user.is_authenticated)
        back_url = url_for("admin.index") if logged_in else url_for("login")
        back_label = "Back to the dashboard" if logged_in else "Log in"
        try:
            page = index_view.render(
                "threadline/error.html",
                status=code,
                title=text.title,
                sentence=text.sentence,
                back_url=back_url,
                back_label=back_label,
            )
        except Exception:  # the layout needs the database; the error page must not fail with it
            log.exception("could not draw the error page inside the layout")
            _roll_back(app)
            page = (
                f"<!DOCTYPE html><title>{escape(text.title)} - Threadline</title>"
                f"<h1>{escape(text.title)}</h1><p>{escape(text.sentence)}</p>"
                f'<p><a href="{escape(back_url)}">{escape(back_label)}</a></p>'
            )
        response = Response(page, status=code, mimetype="text/html")
        for name, value in error.get_headers():  # e.g. Allow on 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.route("/favicon.ico")
    def favicon() -> BaseResponse:
        return send_from_directory(
            STATIC_DIR, "favicon.ico", mimetype="image/vnd.microsoft.icon", max_age=86400
        )
