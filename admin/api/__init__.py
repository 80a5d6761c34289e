"""The REST API under /api/v1: flask-smorest blueprints in the panel's own Flask app.

flask-smorest (marshmallow schemas, apispec) generates the OpenAPI 3.1 document from the code at
/api/v1/openapi.json; /api/v1/docs shows it with Swagger UI served from the panel's own static files (no
CDN). Every blueprint here authenticates with an API key (admin.api.auth) before its views run, answers
errors as problem details (admin.api.problems), and is exempt from the panel's CSRF check because it reads
no cookie. flask-smorest's own app-wide error handler is not installed: the panel keeps its error pages.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, render_template, url_for
from flask_login import current_user
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from admin.api import activities, contacts, deals, webhooks
from admin.api.auth import RateLimiter, authenticate
from admin.api.problems import ApiProblem, ProblemSchema, from_http_exception
from admin.auth import login_redirect
from admin.context import state_of
from models.errors import DomainError, NotFoundError
from settings import ApiSettings

log = logging.getLogger("threadline.api")

BLUEPRINTS = (
    contacts.contacts,
    contacts.companies,
    deals.deals,
    deals.pipelines,
    deals.users,
    activities.activities,
    activities.tasks,
    webhooks.webhooks,
)
PUBLIC_BLUEPRINTS: tuple[Any, ...] = ()
LIMITER_EXTENSION = "threadline_api_limiter"


class ThreadlineApi(Api):  # type: ignore[misc]
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        """The panel answers its own errors; the API's blueprints answer theirs (see init_api)."""


def _roll_back(app: Flask) -> None:
    try:
        state_of(app).db_session.rollback()
    except Exception:
        log.exception("could not roll back the failed request's session")


def problem_for(app: Flask, error: Exception) -> Response:
    """Any error of an API request as a problem (500s are logged and roll the request back)."""
    if isinstance(error, ApiProblem):
        if error.status >= 500:
            _roll_back(app)
        return error.response()
    if isinstance(error, NotFoundError):
        _roll_back(app)
        return ApiProblem(404, str(error)).response()
    if isinstance(error, DomainError):
        _roll_back(app)
        return ApiProblem(422, str(error)).response()
    if isinstance(error, HTTPException):
        if (error.code or 500) >= 500:
            _roll_back(app)
            original = getattr(error, "original_exception", None)
            if original is not None:
                log.error("unhandled API error", exc_info=original)
        return from_http_exception(error)
    _roll_back(app)
    log.error("unhandled API error", exc_info=error)
    return from_http_exception(HTTPException(response=None))


def _authenticate() -> None:
    authenticate(current_app.extensions[LIMITER_EXTENSION])


def _problem(error: Exception) -> Response:
    return problem_for(current_app, error)


# Blueprints are module-level objects shared by every app made (tests make many): their hooks are added once,
# here, and find the app's own limiter through current_app.
for _blueprint in (*BLUEPRINTS, *PUBLIC_BLUEPRINTS):
    if _blueprint in BLUEPRINTS:
        _blueprint.before_request(_authenticate)
    _blueprint.register_error_handler(Exception, _problem)


def init_api(app: Flask, settings: ApiSettings) -> Api:
    app.config.update(
        API_TITLE="Threadline",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = ThreadlineApi(
        app,
        spec_kwargs={
            "info": {
                "description": "The Threadline CRM: contacts, companies, deals, activities, tasks, webhooks. "
                "Authenticate with an API key: `Authorization: Bearer tl_...`. Errors are RFC 9457 "
                "problem details. Lists are cursor-paginated, newest first."
            },
            "servers": [{"url": "/"}],
            "security": [{"ApiKey": []}],
        },
    )
    api.spec.components.security_scheme(
        "ApiKey", {"type": "http", "scheme": "bearer", "description": "an API key, tl_..."}
    )
    app.extensions[LIMITER_EXTENSION] = RateLimiter(settings.requests_per_minute)
    csrf = app.extensions["csrf"]
    for blueprint in (*BLUEPRINTS, *PUBLIC_BLUEPRINTS):
        api.register_blueprint(blueprint)
        csrf.exempt(blueprint)

    @app.after_request
    def _rate_limit_headers(response: BaseResponse) -> BaseResponse:
        for name, value in g.get("rate_limit_headers", {}).items():
            response.headers.setdefault(name, value)
        return response

    @app.route("/api/v1/docs")
    def api_docs() -> BaseResponse | str:
        if not current_user.is_authenticated:
            return login_redirect()
        return render_template("threadline/api/docs.html", openapi_url=url_for("api-docs.openapi_json"))

    return api
