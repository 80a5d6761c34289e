"""Benchmark of the REST API and webhook delivery.

1. Listing contacts with a filter at 100,000 contacts (bench/seed.py, no activities), through the real Flask
   app's test client with an API key: by owner, by email, by domain, a `q` search, the second page of an
   owner's list (cursor), and the unfiltered first page. Median and 95th percentile of `--repeat` requests
   after a warm-up, with the ratio to the issue's floor (p50 <= 50 ms; below 1.0 meets it).
2. Webhook delivery to a local receiver: `--events` events for one subscription, delivered by the daemon's
   sender (daemon.webhooks.WebhookSender, `[api] webhook_workers` threads) to a threaded HTTP server on
   loopback that checks nothing and answers 204; events per second against the floor (>= 200/s; above 1.0
   meets it).

PostgreSQL comes from $THREADLINE_TEST_PG_URL (a database is created and dropped here); SQLite is a temp file.

    .venv/bin/python -m bench.api                     # both databases, full size
    .venv/bin/python -m bench.api --db sqlite --scale 0.1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from admin.app import create_app
from bench.seed import seed
from daemon.webhooks import WebhookSender
from models import migrate
from models.apikeys import create_api_key
from models.db import make_engine, make_sessionmaker, transaction
from models.schema import ContactEmail, User
from models.secrets import SecretBox, generate_key
from models.webhooks import enqueue, subscribe
from settings import AdminSettings, ApiSettings, DatabaseSettings, Secret, Settings

LIST_FLOOR_MS = 50.0
DELIVERY_FLOOR = 200.0
PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def bench_lists(url: str, contacts: int, repeat: int) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    seeded = seed(engine, contacts=contacts, deals=0, activities=0, busy_activities=0)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        owner = session.get(User, seeded.rep_ids[0])
        assert owner is not None
        token = create_api_key(session, owner, name="bench", now=datetime.now(UTC)).token
        email = session.scalars(select(ContactEmail.email).order_by(ContactEmail.id.desc()).limit(1)).one()
    settings = Settings(
        source="bench",
        database=DatabaseSettings(url=url),
        admin=AdminSettings(secret_key=Secret("b" * 48, "bench")),
        api=ApiSettings(requests_per_minute=1_000_000),
    )
    client = create_app(settings, sessions).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    first = client.get("/api/v1/contacts", query_string={"owner": "me", "limit": 50}, headers=headers)
    cursor = first.get_json()["next_cursor"]
    cases = {
        "owner=me": {"owner": "me"},
        "owner=me, page 2": {"owner": "me", "cursor": cursor},
        "email=": {"email": email},
        "domain=": {"domain": email.split("@", 1)[1]},
        "q=": {"q": email.split("@", 1)[0][:6]},
        "no filter": {},
    }
    print(f"  {'request':<22} {'p50 ms':>8} {'p95 ms':>8} {'p50/floor':>10} {'cpu p50':>8} {'rows':>5}")
    for name, query in cases.items():
        times, cpu = [], []
        rows = 0
        for i in range(repeat + 1):
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get("/api/v1/contacts", query_string={"limit": 50, **query}, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            used = (time.process_time() - started_cpu) * 1000
            assert response.status_code == 200, response.text
            rows = len(response.get_json()["data"])
            if i:
                times.append(elapsed)
                cpu.append(used)
        p50 = statistics.median(times)
        print(
            f"  {name:<22} {p50:8.1f} {percentile(times, 0.95):8.1f} {p50 / LIST_FLOOR_MS:10.2f} "
            f"{statistics.median(cpu):8.1f} {rows:5d}"
        )
    engine.dispose()


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers behind a proxy do

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def bench_delivery(url: str, events: int, workers: int) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    box = SecretBox([generate_key()])
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        subscribe(
            session, target_url=f"http://127.0.0.1:{server.server_port}/hook", events=["deal.created"],
            box=box, now=now,
        )  # fmt: skip
        payload = {"id": 1, "title": "Benchmark deal", "value": "1000.00", "currency": "EUR", "stage": "Demo"}
        for n in range(events):
            enqueue(session, "deal.created", {**payload, "id": n}, now=now)
    sender = WebhookSender(
        sessions, ApiSettings(webhook_workers=workers), box, now_fn=lambda: datetime.now(UTC)
    )
    started = time.perf_counter()
    sender.run_until_idle()
    seconds = time.perf_counter() - started
    sender.close()
    server.shutdown()
    with engine.connect() as conn:
        delivered = conn.scalar(
            text("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL")
        )
    rate = (delivered or 0) / seconds
    print(
        f"  {delivered} of {events} events delivered in {seconds:.2f} s with {workers} workers: "
        f"{rate:.0f} events/s, {rate / DELIVERY_FLOOR:.2f} x the floor of {DELIVERY_FLOOR:.0f}/s"
    )
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 100,000 contacts")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=ApiSettings.webhook_workers)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    contacts = int(100_000 * args.scale)
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    for kind in kinds:
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                print(f"SQLite, contacts list at {contacts:,} contacts:")
                bench_lists(f"sqlite:///{Path(tmp) / 'lists.db'}", contacts, args.repeat)
                print("SQLite, webhook delivery:")
                bench_delivery(f"sqlite:///{Path(tmp) / 'hooks.db'}", args.events, args.workers)
            continue
        admin = create_engine(make_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
        names = [f"threadline_bench_api_{uuid.uuid4().hex[:8]}" for _ in range(2)]
        try:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            urls = [
                make_url(PG_ADMIN_URL).set(database=n).render_as_string(hide_password=False) for n in names
            ]
            print(f"PostgreSQL, contacts list at {contacts:,} contacts:")
            bench_lists(urls[0], contacts, args.repeat)
            print("PostgreSQL, webhook delivery:")
            bench_delivery(urls[1], args.events, args.workers)
        finally:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
