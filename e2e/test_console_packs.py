"""An admin edits a pack in the console: a new description and a scheduled query, both saved."""

from __future__ import annotations

from conftest import PACK_NAME, QUERY_NAME, Fleet
from playwright.sync_api import Page, expect

NEW_DESCRIPTION = "Edited in the browser by the e2e test."


def test_admin_edits_a_pack(as_admin: Page, fleet: Fleet) -> None:
    from packs.models import Pack

    page = as_admin
    pack = Pack.objects.get(name=PACK_NAME)
    page.goto(fleet.reverse("admin:packs_pack_changelist"))
    page.locator("#result_list").get_by_role("link", name=PACK_NAME, exact=True).click()

    page.locator("#id_description").fill(NEW_DESCRIPTION)
    # The scheduled-query inline: pick the saved query in its autocomplete box, run it hourly.
    row = page.locator("#scheduled-group tr.form-row").first
    row.locator(".select2-selection").click()
    page.locator(".select2-container--open .select2-search__field").fill(QUERY_NAME)
    page.locator(".select2-results__option", has_text=QUERY_NAME).click()
    row.locator('input[name$="-interval"]').fill("3600")
    page.locator('input[name="_continue"]').click()

    expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")
    expect(page.locator("#id_description")).to_have_value(NEW_DESCRIPTION)
    saved = page.locator("#scheduled-group tr.form-row.has_original")
    expect(saved).to_have_count(1)
    expect(saved).to_contain_text(QUERY_NAME)

    pack.refresh_from_db()
    assert pack.description == NEW_DESCRIPTION
    scheduled = list(pack.scheduled.select_related("query"))
    assert [(s.query.name, s.name, s.interval) for s in scheduled] == [(QUERY_NAME, QUERY_NAME, 3600)]
