"""Apple MDM in the console: a simulated Mac enrolls over HTTP (SCEP, signed check-ins), an admin
sees it on the host page and on the Apple MDM page, locks it with the host page's button, and the
host shows as locked once the Mac has answered."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from conftest import Fleet
from playwright.sync_api import Page, expect


def _send(method: str, url: str, body: bytes, headers: dict[str, str]):
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_enroll_a_mac_then_lock_it_from_the_host_page(as_admin: Page, fleet: Fleet) -> None:
    from agentapi.simulator.apple import MacInfo, SimulatedMac
    from hosts.models import EnrollSecret, Host
    from mdm import push_certificate, services

    page = as_admin
    services.setup(dev=True)  # the same FLEET_VAR_DIR as the server: it sees this CA
    # A Mac the simulator already runs osquery for: MDM joins its host, the fleet keeps its size.
    host = Host.objects.filter(platform="darwin").exclude(id__in=fleet.team_host_ids).order_by("id").first()
    assert host is not None, "the e2e fleet has no macOS host"
    secret = EnrollSecret.objects.filter(team__isnull=True).values_list("secret", flat=True).first()
    mac = SimulatedMac(
        MacInfo.example(udid=host.uuid, serial=host.hardware_serial or None),
        _send,
        base_url=fleet.url,
        enroll_secret=secret,
    )
    mac.enroll()
    mac.poll()
    assert Host.objects.count() == fleet.hosts

    page.goto(fleet.reverse("admin:mdm_pushcertificate_changelist"))
    expect(page.locator("#apns-certificate")).to_contain_text(push_certificate.topic())

    host_url = fleet.reverse("admin:hosts_host_change", host.pk)
    page.goto(host_url)
    block = page.locator("#host-mdm")
    expect(block.locator("#mdm-enrollment-state")).to_contain_text("Enrolled")
    expect(block.locator("#mdm-commands")).to_contain_text("DeviceInformation")

    page.locator("#device-action-lock").click()
    expect(page).to_have_url(re.compile(re.escape(host_url)))
    expect(page.locator("#pending-action")).to_have_text("lock")
    assert mac.poll() == 1 and mac.locked

    page.reload()
    expect(page.locator("#device-status")).to_have_text("locked")
    expect(page.locator("#device-action-unlock")).to_be_visible()
