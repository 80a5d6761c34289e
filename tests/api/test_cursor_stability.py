"""Cursor pages stay whole while other connections insert: on PostgreSQL, a writer thread adds contacts
between every page a client reads; every contact that existed when paging began is seen exactly once."""

from __future__ import annotations

import threading

import pytest

from models.contacts import create_contact
from models.schema import Role
from tests.fixtures.factories import NOW


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_pages_neither_repeat_nor_skip_rows_under_concurrent_inserts(db, make_user, api_client, order):
    api = api_client(make_user(role=Role.ADMIN))
    with db.sessions() as session:
        for n in range(60):
            create_contact(session, name=f"Before {n}", now=NOW, emails=[f"before{n}@x.example"])
        session.commit()
    existing = {row["id"] for row in api.get("/api/v1/contacts?limit=200").get_json()["data"]}
    assert len(existing) == 60

    stop = threading.Event()
    inserted: list[int] = []
    page_read = threading.Semaphore(0)

    def writer() -> None:
        n = 0
        while not stop.is_set():
            if not page_read.acquire(timeout=0.1):
                continue
            with db.sessions() as session:  # each page is followed by new rows committed elsewhere
                for _ in range(7):
                    inserted.append(
                        create_contact(
                            session, name=f"During {n}", now=NOW, emails=[f"during{n}@x.example"]
                        ).id
                    )
                    n += 1
                session.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    cursor = None
    try:
        while True:
            query = {"limit": 9, "order": order, **({"cursor": cursor} if cursor else {})}
            page = api.get("/api/v1/contacts", query_string=query).get_json()
            seen += [row["id"] for row in page["data"]]
            page_read.release()
            cursor = page["next_cursor"]
            if cursor is None or len(seen) > 500:
                break
    finally:
        stop.set()
        thread.join()
    assert inserted, "the writer inserted nothing"
    assert len(seen) == len(set(seen)), "a row was shown twice"
    assert existing <= set(seen), f"rows skipped: {sorted(existing - set(seen))}"
    if order == "newest":
        assert not set(seen) & set(inserted), (
            "newest first: rows made after the first page come first, not later"
        )
