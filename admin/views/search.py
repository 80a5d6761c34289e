"""Search everywhere (models.search): the header's box answers as people type (JSON for static/search.js)
and, without JavaScript or on Enter, with a results page grouped by contacts, companies and deals."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from admin.context import db
from admin.views.base import GuardedView, expose
from models.search import Hit, Results, search

PAGE_LIMIT = 25
SUGGEST_LIMIT = 5
RECORD_PAGES = {"contact": "records.contact", "company": "records.company", "deal": "records.deal"}


def hit_url(hit: Hit) -> str:
    return url_for(RECORD_PAGES[hit.kind], record_id=hit.record_id)


def as_json(results: Results) -> dict[str, Any]:
    return {
        "query": results.query,
        "groups": [
            {
                "label": label,
                "hits": [{"label": h.label, "detail": h.detail, "url": hit_url(h)} for h in hits],
            }
            for label, hits in results.groups
            if hits
        ],
        "all": url_for("search.index", q=results.query),
    }


class SearchView(GuardedView):
    def is_visible(self) -> bool:
        return False

    @expose("/")
    def index(self) -> str:
        query = request.args.get("q", "")
        results = search(db(), query, limit=PAGE_LIMIT)
        return self.page("threadline/search.html", results=results, hit_url=hit_url)

    @expose("/suggest")
    def suggest(self) -> BaseResponse:
        results = search(db(), request.args.get("q", ""), limit=SUGGEST_LIMIT)
        response = jsonify(as_json(results))
        response.headers["Cache-Control"] = "no-store"
        return response
