"""Software inventory, people's side: REST (roles, scopes, filters, pagination), the console pages,
the host list's software filter and the host page block."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.admin import HostAdmin
from hosts.choices import Role
from hosts.models import Host, Team
from software import counts, ingest, tasks
from software.filters import SoftwareHostListFilter
from software.hostpage import software_for_host
from software.models import SoftwareTitle, SoftwareVersion
from tests.factories import api_for, make_host, user_with_role

pytestmark = pytest.mark.django_db

SOFTWARE = "/api/v1/software/"


def row(name: str, version: str, source: str = "apps", **extra: str) -> dict[str, str]:
    return {"name": name, "version": version, "source": source, **extra}


@pytest.fixture
def inventory(team):
    """Three hosts: a Mac in Engineering, an Ubuntu server in Sales, a Windows PC with no team."""
    sales = Team.objects.create(name="Sales")
    mac = make_host("mac-1.local", team, platform="darwin")
    server = make_host("web-1", sales, platform="ubuntu")
    pc = make_host("desk-1", None, platform="windows")
    ingest.ingest_rows(
        mac.pk,
        [
            row("Google Chrome", "131.0", bundle_identifier="com.google.Chrome"),
            row("Slack", "4.41"),
            row("requests", "2.32.3", "python_packages"),
        ],
    )
    ingest.ingest_rows(
        server.pk,
        [row("openssl", "3.0.2-0ubuntu1.18", "deb_packages"), row("requests", "2.31.0", "python_packages")],
    )
    ingest.ingest_rows(pc.pk, [row("Google Chrome", "131.0", "programs"), row("7-Zip", "24.08", "programs")])
    counts.recount()
    return {"mac": mac, "server": server, "pc": pc, "engineering": team, "sales": sales}


def title(name: str, source: str) -> SoftwareTitle:
    return SoftwareTitle.objects.get(name=name, source=source)


def names(response) -> dict[tuple[str, str], int]:
    assert response.status_code == 200, response.content
    return {(t["name"], t["source"]): t["host_count"] for t in response.json()["results"]}


@pytest.fixture
def admin_api():
    return api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


# --- REST -----------------------------------------------------------------------------------------


def test_global_observer_sees_every_title_with_fleet_wide_counts(inventory):
    api = api_for(user_with_role("obs", Role.OBSERVER))
    body = api.get(SOFTWARE).json()
    assert body["count"] == 6 and body["count_is_exact"]
    assert names(api.get(SOFTWARE)) == {
        ("Google Chrome", "apps"): 1,
        ("Slack", "apps"): 1,
        ("requests", "python_packages"): 2,
        ("openssl", "deb_packages"): 1,
        ("Google Chrome", "programs"): 1,
        ("7-Zip", "programs"): 1,
    }
    requests = next(t for t in body["results"] if t["name"] == "requests")
    assert body["results"][0]["name"] == "requests"  # most hosts first
    assert {(v["version"], v["host_count"]) for v in requests["versions"]} == {("2.32.3", 1), ("2.31.0", 1)}
    assert requests["source_name"] == "Python packages"


def test_team_observer_sees_only_their_teams_titles_and_hosts(inventory):
    api = api_for(user_with_role("eng", Role.OBSERVER, inventory["engineering"]))
    assert names(api.get(SOFTWARE)) == {
        ("Google Chrome", "apps"): 1,
        ("Slack", "apps"): 1,
        ("requests", "python_packages"): 1,
    }
    requests = api.get(f"{SOFTWARE}{title('requests', 'python_packages').pk}/").json()
    assert requests["host_count"] == 1 and [v["version"] for v in requests["versions"]] == ["2.32.3"]
    assert api.get(f"{SOFTWARE}{title('openssl', 'deb_packages').pk}/").status_code == 404
    assert api.get(f"/api/v1/hosts/{inventory['server'].pk}/software/").status_code == 404
    assert api.get(f"/api/v1/hosts/{inventory['pc'].pk}/software/").status_code == 404
    own = api.get(f"/api/v1/hosts/{inventory['mac'].pk}/software/")
    assert own.status_code == 200 and own.json()["count"] == 3
    assert api.get(SOFTWARE, {"team_id": inventory["sales"].pk}).status_code == 403


def test_gitops_and_roleless_users_are_refused(inventory):
    for user in (user_with_role("ops", Role.GITOPS), user_with_role("nobody")):
        api = api_for(user)
        assert api.get(SOFTWARE).status_code == 403
        assert api.get(f"{SOFTWARE}{title('Slack', 'apps').pk}/").status_code == 403
        assert api.get(f"/api/v1/hosts/{inventory['mac'].pk}/software/").status_code == 403
    assert (
        api_for(user_with_role("team-ops", Role.GITOPS, inventory["sales"])).get(SOFTWARE).status_code == 403
    )


def test_unauthenticated_requests_are_refused(client, inventory):
    assert client.get(SOFTWARE).status_code in (401, 403)


def test_filters_search_source_platform_and_team(admin_api, inventory):
    assert set(names(admin_api.get(SOFTWARE, {"search": "chrome"}))) == {
        ("Google Chrome", "apps"),
        ("Google Chrome", "programs"),
    }
    assert set(names(admin_api.get(SOFTWARE, {"source": "programs"}))) == {
        ("Google Chrome", "programs"),
        ("7-Zip", "programs"),
    }
    assert names(admin_api.get(SOFTWARE, {"platform": "linux"})) == {
        ("openssl", "deb_packages"): 1,
        ("requests", "python_packages"): 1,
    }
    assert set(names(admin_api.get(SOFTWARE, {"team_id": 0}))) == {
        ("Google Chrome", "programs"),
        ("7-Zip", "programs"),
    }
    sales = admin_api.get(SOFTWARE, {"team_id": inventory["sales"].pk, "platform": "ubuntu"})
    assert set(names(sales)) == {("openssl", "deb_packages"), ("requests", "python_packages")}
    requests = next(t for t in sales.json()["results"] if t["name"] == "requests")
    assert [v["version"] for v in requests["versions"]] == ["2.31.0"]
    assert admin_api.get(SOFTWARE, {"source": "nope"}).status_code == 400
    assert admin_api.get(SOFTWARE, {"team_id": "x1"}).status_code == 400


def test_ordering_and_pagination(admin_api, inventory):
    by_name = admin_api.get(SOFTWARE, {"ordering": "name", "limit": 2})
    body = by_name.json()
    assert body["count"] == 6 and len(body["results"]) == 2 and body["next"]
    assert [t["name"].lower() for t in body["results"]] == sorted(t["name"].lower() for t in body["results"])
    assert admin_api.get(SOFTWARE, {"ordering": "-host_count"}).json()["results"][0]["name"] == "requests"
    assert admin_api.get(SOFTWARE, {"ordering": "bogus"}).status_code == 200


def test_list_cost_does_not_grow_with_the_page(admin_api, inventory):
    def cost(limit: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_api.get(SOFTWARE, {"limit": limit}).status_code == 200
        return len(queries)

    assert cost(1) == cost(6)


def test_host_software_lists_the_hosts_items(admin_api, inventory):
    response = admin_api.get(f"/api/v1/hosts/{inventory['mac'].pk}/software/")
    items = response.json()["results"]
    assert [(i["name"], i["version"], i["source"]) for i in items] == [
        ("Google Chrome", "131.0", "apps"),
        ("requests", "2.32.3", "python_packages"),
        ("Slack", "4.41", "apps"),
    ]
    chrome = items[0]
    assert chrome["bundle_identifier"] == "com.google.Chrome"
    assert chrome["id"] == title("Google Chrome", "apps").pk
    filtered = admin_api.get(f"/api/v1/hosts/{inventory['mac'].pk}/software/", {"source": "python_packages"})
    assert [i["name"] for i in filtered.json()["results"]] == ["requests"]
    searched = admin_api.get(f"/api/v1/hosts/{inventory['mac'].pk}/software/", {"search": "sla"})
    assert [i["name"] for i in searched.json()["results"]] == ["Slack"]
    assert admin_api.get("/api/v1/hosts/999999/software/").status_code == 404


def test_counts_refresh_on_the_page_in_the_embedded_default(admin_api, inventory, monkeypatch):
    """No beat in the embedded default: a page load recounts when an ingest changed something."""
    monkeypatch.setattr(tasks, "current_app", SimpleNamespace(conf=SimpleNamespace(task_always_eager=True)))
    ingest.ingest_rows(inventory["server"].pk, [row("Slack", "4.41")])
    assert names(admin_api.get(SOFTWARE, {"search": "slack"})) == {("Slack", "apps"): 2}
    monkeypatch.setattr(tasks, "current_app", SimpleNamespace(conf=SimpleNamespace(task_always_eager=False)))
    ingest.ingest_rows(inventory["pc"].pk, [row("Slack", "4.41")])
    assert names(admin_api.get(SOFTWARE, {"search": "slack"})) == {("Slack", "apps"): 2}
    counts.recount()
    assert names(admin_api.get(SOFTWARE, {"search": "slack"})) == {("Slack", "apps"): 3}


def test_schema_documents_the_endpoints(admin_api):
    schema = admin_api.get("/api/v1/schema/", {"format": "json"}).json()
    assert "/api/v1/software/" in schema["paths"] and "/api/v1/hosts/{host_id}/software/" in schema["paths"]


# --- console --------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_console_pages_render_with_counts_and_host_links(admin_client, inventory):
    chrome = title("Google Chrome", "apps")
    page = admin_client.get("/admin/software/softwaretitle/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Google Chrome" in text and "openssl" in text
    assert f"?software_title_id={chrome.pk}" in text
    version = SoftwareVersion.objects.get(title=chrome)
    assert f"?software_version_id={version.pk}" in text
    assert admin_client.get("/admin/software/softwaretitle/", {"q": "ssl"}).status_code == 200
    filtered = admin_client.get("/admin/software/softwaretitle/", {"source__exact": "deb_packages"})
    assert [t.name for t in filtered.context["cl"].result_list] == ["openssl"]
    detail = admin_client.get(f"/admin/software/softwaretitle/{chrome.pk}/change/")
    assert detail.status_code == 200 and "131.0" in detail.content.decode()
    versions = admin_client.get("/admin/software/softwareversion/")
    assert versions.status_code == 200 and "3.0.2-0ubuntu1.18" in versions.content.decode()
    assert admin_client.get(f"/admin/software/softwareversion/{version.pk}/change/").status_code == 200


def test_console_is_read_only(admin_client, inventory):
    chrome = title("Google Chrome", "apps")
    assert admin_client.get("/admin/software/softwaretitle/add/").status_code == 403
    assert admin_client.get(f"/admin/software/softwaretitle/{chrome.pk}/delete/").status_code == 403
    response = admin_client.post(f"/admin/software/softwaretitle/{chrome.pk}/change/", {"name": "x"})
    assert response.status_code == 403
    chrome.refresh_from_db()
    assert chrome.name == "Google Chrome"


def test_console_team_user_sees_their_teams_counts(client, inventory):
    client.force_login(user_with_role("eng", Role.OBSERVER, inventory["engineering"]))
    page = client.get("/admin/software/softwaretitle/")
    assert page.status_code == 200
    shown = {(t.name, t.source): t.hosts_count for t in page.context["cl"].result_list}
    assert shown == {("Google Chrome", "apps"): 1, ("Slack", "apps"): 1, ("requests", "python_packages"): 1}
    openssl = title("openssl", "deb_packages")
    assert client.get(f"/admin/software/softwaretitle/{openssl.pk}/change/").status_code in (302, 404)


def test_host_list_filter_by_title_and_version(admin_client, inventory, monkeypatch):
    monkeypatch.setattr(HostAdmin, "list_filter", [*HostAdmin.list_filter, SoftwareHostListFilter])
    requests = title("requests", "python_packages")
    page = admin_client.get("/admin/hosts/host/", {"software_title_id": requests.pk})
    assert page.status_code == 200
    assert {h.pk for h in page.context["cl"].result_list} == {inventory["mac"].pk, inventory["server"].pk}
    assert "requests" in page.content.decode()  # the sidebar names the selected software
    old = SoftwareVersion.objects.get(title=requests, version="2.31.0")
    page = admin_client.get("/admin/hosts/host/", {"software_version_id": old.pk})
    assert {h.pk for h in page.context["cl"].result_list} == {inventory["server"].pk}
    page = admin_client.get("/admin/hosts/host/", {"software_title_id": "junk"})
    assert page.status_code == 200 and len(page.context["cl"].result_list) == 3


def test_host_page_block(inventory):
    items = software_for_host(inventory["mac"], 2)
    assert [(i.name, i.version, i.source) for i in items] == [
        ("Google Chrome", "131.0", "macOS apps"),
        ("requests", "2.32.3", "Python packages"),
    ]
    assert items[0].title_id == title("Google Chrome", "apps").pk
    assert software_for_host(Host(pk=999_999), 10) == []
