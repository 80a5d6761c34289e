"""`threadline demo`: a realistic, deterministic demo dataset for trying Threadline out.

Owns the demo content: three staff accounts with known passwords, ~50 companies, ~200 contacts, ~60 deals
spread over the default pipeline (some stalled, some won, some lost with reasons, each moved stage by stage
through move_deal_to_stage so the history reads true), a few hundred activities over the last 90 days
(emails in both directions seen on a demo mailbox, calls, meetings, notes), tasks (some overdue), a few new
leads nobody has answered yet, and the demo mailbox's sync status. The same seed and `now` give the same
data; everything is written in one transaction.

Then it runs the alert scan once at `now` (deciding, not sending: the demo's addresses are not real), the
same scan the daemon runs on its schedule, so the panel shows notifications from the first login instead of
after the next scheduled scan.
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from daemon.alerts import run_scan
from models.activities import complete_task, create_task, log_activity, touch
from models.contacts import ensure_company_for_domain
from models.db import transaction
from models.deals import create_deal, default_pipeline, find_pipeline, move_deal_to_stage
from models.errors import DomainError
from models.schema import (
    Activity,
    ActivityKind,
    Company,
    Contact,
    ContactEmail,
    Deal,
    Direction,
    EmailSighting,
    FolderSyncState,
    MailboxStatus,
    Pipeline,
    Role,
    Stage,
    StageKind,
    User,
)
from models.users import create_user, find_user
from settings import Settings

DEMO_DOMAIN = "threadline.demo"
DEMO_MAILBOX = "demo"
DEFAULT_SEED = 20261123


@dataclass(frozen=True)
class DemoLogin:
    role: Role
    name: str
    local_part: str
    password: str


DEMO_LOGINS = (
    DemoLogin(Role.ADMIN, "Alex Morgan", "alex", "threadline-admin"),
    DemoLogin(Role.MANAGER, "Maya Chen", "maya", "threadline-manager"),
    DemoLogin(Role.REP, "Sam Rivera", "sam", "threadline-rep"),
)

_COMPANY_WORDS = (
    "Northwind",
    "Bluepeak",
    "Ironbridge",
    "Silverline",
    "Greenfield",
    "Redwood",
    "Brightwater",
    "Stonegate",
    "Clearpath",
    "Evergreen",
    "Highland",
    "Lakeside",
    "Oakridge",
    "Pinecrest",
    "Riverside",
    "Summit",
    "Sunrise",
    "Westbrook",
    "Harbor",
    "Crescent",
    "Falcon",
    "Keystone",
    "Meridian",
    "Orion",
    "Quartz",
    "Beacon",
    "Cobalt",
)
_COMPANY_KINDS = (
    "Logistics",
    "Analytics",
    "Robotics",
    "Foods",
    "Health",
    "Energy",
    "Software",
    "Labs",
    "Capital",
    "Studios",
    "Manufacturing",
    "Systems",
    "Retail",
    "Media",
)
_TLDS = (".com", ".com", ".com", ".io", ".co", ".de", ".co.uk", ".fr")
_FIRST = (
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Lucas",
    "Sophia",
    "Mateo",
    "Isabella",
    "Leo",
    "Mia",
    "Hugo",
    "Amelia",
    "Arjun",
    "Chloe",
    "Kenji",
    "Zoe",
    "Omar",
    "Lena",
    "Daniel",
    "Priya",
    "Jonas",
    "Elena",
    "Felix",
    "Hannah",
    "Marco",
    "Nora",
    "Samuel",
    "Aisha",
    "Tomas",
    "Grace",
    "Ivan",
    "Julia",
    "Kofi",
    "Laura",
    "Mark",
)
_LAST = (
    "Smith",
    "Garcia",
    "Müller",
    "Nguyen",
    "Johnson",
    "Rossi",
    "Kim",
    "Martin",
    "Brown",
    "Silva",
    "Novak",
    "Larsen",
    "Dubois",
    "Patel",
    "Tanaka",
    "Schmidt",
    "Lopez",
    "Walker",
    "Fischer",
    "Moreau",
    "Costa",
    "Berg",
    "Young",
    "Khan",
    "Wright",
    "Jensen",
    "Ivanova",
    "Clarke",
    "Weber",
    "Romero",
)
_TITLES = (
    "CEO",
    "CTO",
    "Head of Operations",
    "VP Sales",
    "Procurement Manager",
    "IT Director",
    "Office Manager",
    "Finance Director",
    "Product Manager",
    "Operations Lead",
    "COO",
    "Head of Marketing",
)
_LEAD_SOURCES = ("Website", "Referral", "Conference", "Outbound", "Partner", "Webinar")
_PRODUCTS = (
    "Annual license",
    "Pilot",
    "Expansion",
    "Renewal",
    "Onboarding package",
    "Enterprise plan",
    "Team plan",
    "Support contract",
)
_LOST_REASONS = (
    "Went with a competitor",
    "No budget this year",
    "Project cancelled",
    "Price too high",
    "No decision maker reachable",
    "Chose to build in-house",
)
_EMAIL_OUT = (
    (
        "Following up on our call",
        "Thanks for your time today. As promised, here is a summary of what we discussed",
    ),
    ("Proposal attached", "Please find our proposal attached. Happy to walk you through the pricing options"),
    ("Next steps", "Great meeting your team. Here are the next steps we agreed on"),
    ("Quick question about your rollout", "Do you already have a date in mind for the rollout"),
    ("Checking in", "Just checking in to see whether you had a chance to review the documents"),
)
_EMAIL_IN = (
    ("Re: Following up on our call", "Thanks, this is helpful. Could you also send the security overview"),
    ("Re: Proposal attached", "We reviewed the proposal internally and have a few questions on the terms"),
    ("Question about pricing", "Is there a discount for a two-year commitment"),
    ("Re: Next steps", "Sounds good. I will loop in our IT lead for the technical review"),
    ("Budget update", "Finance approved the budget for next quarter, so we can move forward"),
)
_CALLS = ("Discovery call", "Pricing call", "Check-in call", "Call with procurement", "Technical Q&A call")
_MEETINGS = (
    "Product demo",
    "On-site workshop",
    "Kick-off meeting",
    "Executive review",
    "Contract walkthrough",
)
_NOTES = (
    "Decision expected after the board meeting.",
    "Champion is the head of operations; CFO signs.",
    "Competitor also in the running.",
    "Asked for references in their industry.",
    "Legal review started.",
)
_TASKS = (
    "Send the revised proposal",
    "Schedule a follow-up call",
    "Prepare the demo",
    "Chase the signed contract",
    "Share customer references",
    "Book the kick-off meeting",
)

# How many deals end in each stage: the four open stages of the Sales pipeline, then won and lost
_DEAL_PLAN = (("Qualified", 9), ("Demo", 9), ("Proposal", 9), ("Negotiation", 8), ("Won", 14), ("Lost", 11))
_STALLED_DEALS = 8
# new contacts, each 2-9 days old, that nobody has called, met or written to yet
_NEW_LEADS = 6


@dataclass
class DemoCounts:
    users: int = 0
    companies: int = 0
    contacts: int = 0
    deals: int = 0
    activities: int = 0
    tasks: int = 0
    notifications: int = 0


def seed_demo(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    out: TextIO | None = None,
    only_if_empty: bool = False,
    settings: Settings | None = None,
    seed: int = DEFAULT_SEED,
) -> DemoCounts | None:
    """Fill an empty database with the demo dataset and print the logins; None when nothing was added."""
    out = out or sys.stdout
    settings = settings or Settings()
    domain = settings.team.domains[0] if settings.team.domains else DEMO_DOMAIN
    url = f"http://{settings.admin.host}:{settings.admin.port}"
    with transaction(sessions) as session:
        if session.scalar(select(func.count(Deal.id))):
            if not only_if_empty:
                raise DomainError(
                    "the database already has deals: demo data goes into an empty database only"
                )
            print("Demo data not added: the database already has deals.", file=out)
            _print_logins(session, domain, url, out)
            return None
        counts = _Seeder(session, random.Random(seed), now, domain, settings.alerts.stall_days).run()
    counts.notifications = run_scan(settings, sessions, now=now, send=False).decided
    print(
        f"Demo data added: {counts.users} users, {counts.companies} companies, {counts.contacts} contacts, "
        f"{counts.deals} deals, {counts.activities} activities, {counts.tasks} tasks, "
        f"{counts.notifications} alerts.",
        file=out,
    )
    with sessions() as session:
        _print_logins(session, domain, url, out)
    return counts


def _print_logins(session: Session, domain: str, url: str, out: TextIO) -> None:
    existing = [(login, find_user(session, f"{login.local_part}@{domain}")) for login in DEMO_LOGINS]
    shown = [(login, user) for login, user in existing if user is not None]
    if not shown:
        return
    print(f"Open {url} and sign in with a demo login (unless its password was changed since):", file=out)
    for login, user in shown:
        assert user is not None
        print(f"  {login.role.value:<8} {user.email:<32} password: {login.password}", file=out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower().replace("ü", "ue"))


class _Seeder:
    def __init__(
        self, session: Session, rng: random.Random, now: datetime, domain: str, stall_days: int
    ) -> None:
        self.session = session
        self.rng = rng
        self.now = now
        self.domain = domain
        self.stall_days = stall_days
        self.counts = DemoCounts()
        self.message_number = 0
        self.emails_per_folder: Counter[str] = Counter()

    def run(self) -> DemoCounts:
        users = self.users()
        companies = self.companies(users)
        contacts = self.contacts(companies, users)
        self.deals(companies, contacts, users)
        self.loose_activities(contacts, users)
        self.new_leads(companies, users)
        self.sync_status()
        self.session.flush()
        return self.counts

    def ago(self, days: float) -> datetime:
        return self.now - timedelta(days=days)

    # ---- people and companies

    def users(self) -> list[User]:
        users = []
        for login in DEMO_LOGINS:
            email = f"{login.local_part}@{self.domain}"
            user = find_user(self.session, email)
            if user is None:
                user = create_user(
                    self.session,
                    email,
                    name=login.name,
                    role=login.role,
                    password=login.password,
                    now=self.ago(120),
                )
                self.counts.users += 1
            users.append(user)
        return users

    def companies(self, users: Sequence[User]) -> list[Company]:
        names = [f"{word} {kind}" for word in _COMPANY_WORDS for kind in _COMPANY_KINDS]
        self.rng.shuffle(names)
        companies: list[Company] = []
        used_words: set[str] = set()
        for name in names:
            word = name.split()[0]
            if word in used_words and len(used_words) < len(_COMPANY_WORDS):
                continue  # one company per first word until they run out: names stay distinct at a glance
            used_words.add(word)
            domain = _slug(name) + self.rng.choice(_TLDS)
            if domain == self.domain:
                continue
            company = ensure_company_for_domain(
                self.session,
                domain,
                now=self.ago(self.rng.uniform(90, 150)),
                owner=self.rng.choice(users[1:]),
                name=name,
            )
            companies.append(company)
            if len(companies) == 50:
                break
        self.counts.companies = len(companies)
        return companies

    def contacts(self, companies: Sequence[Company], users: Sequence[User]) -> dict[int, list[Contact]]:
        by_company: dict[int, list[Contact]] = {}
        used: set[str] = set()
        for company in companies:
            domain = company.domains[0].domain
            for _ in range(4):
                first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
                address = f"{_slug(first)}.{_slug(last)}@{domain}"
                if address in used:
                    address = f"{_slug(first)}.{_slug(last)}{len(used)}@{domain}"
                used.add(address)
                contact = Contact(
                    name=f"{first} {last}",
                    title=self.rng.choice(_TITLES),
                    phone=f"+1 555 {self.rng.randint(100, 999)} {self.rng.randint(1000, 9999)}",
                    company=company,
                    owner=company.owner or self.rng.choice(users),
                    lead_source=self.rng.choice(_LEAD_SOURCES),
                    created_at=self.ago(self.rng.uniform(85, 140)),
                    emails=[ContactEmail(email=address)],
                )
                self.session.add(contact)
                by_company.setdefault(company.id, []).append(contact)
                self.counts.contacts += 1
        self.session.flush()
        return by_company

    # ---- deals and their history

    def deals(
        self, companies: Sequence[Company], contacts: dict[int, list[Contact]], users: Sequence[User]
    ) -> None:
        pipeline = find_pipeline(self.session, "Sales") or default_pipeline(self.session)
        open_stages = [s for s in pipeline.stages if s.kind == StageKind.OPEN]
        won = next(s for s in pipeline.stages if s.kind == StageKind.WON)
        lost = next(s for s in pipeline.stages if s.kind == StageKind.LOST)
        ends = [*(open_stages[min(i, len(open_stages) - 1)] for i in range(4)), won, lost]
        targets = [stage for stage, (_, n) in zip(ends, _DEAL_PLAN, strict=True) for _ in range(n)]
        self.rng.shuffle(targets)
        open_indexes = [i for i, t in enumerate(targets) if t.kind == StageKind.OPEN]
        stalled = set(self.rng.sample(open_indexes, min(_STALLED_DEALS, len(open_indexes))))
        deal_companies = [companies[i % len(companies)] for i in range(len(targets))]
        self.rng.shuffle(deal_companies)
        for index, (target, company) in enumerate(zip(targets, deal_companies, strict=True)):
            people = contacts.get(company.id, [])
            chosen = self.rng.sample(people, min(len(people), self.rng.randint(1, 3)))
            owner = self.rng.choice([users[2], users[2], users[1], users[0]])
            self.deal(
                pipeline, open_stages, target, won, lost, company, chosen, owner, stalled=index in stalled
            )

    def deal(
        self,
        pipeline: Pipeline,
        open_stages: list[Stage],
        target: Stage,
        won: Stage,
        lost: Stage,
        company: Company,
        people: list[Contact],
        owner: User,
        *,
        stalled: bool,
    ) -> None:
        if target.kind == StageKind.OPEN:
            path = open_stages[: open_stages.index(target) + 1]
        elif target.kind == StageKind.WON:
            path = [*open_stages, won]
        else:
            path = [*open_stages[: self.rng.randint(1, len(open_stages))], lost]
        if stalled:
            start, end = self.rng.uniform(70, 88), self.rng.uniform(self.stall_days + 8, self.stall_days + 30)
        elif target.kind == StageKind.OPEN:
            start, end = self.rng.uniform(15, 80), self.rng.uniform(1, max(2, self.stall_days / 2))
        else:
            start, end = self.rng.uniform(45, 88), self.rng.uniform(2, 30)
        start = max(start, end + len(path))
        times = sorted(self.ago(self.rng.uniform(end, start)) for _ in path[1:-1])
        moments = [self.ago(start), *times, self.ago(end)] if len(path) > 1 else [self.ago(start)]
        value = Decimal(self.rng.randrange(5, 180) * 500)
        deal = create_deal(
            self.session,
            title=f"{company.name}: {self.rng.choice(_PRODUCTS)}",
            now=moments[0],
            pipeline=pipeline,
            stage=path[0],
            value=value,
            currency=self.rng.choice(("USD",) * 4 + ("EUR",)),
            company=company,
            contacts=people,
            owner=owner,
            by=owner,
            expected_close_on=(self.now + timedelta(days=self.rng.randint(7, 75))).date(),
        )
        for stage, moment in zip(path[1:], moments[1:], strict=True):
            reason = self.rng.choice(_LOST_REASONS) if stage.kind == StageKind.LOST else None
            move_deal_to_stage(self.session, deal, stage, now=moment, by=owner, lost_reason=reason)
        if deal.closed_at is not None:
            deal.expected_close_on = deal.closed_at.date()
        self.counts.deals += 1
        # activity stops at the close, or well before today for a stalled deal
        last = deal.closed_at or (self.ago(end + 1) if stalled else self.ago(self.rng.uniform(0.1, 3)))
        for _ in range(self.rng.randint(3, 7)):
            when = self.ago(self.rng.uniform((self.now - last).total_seconds() / 86400, start))
            self.activity(when, owner, people, company, deal)
        self.activity(last, owner, people, company, deal)
        self.tasks(deal, owner, people, stalled=stalled)

    def tasks(self, deal: Deal, owner: User, people: list[Contact], *, stalled: bool) -> None:
        if deal.closed_at is not None:
            return
        overdue = stalled or self.rng.random() < 0.3
        due = (
            self.ago(self.rng.uniform(1, 10))
            if overdue
            else self.now + timedelta(days=self.rng.uniform(1, 14))
        )
        task = create_task(
            self.session,
            title=self.rng.choice(_TASKS),
            now=self.ago(20),
            due_at=due,
            assignee=owner,
            deal=deal,
            contact=people[0] if people else None,
        )
        self.counts.tasks += 1
        if not stalled and not overdue and self.rng.random() < 0.3:
            complete_task(self.session, task, now=self.ago(self.rng.uniform(0.5, 2)), by=owner)
            self.counts.activities += 1

    # ---- activities

    def activity(
        self, when: datetime, owner: User, people: list[Contact], company: Company | None, deal: Deal | None
    ) -> None:
        roll = self.rng.random()
        if roll < 0.55 and people:
            self.email(when, owner, people, company, deal)
        else:
            kind, subjects = self.rng.choice(
                [(ActivityKind.CALL, _CALLS), (ActivityKind.MEETING, _MEETINGS), (ActivityKind.NOTE, _NOTES)]
            )
            subject = self.rng.choice(subjects)
            log_activity(
                self.session,
                kind=kind,
                occurred_at=when,
                now=when,
                subject=subject if kind != "note" else "Note",
                body=subject if kind == "note" else f"{subject} with {', '.join(p.name for p in people)}.",
                author=owner,
                contacts=people,
                company=company,
                deal=deal,
            )
        self.counts.activities += 1

    def email(
        self,
        when: datetime,
        owner: User,
        people: list[Contact],
        company: Company | None,
        deal: Deal | None,
        *,
        inbound: bool = False,
    ) -> None:
        outbound = not inbound and self.rng.random() < 0.55
        subject, body = self.rng.choice(_EMAIL_OUT if outbound else _EMAIL_IN)
        person = people[0]
        address = person.emails[0].email
        self.message_number += 1
        sender_domain = self.domain if outbound else address.rsplit("@", 1)[1]
        message_id = f"<demo.{self.message_number}.{self.rng.getrandbits(40):010x}@{sender_domain}>"
        others = [p.emails[0].email for p in people[1:]]
        body = (
            f"Hi {person.name.split()[0] if outbound else owner.name.split()[0]},\n\n{body}.\n\nBest regards"
        )
        activity = Activity(
            kind=ActivityKind.EMAIL,
            occurred_at=when,
            subject=subject,
            body=body,
            author=owner if outbound else None,
            company=company,
            deal=deal,
            created_at=when,
            message_id=message_id,
            content_key=f"demo:{message_id}",
            thread_key=f"demo-thread:{deal.id if deal else address}",
            direction=Direction.OUT if outbound else Direction.IN,
            from_address=owner.email if outbound else address,
            to_addresses=[address, *others] if outbound else [owner.email],
            cc_addresses=[],
            snippet=body.replace("\n", " ")[:200],
            truncated=False,
            needs_deal_review=False,
        )
        activity.contacts.extend(people)
        folder = "Sent" if outbound else "INBOX"
        activity.sightings.append(EmailSighting(mailbox=DEMO_MAILBOX, folder=folder, seen_at=when))
        self.emails_per_folder[folder] += 1
        self.session.add(activity)
        touch([deal, company, *people], when)

    def new_leads(self, companies: Sequence[Company], users: Sequence[User]) -> None:
        """Contacts created in the last days that nobody reached yet: the waiting-lead alert; one wrote in."""
        for index in range(_NEW_LEADS):
            company = self.rng.choice(companies)
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            contact = Contact(
                name=f"{first} {last}",
                title=self.rng.choice(_TITLES),
                company=company,
                owner=self.rng.choice(users[1:]),
                lead_source=self.rng.choice(_LEAD_SOURCES),
                created_at=self.ago(self.rng.uniform(2, 9)),
                emails=[
                    ContactEmail(
                        email=f"{_slug(first)}.{_slug(last)}.lead{index}@{company.domains[0].domain}"
                    )
                ],
            )
            self.session.add(contact)
            self.counts.contacts += 1
            if index == 0:  # an inbound question is not an answer: still waiting
                self.session.flush()
                assert contact.owner is not None
                self.email(
                    contact.created_at + timedelta(hours=1),
                    contact.owner,
                    [contact],
                    company,
                    None,
                    inbound=True,
                )
                self.counts.activities += 1

    def sync_status(self) -> None:
        """The demo mailbox as the sync would leave it: healthy, every folder synced just now."""
        self.session.add(
            MailboxStatus(
                mailbox=DEMO_MAILBOX,
                last_attempt_at=self.now,
                last_success_at=self.now,
                consecutive_failures=0,
            )
        )
        for folder, logged in sorted(self.emails_per_folder.items()):
            # most mail in a mailbox is not about customers (newsletters, colleagues): seen, not logged
            seen = logged * 4 + self.rng.randint(0, logged)
            self.session.add(
                FolderSyncState(
                    mailbox=DEMO_MAILBOX,
                    folder=folder,
                    uidvalidity=1,
                    last_uid=seen,
                    uidnext=seen + 1,
                    messages_seen=seen,
                    messages_logged=logged,
                    last_success_at=self.now,
                )
            )

    def loose_activities(self, contacts: dict[int, list[Contact]], users: Sequence[User]) -> None:
        """Activity with people outside any deal: introductions, newsletters answered, support questions."""
        everyone = [c for group in contacts.values() for c in group if not c.deals]
        for contact in self.rng.sample(everyone, min(60, len(everyone))):
            owner = contact.owner or users[2]
            self.activity(self.ago(self.rng.uniform(0.5, 89)), owner, [contact], contact.company, None)
