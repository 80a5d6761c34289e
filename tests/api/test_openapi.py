"""The API's contract: a generated OpenAPI 3.1 document that validates and names every route, and a docs page
served from the panel's own files."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from models.schema import Role


def test_the_openapi_document_is_valid_3_1_and_lists_every_api_route(app):
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on an invalid document
    documented = {
        (method.upper(), re.sub(r"{(\w+)}", r"<\1>", path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    routed = {
        (method, re.sub(r"<(?:int:)?(\w+)>", r"<\1>", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        and rule.endpoint.split(".")[0] != "api-docs"
        and rule.endpoint != "api_docs"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routed, "no API routes found"
    assert routed <= documented, routed - documented
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_the_docs_page_loads_swagger_ui_from_the_panel_only(app, login, make_user):
    assert app.test_client().get("/api/v1/docs").status_code == 302  # logged out: to the login page
    page = login(make_user(role=Role.REP)).get("/api/v1/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert all(s.startswith("/") for s in sources), sources
    script = next(s for s in sources if s.endswith("swagger-ui-bundle.js"))
    asset = app.test_client().get(script)
    assert asset.status_code == 200 and b"SwaggerUIBundle" in asset.get_data()
    asset.close()
    assert 'data-openapi-url="/api/v1/openapi.json"' in page.text
