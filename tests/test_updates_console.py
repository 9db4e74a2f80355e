"""The console's "Agent updates" page, hosts behind their channel, roles, and update_channels checks."""

from __future__ import annotations

import re
import shutil
from html import unescape
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from hosts import services
from hosts.agent_options import validate_agent_options
from hosts.choices import Role
from hosts.models import Team
from tests.factories import api_for, make_host, user_with_role
from updates import host_versions
from updates.repository import NewTarget, UpdateRepository

pytestmark = pytest.mark.django_db

PAGE = "/admin/updates/agentupdates/"
RESIGN = "/admin/updates/agentupdates/timestamp/"
OSQUERY_5_1 = {"osquery_version": "5.1"}
PASSPHRASES = {role: f"pass-{role}-789" for role in ("root", "targets", "snapshot", "timestamp")}


@pytest.fixture(scope="module")
def signed_once(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tuf")
    repo = UpdateRepository(root / "repository", root / "keys", scrypt_n=2**10)
    repo.init(PASSPHRASES.__getitem__)
    repo.add_targets(
        [
            NewTarget("orbit", "linux", "1.38.1", ("stable",), data=b"orbit stable"),
            NewTarget("orbit", "linux", "1.39.0", ("edge",), data=b"orbit edge"),
            NewTarget("osqueryd", "macos-app", "5.14.1", ("stable",), data=b"o", source_name="o.app.tar.gz"),
        ],
        PASSPHRASES.__getitem__,
    )
    return root


@pytest.fixture
def repository(settings, tmp_path, monkeypatch, signed_once) -> UpdateRepository:
    monkeypatch.delenv("FLEET_TIMESTAMP_PASSPHRASE", raising=False)
    shutil.copytree(signed_once, tmp_path / "tuf")
    settings.AGENT_UPDATES = {
        **settings.AGENT_UPDATES,
        "REPOSITORY_DIR": str(tmp_path / "tuf" / "repository"),
        "KEYS_DIR": str(tmp_path / "tuf" / "keys"),
        "BASE_URL": "",
        "KEY_SCRYPT_N": 2**10,
    }
    return UpdateRepository.from_settings()


@pytest.fixture
def fleet(db):
    """Hosts on and behind their channels; the Edge team follows orbit's edge channel."""
    edge = Team.objects.create(
        name="Edge", agent_options={"config": {"options": {}}, "update_channels": {"orbit": "edge"}}
    )
    return {
        "edge": edge,
        "current": make_host("linux-current", platform="ubuntu", orbit_version="1.38.1", **OSQUERY_5_1),
        "behind": make_host("linux-behind", platform="debian", orbit_version="1.37.0", **OSQUERY_5_1),
        "edge-behind": make_host("edge-behind", edge, platform="ubuntu", orbit_version="1.38.1"),
        "mac": make_host("mac-host", platform="darwin", orbit_version="1.38.1", osquery_version="5.13.0"),
        "bare": make_host("bare-osquery", platform="windows", osquery_version="5.10.0"),  # no orbit
    }


def _login(client, user):
    client.force_login(user)
    return client


def _superuser():
    return get_user_model().objects.create_superuser("root", "root@example.com", None)


def _rows(html: str) -> list[tuple[str, str]]:
    """(component, state) of each version row on the page."""
    return re.findall(r'class="version-row" data-component="(\w+)" data-state="([\w ]+)"', html)


def test_outdated_hosts_follow_their_team_channel_and_platform(repository, fleet):
    summaries = {s.component: s for s in host_versions.versions_for(_superuser(), repository.targets())}

    orbit = {(r.platform, r.channel, r.reported): (r.hosts, r.state) for r in summaries["orbit"].rows}
    assert orbit == {
        ("linux", "stable", "1.38.1"): (1, "current"),
        ("linux", "stable", "1.37.0"): (1, "outdated"),
        ("linux", "edge", "1.38.1"): (1, "outdated"),
        ("macos", "stable", "1.38.1"): (1, "no target"),
    }
    assert summaries["orbit"].outdated_hosts == 2
    osqueryd = {(r.platform, r.reported): r.state for r in summaries["osqueryd"].rows}
    assert osqueryd == {("linux", "5.1"): "no target", ("macos-app", "5.13.0"): "outdated"}
    assert summaries["desktop"].rows == []  # nobody reports Fleet Desktop yet; bare osquery is not counted


def test_admin_sees_the_page_and_links_to_the_hosts_behind(client, repository, fleet):
    _login(client, _superuser())
    response = client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert ("orbit", "outdated") in _rows(html)
    assert html.count('class="target-row"') == len(repository.targets())
    assert 'id="resign-timestamp"' in html
    assert "--update-roots=" in html and "/tuf" in html
    links = [unescape(u) for u in re.findall(r'href="(/admin/hosts/host/\?[^"]+)"', html)]
    behind = next(u for u in links if "orbit_version=1.37.0" in u)
    host_list = client.get(behind).content.decode()
    assert "linux-behind" in host_list
    assert "linux-current" not in host_list
    edge_link = next(u for u in links if "orbit_version=1.38.1" in u and f"team_id={fleet['edge'].pk}" in u)
    edge_list = client.get(edge_link).content.decode()
    assert "edge-behind" in edge_list and "linux-current" not in edge_list


def test_admin_re_signs_the_timestamp(client, repository, monkeypatch):
    _login(client, _superuser())
    before = repository.roles()[-1].version
    assert "is not set on the server" in client.post(RESIGN, follow=True).content.decode()
    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", PASSPHRASES["timestamp"])

    response = client.post(RESIGN, follow=True)

    assert f"Signed timestamp version {before + 1}" in response.content.decode()
    assert repository.roles()[-1].version == before + 1
    assert client.get(RESIGN).status_code == 405


@pytest.mark.parametrize(
    ("role", "on_team"), [(Role.OBSERVER, False), (Role.MAINTAINER, False), (Role.ADMIN, True)]
)
def test_others_may_look_but_not_manage(client, repository, fleet, monkeypatch, role, on_team):
    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", PASSPHRASES["timestamp"])
    user = user_with_role(f"user-{role}", role, fleet["edge"] if on_team else None)
    _login(client, user)
    before = repository.roles()[-1].version

    page = client.get(PAGE)
    assert page.status_code == 200
    assert 'id="resign-timestamp"' not in page.content.decode()
    assert client.post(RESIGN).status_code == 403
    assert repository.roles()[-1].version == before


def test_team_users_count_only_their_teams_hosts(client, repository, fleet):
    _login(client, user_with_role("edge-observer", Role.OBSERVER, fleet["edge"]))
    html = client.get(PAGE).content.decode()
    assert _rows(html) == [("orbit", "outdated")]  # edge-behind, and nothing of the global hosts


def test_gitops_and_strangers_get_no_page(client, repository):
    _login(client, user_with_role("gitops-user", Role.GITOPS))
    assert client.get(PAGE).status_code == 302  # to the login page, like every console page
    client.logout()
    assert client.get(PAGE).status_code == 302


def test_page_before_init_says_what_to_run(client, settings, tmp_path):
    settings.AGENT_UPDATES = {**settings.AGENT_UPDATES, "REPOSITORY_DIR": str(tmp_path / "none")}
    _login(client, _superuser())
    html = client.get(PAGE).content.decode()
    assert "manage.py updates init" in html


def test_page_is_listed_among_console_pages(client, repository):
    _login(client, user_with_role("plain-observer", Role.OBSERVER))
    assert PAGE in client.get("/admin/").content.decode()
    assert PAGE in client.get("/admin/updates/").content.decode()


def test_host_page_shows_the_fleet_desktop_version(client):
    host = make_host("desk", platform="darwin", orbit_version="1.38.1", desktop_version="1.38.1")
    _login(client, _superuser())
    assert "Fleet Desktop" in client.get(f"/admin/hosts/host/{host.pk}/change/").content.decode()


# --- update_channels in agent options -------------------------------------------------------------


@pytest.mark.parametrize(
    "channels",
    [None, {}, {"orbit": "stable"}, {"orbit": "edge", "osqueryd": "5.12.1", "desktop": "stable"}],
)
def test_valid_update_channels(channels):
    options = {"config": {}} if channels is None else {"config": {}, "update_channels": channels}
    assert validate_agent_options(options) == []


@pytest.mark.parametrize(
    ("channels", "problem"),
    [
        ("stable", "update_channels must be a JSON object"),
        (["stable"], "update_channels must be a JSON object"),
        ({"orbit": "../../etc"}, "update_channels.orbit must be a channel name"),
        ({"osqueryd": ""}, "update_channels.osqueryd must be a channel name"),
        ({"desktop": 5}, "update_channels.desktop must be a channel name"),
        ({"desktop": ".hidden"}, "update_channels.desktop must be a channel name"),
        ({"fleetd": "stable"}, "update_channels: unknown keys: fleetd"),
    ],
)
def test_invalid_update_channels(channels, problem):
    problems = validate_agent_options({"config": {}, "update_channels": channels})
    assert any(p.startswith(problem) for p in problems), problems


def test_invalid_update_channels_are_refused_by_rest_and_services(team):
    admin_api = api_for(_superuser())
    response = admin_api.patch(
        f"/api/v1/teams/{team.pk}/", {"agent_options": {"update_channels": {"orbit": "a/b"}}}, format="json"
    )
    assert response.status_code == 400
    assert "update_channels.orbit" in str(response.json()["errors"]["agent_options"])
    with pytest.raises(ValidationError):
        services.set_agent_options(team, {"update_channels": {"desktop": "../x"}})
