"""Live queries in the console: an admin watches every host answer; an observer is refused."""

from __future__ import annotations

import re

from conftest import QUERY_NAME, Fleet
from playwright.sync_api import Page, expect

SQL = "SELECT hostname FROM system_info"


def test_live_query_on_all_hosts_shows_every_answer(as_admin: Page, fleet: Fleet) -> None:
    from hosts.models import Host

    page = as_admin
    page.goto(fleet.reverse("admin:campaigns_campaign_new"))
    page.locator("#id_sql").fill(SQL)
    page.get_by_role("checkbox", name="All hosts", exact=True).check()
    expect(page.locator("#target-count")).to_have_text(
        f"{fleet.hosts} hosts targeted: {fleet.hosts} online, 0 offline.", timeout=10_000
    )
    page.locator("#run-button").click()

    expect(page).to_have_url(re.compile(r"/admin/campaigns/campaign/\d+/"))
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(fleet.hosts, timeout=30_000)
    expect(page.locator("#campaign-status")).to_have_text("Finished", timeout=30_000)
    expect(page.locator("#row-count")).to_have_text(str(fleet.hosts))
    # One row per host, each with the hostname the host itself reported.
    column = page.locator("#results thead th").evaluate_all(
        "(headers) => headers.findIndex((th) => th.dataset.column === 'hostname')"
    )
    assert column > 0, "no hostname column in the results table"
    cells = page.locator(f"#results tbody tr td:nth-child({column + 1})").all_inner_texts()
    assert sorted(cells) == sorted(Host.objects.values_list("hostname", flat=True))


def test_observer_is_refused_an_ad_hoc_live_query(as_observer: Page, fleet: Fleet) -> None:
    """Observers may run only saved queries marked observer_can_run, never SQL of their own."""
    page = as_observer
    live_query_url = fleet.reverse("admin:campaigns_campaign_new")
    refusal = re.compile(r"may not run|Forbidden", re.I)

    # Typing SQL: the live-query page refuses them and shows no SQL box.
    answer = page.goto(live_query_url)
    assert answer is not None and answer.status == 403
    expect(page.locator("#content")).to_contain_text(refusal)
    expect(page.locator("textarea[name=sql]")).to_have_count(0)

    # A saved query not marked for observers, from its "Run live" link: refused too.
    page.goto(fleet.reverse("admin:queries_query_changelist"))
    row = page.locator("#result_list tbody tr", has_text=QUERY_NAME)
    expect(row).to_have_count(1)
    with page.expect_response(re.compile(re.escape(live_query_url))) as answer_info:
        row.get_by_role("link", name="Run live").click()
    assert answer_info.value.status == 403
    expect(page.locator("#content")).to_contain_text(refusal)
    expect(page.locator("#run-button")).to_have_count(0)
