"""The host page, reached the way people do: by clicking a host's name in the host list."""

from __future__ import annotations

import re

from conftest import Fleet
from playwright.sync_api import Page, expect


def test_open_a_host_page_from_the_host_list(as_admin: Page, fleet: Fleet) -> None:
    from hosts.models import Host

    page = as_admin
    host = Host.objects.exclude(id__in=fleet.team_host_ids).order_by("hostname").first()
    page.goto(fleet.reverse("admin:hosts_host_changelist"))
    expect(page.locator("#result_list tbody tr")).to_have_count(fleet.hosts)

    page.locator("#result_list").get_by_role("link", name=host.display_name, exact=True).click()
    expect(page).to_have_url(re.compile(re.escape(fleet.reverse("admin:hosts_host_change", host.pk))))
    content = page.locator("#content")
    expect(content).to_contain_text(host.hostname)
    # Vitals the agent reported at enrolment.
    for vital in (host.os_version, host.osquery_version, host.primary_ip, host.uuid):
        assert vital, f"the simulator reported no value for a vital of {host.hostname}"
        expect(content).to_contain_text(vital)
