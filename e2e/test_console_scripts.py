"""Scripts from the host page: an admin runs a script, the host answers through orbit's endpoints,
and the output appears on the open page without a reload (static/hostscripts/host_scripts.js)."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from conftest import Fleet
from playwright.sync_api import Page, expect

OUTPUT = "hello from the e2e host"


def _orbit(fleet: Fleet, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """A call to the server's orbit API, as fleetd makes it (the test plays the host's orbit)."""
    request = urllib.request.Request(
        f"{fleet.url}/api/fleet/orbit/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def test_run_a_script_from_the_host_page_and_see_its_output_arrive(as_admin: Page, fleet: Fleet) -> None:
    from hosts.models import EnrollSecret, Host

    page = as_admin
    # One simulated host gets orbit: enrolled with its hardware UUID it joins its own row, so the
    # fleet keeps its size for the other tests.
    host = Host.objects.exclude(id__in=fleet.team_host_ids).order_by("hostname").last()
    secret = EnrollSecret.objects.filter(team__isnull=True).values_list("secret", flat=True).first()
    enrolled = _orbit(
        fleet,
        "enroll",
        {"enroll_secret": secret, "hardware_uuid": host.osquery_host_id, "hostname": host.hostname},
    )
    key = enrolled["orbit_node_key"]

    page.goto(fleet.reverse("admin:hosts_host_change", host.pk))
    section = page.locator("#host-scripts")
    expect(section).to_be_visible()
    section.locator("#id_contents").fill(f"echo {OUTPUT}")
    section.get_by_role("button", name="Run script").click()

    expect(page).to_have_url(re.compile(re.escape(fleet.reverse("admin:hosts_host_change", host.pk))))
    row = page.locator("#script-runs tbody tr").first
    expect(row).to_have_attribute("data-status", "pending")
    expect(row.locator(".run-status")).to_have_text("Pending")
    execution_id = row.get_attribute("data-execution-id")
    assert execution_id
    page.evaluate("window.__notReloaded = true")

    # The host: its config lists the run, it fetches the script, runs it, reports the result.
    config = _orbit(fleet, "config", {"orbit_node_key": key})
    assert execution_id in config["notifications"]["pending_script_execution_ids"]
    script = _orbit(fleet, "scripts/request", {"orbit_node_key": key, "execution_id": execution_id})
    assert script["script_contents"] == f"echo {OUTPUT}"
    result = {"orbit_node_key": key, "execution_id": execution_id, "output": f"{OUTPUT}\n"}
    _orbit(fleet, "scripts/result", {**result, "runtime": 1, "exit_code": 0, "timeout": 300})

    expect(row).to_have_attribute("data-status", "ran", timeout=10_000)
    expect(row.locator(".run-status")).to_have_text("Ran")
    expect(row.locator(".run-exit")).to_have_text("0")
    row.locator("details.run-details summary").click()
    expect(row.locator("pre.script-output")).to_have_text(f"{OUTPUT}\n")
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
