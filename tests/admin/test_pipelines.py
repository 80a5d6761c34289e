"""The pipeline editor: admins rename, reorder and tune stages in one form; removing a stage that holds deals
asks where they go and moves them through the stage history; nobody else gets in; every POST needs CSRF."""

from __future__ import annotations

import re

from sqlalchemy import select

from models.schema import Deal, DealStageChange, Pipeline, Role, Stage, StageKind
from tests.admin.conftest import fresh
from tests.fixtures.factories import stage_named


def editor_form(session, pipeline_name: str = "Sales") -> dict[str, str]:
    """The editor's form for a pipeline as the page sends it unchanged."""
    pipeline = session.scalar(select(Pipeline).where(Pipeline.name == pipeline_name))
    form = {"name": pipeline.name, "order": ",".join(str(s.id) for s in pipeline.stages)}
    for s in pipeline.stages:
        form[f"stage-{s.id}-name"] = s.name
        form[f"stage-{s.id}-kind"] = s.kind.value
        form[f"stage-{s.id}-probability"] = str(s.probability)
        form[f"stage-{s.id}-stall_days"] = "" if s.stall_days is None else str(s.stall_days)
    return form


def stage_order(session, pipeline_name: str = "Sales") -> list[tuple[str, int, int | None]]:
    fresh(session)
    pipeline = session.scalar(select(Pipeline).where(Pipeline.name == pipeline_name))
    return [(s.name, s.probability, s.stall_days) for s in pipeline.stages]


def test_admin_renames_reorders_and_tunes_stages(app, session, make_user, make_deal, login):
    admin = login(make_user(role=Role.ADMIN))
    page = admin.get("/admin/pipelines/").text
    assert "Empty" not in page and "tl-stage-row" in page and 'value="Qualified"' in page
    demo, proposal = stage_named(session, "Demo"), stage_named(session, "Proposal")
    form = editor_form(session)
    ids = form["order"].split(",")
    ids.remove(str(demo.id))
    ids.insert(ids.index(str(proposal.id)) + 1, str(demo.id))  # Demo after Proposal
    form.update(
        {
            "order": ",".join(ids),
            f"stage-{demo.id}-name": "Product demo",
            f"stage-{demo.id}-probability": "30",
            f"stage-{demo.id}-stall_days": "5",
            "name": "New business",
        }
    )
    saved = admin.post(f"/admin/pipelines/{demo.pipeline_id}/save", form, follow_redirects=True)
    assert "New business saved." in saved.text
    assert stage_order(session, "New business") == [
        ("Qualified", 10, None),
        ("Proposal", 50, None),
        ("Product demo", 30, 5),
        ("Negotiation", 75, None),
        ("Won", 100, None),
        ("Lost", 0, None),
    ]
    board = admin.get("/admin/board/").text
    assert board.index("Proposal") < board.index("Product demo") < board.index("Negotiation")

    # mistakes are explained and nothing is saved
    for change, message in (
        ({f"stage-{demo.id}-probability": "150"}, "Product demo: win probability is between 0 and 100"),
        (
            {f"stage-{demo.id}-probability": "lots"},
            "Product demo: win probability: &#39;lots&#39; is not a whole number",
        ),
        ({f"stage-{demo.id}-name": "Proposal"}, "two stages cannot share a name"),
        ({f"stage-{demo.id}-name": " "}, "every stage needs a name"),
    ):
        bad = admin.post(
            f"/admin/pipelines/{demo.pipeline_id}/save",
            {**editor_form(session, "New business"), **change},
            follow_redirects=True,
        )
        assert f"Not saved: {message}" in bad.text, message
    assert stage_order(session, "New business")[2] == ("Product demo", 30, 5)

    # a stage with deals keeps its kind
    make_deal(title="In demo", stage="Product demo", pipeline="New business")
    bad = admin.post(
        f"/admin/pipelines/{demo.pipeline_id}/save",
        {**editor_form(session, "New business"), f"stage-{demo.id}-kind": "won"},
        follow_redirects=True,
    )
    assert "Product demo holds deals: move them before making it a won stage" in bad.text


