"""Console (Django admin): the host list and page, actions, the "Add hosts" page and the paginator."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.choices import Role
from hosts.models import EnrollSecret, FleetSettings, Host, Team, UserRole
from hosts.paginators import CappedCountPaginator, capped_count
from tests.factories import make_host

pytestmark = pytest.mark.django_db

HOSTS = "/admin/hosts/host/"
ADD_HOSTS = "/admin/hosts/host/add-hosts/"


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def hosts(team):
    return {
        "mac": make_host(
            "mac-1.local",
            team,
            timedelta(seconds=5),
            platform="darwin",
            os_version="macOS 14.5",
            osquery_version="5.12.1",
            hardware_serial="C02MAC",
            primary_ip="10.1.2.3",
            memory=17179869184,
            uptime=90000,
        ),
        "ubuntu": make_host(
            "build-box", None, timedelta(hours=3), platform="ubuntu", primary_ip="172.16.0.4"
        ),
        "win": make_host("desk-7", None, timedelta(days=45), platform="windows"),
    }


def listed(response) -> set[str]:
    """Hostnames shown in a changelist page."""
    return {h.hostname for h in response.context["cl"].result_list}


# --- host list ------------------------------------------------------------------------------------------


def test_admin_index_links_to_add_hosts(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert ADD_HOSTS in response.content.decode()


def test_host_list_shows_status_badges_and_columns(admin_client, hosts):
    response = admin_client.get(HOSTS)
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        "mac-1.local",
        "build-box",
        "desk-7",
        "Online",
        "Offline",
        "Missing",
        "macOS 14.5",
        "5.12.1",
        "Engineering",
        ADD_HOSTS,
        "3 hosts",
    ):
        assert text in page, text
    assert "Add host<" not in page  # hosts come from enrolment


def test_host_list_filters_and_facets_are_fixed_lists(admin_client, hosts, team):
    page = admin_client.get(HOSTS).content.decode()
    for choice in (
        "?status=online",
        "?status=missing",
        "?status=new",
        "?platform=linux",
        "?platform=darwin",
        f"?team_id={team.pk}",
        "?team_id=0",
    ):
        assert choice in page, choice


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=online", {"mac-1.local"}),
        ("status=offline", {"build-box", "desk-7"}),
        ("status=missing", {"desk-7"}),
        ("platform=linux", {"build-box"}),
        ("platform=darwin", {"mac-1.local"}),
        ("team_id=0", {"build-box", "desk-7"}),
        ("q=box", {"build-box"}),
        ("q=uuid-desk-7", {"desk-7"}),
        ("q=C02MAC", {"mac-1.local"}),
        ("q=172.16.", {"build-box"}),
    ],
)
def test_host_list_filters_and_search(admin_client, hosts, query, expected):
    response = admin_client.get(f"{HOSTS}?{query}")
    assert response.status_code == 200
    assert listed(response) == expected


def test_host_list_team_filter(admin_client, hosts, team):
    assert listed(admin_client.get(f"{HOSTS}?team_id={team.pk}")) == {"mac-1.local"}


def test_host_list_never_counts_the_whole_table(admin_client, team):
    Host.objects.bulk_create(
        Host(osquery_host_id=f"b{i}", hostname=f"bulk-{i}", platform="darwin") for i in range(250)
    )
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(f"{HOSTS}?p=2&platform=darwin")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 100
    # The filters' counts come from the dashboard's grouped aggregate, kept in the cache: the
    # list itself never counts the whole table, and a second load does no aggregate at all.
    sqls = [q["sql"].upper() for q in queries]
    counts = [sql for sql in sqls if "COUNT(" in sql and "GROUP BY" not in sql]
    assert counts and all("LIMIT" in sql for sql in counts), counts
    with CaptureQueriesContext(connection) as again:
        admin_client.get(f"{HOSTS}?p=2&platform=darwin")
    assert not [q["sql"] for q in again if "GROUP BY" in q["sql"].upper()]


def test_platform_choices_are_cached(admin_client, hosts):
    admin_client.get(HOSTS)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(HOSTS)
    assert not any("DISTINCT" in q["sql"].upper() for q in queries)


def test_host_list_shows_a_lower_bound_on_big_lists(admin_client, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "count_window", 120)
    Host.objects.bulk_create(Host(osquery_host_id=f"b{i}") for i in range(300))
    page = admin_client.get(HOSTS).content.decode()
    assert "120+ hosts" in page
    last = admin_client.get(f"{HOSTS}?p=3")
    assert last.status_code == 200
    assert len(last.context["cl"].result_list) == 100
    assert "300 hosts" in last.content.decode()


def test_capped_count():
    Host.objects.bulk_create(Host(osquery_host_id=f"b{i}") for i in range(25))
    hosts = Host.objects.all()
    assert capped_count(hosts, 0, 100) == (25, True)
    assert capped_count(hosts, 0, 10) == (10, False)
    assert capped_count(hosts, 20, 10) == (25, True)
    assert capped_count(hosts, 40, 10) == (25, True)
    assert capped_count(hosts.none(), 0, 10) == (0, True)


def test_host_list_query_count_does_not_grow(admin_client, team):
    make_host("a", team, timedelta(seconds=1))
    admin_client.get(HOSTS)  # warms the cached platform choices
    with CaptureQueriesContext(connection) as few:
        admin_client.get(HOSTS)
    for i in range(30):
        make_host(f"h{i}", team if i % 2 else None, timedelta(seconds=1) if i % 3 else None)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(HOSTS)
    assert len(many) == len(few)


# --- host page ------------------------------------------------------------------------------------------


def test_host_page_shows_vitals_read_only(admin_client, hosts):
    host = hosts["mac"]
    response = admin_client.get(f"{HOSTS}{host.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("C02MAC", "10.1.2.3", "16.0 GiB", "1 day, 1 hour", "Refetch", f"{HOSTS}{host.pk}/refetch/"):
        assert text in page, text
    # A page to read, not an edit form: no Save buttons, no vitals as inputs; only the team moves.
    assert 'name="_save"' not in page and 'name="hostname"' not in page
    assert f'action="{HOSTS}{host.pk}/transfer/"' in page
    assert "Uuid" not in page and "Cpu type" not in page and "UUID" in page
    assert admin_client.post(f"{HOSTS}{host.pk}/change/", {"team": ""}).status_code == 405


def test_add_host_page_is_refused(admin_client):
    assert admin_client.get(f"{HOSTS}add/").status_code == 403


def test_changing_the_team_moves_only_the_team(admin_client, hosts, team):
    host = hosts["ubuntu"]
    # The agent reports a new hostname after the page was loaded: saving must not undo it.
    Host.objects.filter(pk=host.pk).update(hostname="renamed-by-agent")
    response = admin_client.post(f"{HOSTS}{host.pk}/transfer/", {"team": team.pk})
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.team_id == team.pk and host.hostname == "renamed-by-agent"
    assert admin_client.get(f"{HOSTS}{host.pk}/transfer/").status_code == 405


def test_refetch_button(admin_client, hosts):
    host = hosts["mac"]
    assert admin_client.get(f"{HOSTS}{host.pk}/refetch/").status_code == 405
    response = admin_client.post(f"{HOSTS}{host.pk}/refetch/", follow=True)
    assert response.status_code == 200
    assert "will send its details at its next check-in" in response.content.decode()
    host.refresh_from_db()
    assert host.refetch_requested is True


def _action(client, action: str, hosts, **extra):
    data = {"action": action, "_selected_action": [h.pk for h in hosts], "index": 0, **extra}
    return client.post(HOSTS, data)


def test_refetch_action(admin_client, hosts):
    response = _action(admin_client, "refetch_hosts", [hosts["mac"], hosts["win"]])
    assert response.status_code == 302
    assert set(Host.objects.filter(refetch_requested=True).values_list("hostname", flat=True)) == {
        "mac-1.local",
        "desk-7",
    }


def test_transfer_action_asks_for_the_team_then_moves(admin_client, hosts, team):
    chosen = [hosts["ubuntu"], hosts["win"]]
    confirm = _action(admin_client, "transfer_hosts", chosen)
    assert confirm.status_code == 200
    assert "Transfer hosts to a team" in confirm.content.decode()
    done = _action(admin_client, "transfer_hosts", chosen, team=team.pk, apply="Transfer")
    assert done.status_code == 302
    assert Host.objects.filter(team=team).count() == 3
    back = _action(admin_client, "transfer_hosts", chosen, team="", apply="Transfer")
    assert back.status_code == 302
    assert Host.objects.filter(team__isnull=True).count() == 2


def test_delete_action(admin_client, hosts):
    response = _action(admin_client, "delete_selected", [hosts["win"]], post="yes")
    assert response.status_code == 302
    assert not Host.objects.filter(pk=hosts["win"].pk).exists()


def test_team_observer_in_console_sees_their_hosts_and_cannot_move_them(client, hosts, team):
    user = get_user_model().objects.create_user("obs", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_host", "change_host"]))
    UserRole.objects.create(user=user, team=team, role=Role.OBSERVER)
    client.force_login(user)
    assert listed(client.get(HOSTS)) == {"mac-1.local"}
    page = client.get(f"{HOSTS}{hosts['mac'].pk}/change/")
    assert page.status_code == 200 and page.context["transfer_form"] is None
    assert "/transfer/" not in page.content.decode() and "delete-host" not in page.content.decode()
    assert client.post(f"{HOSTS}{hosts['mac'].pk}/transfer/", {"team": ""}).status_code == 403
    assert client.get(f"{HOSTS}{hosts['win'].pk}/change/").status_code == 302  # not found -> redirected


# --- add hosts -------------------------------------------------------------------------------------------


@pytest.fixture
def cert(settings, tmp_path):
    path = tmp_path / "cert.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings.TLS_CERT_FILE = str(path)
    settings.AGENT_TLS_HOSTNAME = ""
    settings.TLS_PORT = 8443
    return path


def test_add_hosts_page(admin_client, cert, global_secret, team_secret, team, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "fleet.example.com"]
    response = admin_client.get(ADD_HOSTS, HTTP_HOST="fleet.example.com:8000")
    assert response.status_code == 200
    page = response.content.decode()
    assert global_secret in page and team_secret not in page
    assert "BEGIN CERTIFICATE" in page
    flagfile = response.context["flagfile"]
    for flag in (
        "--enroll_secret_path=secret.txt",
        "--tls_server_certs=fleet.pem",
        "--tls_hostname=fleet.example.com:8443",
        "--host_identifier=uuid",
        "--enroll_tls_endpoint=/api/osquery/enroll",
        "--config_plugin=tls",
        "--config_tls_endpoint=/api/osquery/config",
        "--config_refresh=10",
        "--disable_distributed=false",
        "--distributed_plugin=tls",
        "--distributed_interval=10",
        "--distributed_tls_max_attempts=3",
        "--distributed_tls_read_endpoint=/api/osquery/distributed/read",
        "--distributed_tls_write_endpoint=/api/osquery/distributed/write",
        "--logger_plugin=tls",
        "--logger_tls_endpoint=/api/osquery/log",
        "--logger_tls_period=10",
    ):
        assert flag + "\n" in flagfile, flag
    assert "osqueryd --flagfile=flagfile.txt" in page
    team_page = admin_client.get(f"{ADD_HOSTS}?team={team.pk}").content.decode()
    assert team_secret in team_page and global_secret not in team_page


def test_add_hosts_uses_the_configured_agent_hostname(admin_client, cert, settings):
    settings.AGENT_TLS_HOSTNAME = "agents.example.com:443"
    flagfile = admin_client.get(f"{ADD_HOSTS}flagfile.txt")
    assert flagfile["Content-Disposition"] == 'attachment; filename="flagfile.txt"'
    assert "--tls_hostname=agents.example.com:443\n" in flagfile.content.decode()


def test_add_hosts_without_a_certificate(admin_client, settings, tmp_path):
    settings.TLS_CERT_FILE = str(tmp_path / "missing.pem")
    page = admin_client.get(ADD_HOSTS).content.decode()
    assert "No TLS certificate at" in page and "missing.pem" in page
    assert admin_client.get(f"{ADD_HOSTS}fleet.pem").status_code == 404


def test_add_hosts_downloads(admin_client, cert, global_secret):
    pem = admin_client.get(f"{ADD_HOSTS}fleet.pem")
    assert pem["Content-Disposition"] == 'attachment; filename="fleet.pem"'
    assert pem.content.decode() == cert.read_text()
    secret_id = EnrollSecret.objects.get(secret=global_secret).pk
    secret = admin_client.get(f"{ADD_HOSTS}secret/{secret_id}/secret.txt")
    assert secret["Content-Disposition"] == 'attachment; filename="secret.txt"'
    assert secret.content.decode() == global_secret


def test_add_hosts_with_no_secret_offers_to_add_one(admin_client, cert, team):
    page = admin_client.get(f"{ADD_HOSTS}?team={team.pk}").content.decode()
    assert "There is no enroll secret for this choice yet" in page
    assert f"/admin/hosts/enrollsecret/add/?team={team.pk}" in page


def test_add_hosts_is_for_staff_only(client, cert):
    assert client.get(ADD_HOSTS).status_code == 302
    client.force_login(get_user_model().objects.create_user("u", password="pw"))
    assert client.get(ADD_HOSTS)["Location"].startswith("/admin/login/")
    assert client.get(f"{ADD_HOSTS}fleet.pem").status_code == 302


def test_add_hosts_hides_secrets_from_team_observers(client, cert, team, global_secret, team_secret):
    user = get_user_model().objects.create_user("obs", password="pw", is_staff=True)
    UserRole.objects.create(user=user, team=team, role=Role.OBSERVER)
    client.force_login(user)
    page = client.get(ADD_HOSTS).content.decode()
    assert global_secret not in page and team_secret not in page
    assert "You cannot see any enroll secret" in page
    secret_id = Team.objects.get(pk=team.pk).secrets.get().pk
    assert client.get(f"{ADD_HOSTS}secret/{secret_id}/secret.txt").status_code == 403


# --- teams, enroll secrets, settings, roles ---------------------------------------------------------------


def test_team_list_and_page(admin_client, team, team_secret):
    make_host("a", team)
    page = admin_client.get("/admin/hosts/team/").content.decode()
    assert "Engineering" in page and f"/admin/hosts/host/?team_id={team.pk}" in page
    change = admin_client.get(f"/admin/hosts/team/{team.pk}/change/").content.decode()
    assert team_secret in change


def test_add_team_creates_an_enroll_secret(admin_client):
    response = admin_client.post(
        "/admin/hosts/team/add/",
        {
            "name": "Laptops",
            "description": "",
            "agent_options": "",
            "secrets-TOTAL_FORMS": 0,
            "secrets-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    team = Team.objects.get(name="Laptops")
    assert team.secrets.count() == 1 and team.agent_options is None


def test_add_team_with_its_own_secret(admin_client):
    response = admin_client.post(
        "/admin/hosts/team/add/",
        {
            "name": "Servers",
            "description": "",
            "agent_options": "",
            "secrets-TOTAL_FORMS": 1,
            "secrets-INITIAL_FORMS": 0,
            "secrets-0-secret": "servers-secret",
        },
    )
    assert response.status_code == 302
    secrets = Team.objects.get(name="Servers").secrets.values_list("secret", flat=True)
    assert list(secrets) == ["servers-secret"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("Engineering", "A team named &quot;Engineering&quot; already exists."),
        ("Unassigned", "is reserved."),
    ],
)
def test_add_team_errors_show_on_the_form(admin_client, team, name, error):
    response = admin_client.post(
        "/admin/hosts/team/add/",
        {
            "name": name,
            "agent_options": "",
            "secrets-TOTAL_FORMS": 0,
            "secrets-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert error in response.content.decode()


def test_team_secret_inline_rejects_a_used_secret(admin_client, global_secret):
    response = admin_client.post(
        "/admin/hosts/team/add/",
        {
            "name": "Dup",
            "agent_options": "",
            "secrets-TOTAL_FORMS": 1,
            "secrets-INITIAL_FORMS": 0,
            "secrets-0-secret": global_secret,
        },
    )
    assert response.status_code == 200
    assert "This secret is already in use." in response.content.decode()
    assert not Team.objects.filter(name="Dup").exists()


def test_team_agent_options_are_checked(admin_client, team):
    response = admin_client.post(
        f"/admin/hosts/team/{team.pk}/change/",
        {
            "name": "Engineering",
            "agent_options": '{"surprise": 1}',
            "secrets-TOTAL_FORMS": 0,
            "secrets-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "unknown keys: surprise" in response.content.decode()


def test_enroll_secret_add_form(admin_client, team):
    form = admin_client.get("/admin/hosts/enrollsecret/add/")
    assert len(form.context["adminform"].form["secret"].value()) == 24  # a random default
    response = admin_client.post("/admin/hosts/enrollsecret/add/", {"secret": "new-one", "team": team.pk})
    assert response.status_code == 302
    assert EnrollSecret.objects.get(secret="new-one").team == team
    dup = admin_client.post("/admin/hosts/enrollsecret/add/", {"secret": "new-one", "team": ""})
    assert dup.status_code == 200 and "This secret is already in use." in dup.content.decode()


def test_enroll_secret_limit_shows_on_the_form(admin_client, team):
    EnrollSecret.objects.bulk_create(EnrollSecret(secret=f"s{i}", team=team) for i in range(50))
    response = admin_client.post("/admin/hosts/enrollsecret/add/", {"secret": "s51", "team": team.pk})
    assert response.status_code == 200
    assert "already has 50 secrets, the maximum." in response.content.decode()


def test_enroll_secret_list(admin_client, global_secret, team_secret):
    page = admin_client.get("/admin/hosts/enrollsecret/").content.decode()
    assert global_secret in page and team_secret in page and "No team (global)" in page


def test_fleet_settings_is_a_single_page(admin_client):
    response = admin_client.get("/admin/hosts/fleetsettings/")
    assert response.status_code == 302
    row = FleetSettings.objects.get()
    assert response["Location"] == f"/admin/hosts/fleetsettings/{row.pk}/change/"
    page = admin_client.get(response["Location"]).content.decode()
    assert "distributed_interval" in page
    assert admin_client.get("/admin/hosts/fleetsettings/add/").status_code == 403


def test_fleet_settings_agent_options_are_validated(admin_client):
    row = FleetSettings.load()
    url = f"/admin/hosts/fleetsettings/{row.pk}/change/"
    bad = admin_client.post(url, {"agent_options": '{"config": "nope"}'})
    assert bad.status_code == 200 and "config must be a JSON object" in bad.content.decode()
    broken = admin_client.post(url, {"agent_options": "{not json"})
    assert broken.status_code == 200 and "Enter a valid JSON." in broken.content.decode()
    good = admin_client.post(url, {"agent_options": '{"config": {"options": {"distributed_interval": 5}}}'})
    assert good.status_code == 302
    row.refresh_from_db()
    assert row.agent_options == {"config": {"options": {"distributed_interval": 5}}}
