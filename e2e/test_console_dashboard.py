"""Logging in: an admin sees the whole fleet on the dashboard; a team observer only their team."""

from __future__ import annotations

from conftest import Fleet
from playwright.sync_api import Page, expect


def test_admin_dashboard_counts_match_the_simulated_hosts(as_admin: Page, fleet: Fleet) -> None:
    from django.utils import timezone

    from hosts.models import Host, HostSeenTime

    page = as_admin
    total = Host.objects.count()
    assert total == fleet.hosts
    # Every simulated host checked in before the tests started, and keeps checking in every second.
    assert HostSeenTime.objects.filter(offline_after__gte=timezone.now()).count() == fleet.hosts

    count = page.locator("#dashboard .count[data-status]")
    expect(count.and_(page.locator('[data-status="online"]'))).to_have_text(str(fleet.hosts))
    expect(count.and_(page.locator('[data-status="offline"]'))).to_have_text("0")
    expect(count.and_(page.locator('[data-status="missing"]'))).to_have_text("0")
    # All enrolled just now, so all new.
    expect(count.and_(page.locator('[data-status="new"]'))).to_have_text(str(fleet.hosts))
    expect(page.locator("#dashboard .dashboard-all")).to_contain_text(f"All {total} hosts")


def test_team_observer_sees_only_their_teams_hosts(as_team_observer: Page, fleet: Fleet) -> None:
    from hosts.models import Host

    page = as_team_observer
    online = page.locator('#dashboard .count[data-status="online"]')
    expect(online).to_have_text(str(len(fleet.team_host_ids)))

    page.goto(fleet.reverse("admin:hosts_host_changelist"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(len(fleet.team_host_ids))
    team_hosts = Host.objects.filter(id__in=fleet.team_host_ids)
    names = page.locator("#result_list tbody .field-display_name").all_inner_texts()
    shown = {name.strip() for name in names}
    assert shown == {host.display_name for host in team_hosts}
    other = Host.objects.exclude(id__in=fleet.team_host_ids).first()
    expect(page.locator("#result_list")).not_to_contain_text(other.display_name)