def test_removing_a_stage_with_deals_asks_where_they_go_and_keeps_history(
    app, session, make_user, make_deal, login
):
    boss = make_user(role=Role.ADMIN, name="Bea Boss")
    deals = [make_deal(title=f"Demo {n}", stage="Demo", owner=boss) for n in range(3)]
    demo, proposal = stage_named(session, "Demo"), stage_named(session, "Proposal")
    demo_id = demo.id
    admin = login(boss)
    ask = admin.get(f"/admin/pipelines/stage/{demo.id}/remove").text
    assert "Demo holds 3 deals. Where should they go?" in ask
    assert re.search(rf'<option value="{proposal.id}">Proposal</option>', ask)
    assert f'<option value="{demo.id}">' not in ask
    # without a choice nothing happens
    refused = admin.post(f"/admin/pipelines/stage/{demo.id}/remove", {}, follow_redirects=True)
    assert "Not removed: Demo holds 3 deal(s): choose the stage they move to" in refused.text
    fresh(session)
    assert session.get(Stage, demo.id) is not None

    done = admin.post(
        f"/admin/pipelines/stage/{demo.id}/remove", {"move_to": proposal.id}, follow_redirects=True
    )
    assert "Stage Demo removed; its 3 deal(s) moved to Proposal." in done.text
    fresh(session)
    assert session.get(Stage, demo_id) is None
    for deal in deals:
        moved = session.get(Deal, deal.id)
        assert moved.stage_id == proposal.id
        history = session.scalars(
            select(DealStageChange).where(DealStageChange.deal_id == deal.id).order_by(DealStageChange.id)
        ).all()
        assert [(h.to_stage_id, h.changed_by_id) for h in history][-1] == (proposal.id, boss.id)
        assert len(history) == 2
    assert [s for s, _p, _d in stage_order(session)] == [
        "Qualified",
        "Proposal",
        "Negotiation",
        "Won",
        "Lost",
    ]

    # an empty stage goes at once; the last open stage cannot go
    negotiation = stage_named(session, "Negotiation")
    assert "It holds no deals." in admin.get(f"/admin/pipelines/stage/{negotiation.id}/remove").text
    admin.post(f"/admin/pipelines/stage/{negotiation.id}/remove", {})
    qualified = stage_named(session, "Qualified")
    admin.post(f"/admin/pipelines/stage/{qualified.id}/remove", {})
    last = admin.post(
        f"/admin/pipelines/stage/{proposal.id}/remove",
        {"move_to": stage_named(session, "Won").id},
        follow_redirects=True,
    )
    assert "a pipeline needs at least one open stage" in last.text
    assert [s for s, _p, _d in stage_order(session)] == ["Proposal", "Won", "Lost"]


def test_adding_stages_and_pipelines(app, session, make_user, login):
    admin = login(make_user(role=Role.ADMIN))
    sales = session.scalar(select(Pipeline).where(Pipeline.name == "Sales"))
    admin.post(f"/admin/pipelines/{sales.id}/stages", {"name": "Trial"})
    assert [s for s, _p, _d in stage_order(session)] == [
        "Qualified", "Demo", "Proposal", "Negotiation", "Trial", "Won", "Lost",
    ]  # fmt: skip
    again = admin.post(f"/admin/pipelines/{sales.id}/stages", {"name": "trial"}, follow_redirects=True)
    assert "Stage not added: Sales already has a stage called &#39;trial&#39;" in again.text
    added = admin.post("/admin/pipelines/new", {"name": "Renewals"}, follow_redirects=True)
    assert "Pipeline Renewals added with the stages New, Won and Lost." in added.text
    fresh(session)
    renewals = session.scalar(select(Pipeline).where(Pipeline.name == "Renewals"))
    assert [(s.name, s.kind) for s in renewals.stages] == [
        ("New", StageKind.OPEN), ("Won", StageKind.WON), ("Lost", StageKind.LOST),
    ]  # fmt: skip
    gone = admin.post(f"/admin/pipelines/{renewals.id}/delete", {}, follow_redirects=True)
    assert "Pipeline Renewals removed." in gone.text


def test_only_admins_edit_pipelines_and_every_post_needs_csrf(app, session, make_user, login):
    demo = stage_named(session, "Demo")
    for role in (Role.REP, Role.MANAGER):
        browser = login(make_user(role=role))
        assert browser.get("/admin/pipelines/").status_code == 403
        assert browser.get(f"/admin/pipelines/stage/{demo.id}/remove").status_code == 403
        assert browser.post(f"/admin/pipelines/stage/{demo.id}/remove", {}).status_code == 403
        assert (
            browser.post(f"/admin/pipelines/{demo.pipeline_id}/save", editor_form(session)).status_code == 403
        )
    admin = login(make_user(role=Role.ADMIN))
    no_token = admin.client.post(f"/admin/pipelines/stage/{demo.id}/remove", data={})
    assert no_token.status_code == 400
    fresh(session)
    assert session.get(Stage, demo.id) is not None
