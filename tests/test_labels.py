"""Labels end to end: simulated agents answer label queries, builtins, manual labels, campaigns,
the check-in's cost, and the console (fleet-reference §2.1, §2.2, §5.3)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import services as campaigns
from hosts import labels, nodekeys
from hosts.labels_builtin import BUILTIN_LABELS
from hosts.models import Host, Label, LabelMembership, LabelMembershipType, LabelType
from hosts.services import request_refetch
from tests.agent import Agent
from tests.factories import make_host

pytestmark = pytest.mark.django_db

PREFIX = "fleet_label_query_"


@pytest.fixture(autouse=True)
def builtins(db) -> dict[str, int]:
    """The builtin labels, as the data migration leaves them (a flushed test database lacks them)."""
    labels.ensure_builtin_labels()
    return labels.builtin_label_ids()


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


def dynamic(
    name: str, sql: str = "SELECT 1 FROM apps WHERE name = 'Chrome.app'", platform: str = ""
) -> Label:
    return labels.create_label(name=name, query=sql, platform=platform)


def enroll(client, secret: str, identifier: str, platform: str = "darwin", **details: str) -> Agent:
    agent = Agent(
        client, identifier, hostname=f"{identifier}.local", serial=f"S-{identifier}", platform=platform
    )
    if platform != "darwin":
        agent.details["os_version"].update(name=details.get("name", platform.title()), platform_like="")
    agent.details["os_version"].update(details)
    agent.enroll(secret)
    return agent


def host_of(agent: Agent) -> Host:
    return Host.objects.get(osquery_host_id=agent.identifier)


def label_queries(body: dict) -> dict[str, str]:
    return {name: sql for name, sql in body["queries"].items() if name.startswith(PREFIX)}


def answer(
    agent: Agent, queries: dict[str, str], members: set[int] = frozenset(), failed: set[int] = frozenset()
):
    """Answer a read like osquery: rows for member labels, [] otherwise, status 1 for failures."""
    rows: dict[str, list] = {}
    statuses: dict[str, int] = {}
    messages: dict[str, str] = {}
    for name in queries:
        suffix = name.removeprefix(PREFIX) if name.startswith(PREFIX) else ""
        label_id = int(suffix) if suffix.isdigit() else None
        rows[name] = [{"1": "1"}] if label_id in members else []
        statuses[name] = 1 if label_id in failed else 0
        messages[name] = "no such table: apps" if label_id in failed else ""
    response = agent.authed(
        "distributed/write", {"queries": rows, "statuses": statuses, "messages": messages}
    )
    assert response.status_code == 200 and response.json() == {}


def member_ids(agent: Agent) -> set[int]:
    return set(
        LabelMembership.objects.filter(host__osquery_host_id=agent.identifier).values_list(
            "label_id", flat=True
        )
    )


def cached_label_ids(agent: Agent) -> tuple[int, ...]:
    return nodekeys.lookup(agent.node_key).label_ids


def make_labels_due(agent: Agent, ago: timedelta = timedelta(hours=2)) -> None:
    host = host_of(agent)
    Host.objects.filter(pk=host.pk).update(label_updated_at=timezone.now() - ago)
    nodekeys.forget([host.node_key_hash])


# --- dynamic labels: the agent's answers decide -----------------------------------------------------


def test_dynamic_label_membership_follows_the_agents_answers(client, global_secret, builtins):
    chrome = dynamic("Has Chrome")
    agent = enroll(client, global_secret, "mac-a")

    body = agent.authed("distributed/read").json()
    name = f"{PREFIX}{chrome.pk}"
    assert label_queries(body) == {name: chrome.query}
    assert body["discovery"][name] == "SELECT 1"  # osquery would skip it without a discovery entry
    answer(agent, body["queries"], members={chrome.pk})
    assert chrome.pk in member_ids(agent)
    assert chrome.pk in cached_label_ids(agent)  # the config's cache key sees it at once
    assert label_queries(agent.authed("distributed/read").json()) == {}  # not due again yet

    make_labels_due(agent)
    body = agent.authed("distributed/read").json()
    assert name in body["queries"]
    answer(agent, body["queries"])  # no rows now: Chrome was removed
    assert chrome.pk not in member_ids(agent)
    assert chrome.pk not in cached_label_ids(agent)
    assert builtins["All Hosts"] in cached_label_ids(agent)  # builtins are untouched


def test_a_failed_label_query_leaves_membership_unchanged(client, global_secret):
    chrome = dynamic("Has Chrome")
    agent = enroll(client, global_secret, "mac-a")
    answer(agent, agent.authed("distributed/read").json()["queries"], members={chrome.pk})

    make_labels_due(agent)
    answer(agent, agent.authed("distributed/read").json()["queries"], failed={chrome.pk})
    assert chrome.pk in member_ids(agent)
    # Answered (even by a failure): not asked again at every check-in.
    assert host_of(agent).label_updated_at > timezone.now() - timedelta(minutes=1)
    assert label_queries(agent.authed("distributed/read").json()) == {}


def test_label_queries_are_due_after_the_interval_plus_the_hosts_stable_jitter(
    client, global_secret, settings
):
    settings.OSQUERY = {**settings.OSQUERY, "LABEL_UPDATE_INTERVAL": 3600, "MAX_JITTER_PERCENT": 10}
    chrome = dynamic("Has Chrome")
    agent = enroll(client, global_secret, "mac-a")
    answer(agent, agent.authed("distributed/read").json()["queries"])
    jitter = nodekeys.detail_jitter(host_of(agent).pk, 3600)
    assert 0 <= jitter <= 360

    make_labels_due(agent, timedelta(seconds=3600 + jitter - 30))
    assert label_queries(agent.authed("distributed/read").json()) == {}
    make_labels_due(agent, timedelta(seconds=3600 + jitter + 1))
    assert f"{PREFIX}{chrome.pk}" in agent.authed("distributed/read").json()["queries"]


def test_a_refetch_sends_the_label_queries_too(client, global_secret, admin):
    chrome = dynamic("Has Chrome")
    agent = enroll(client, global_secret, "mac-a")
    answer(agent, agent.authed("distributed/read").json()["queries"])
    assert label_queries(agent.authed("distributed/read").json()) == {}

    request_refetch([host_of(agent).pk])
    body = agent.authed("distributed/read").json()
    assert f"{PREFIX}{chrome.pk}" in body["queries"]
    answer(agent, body["queries"], members={chrome.pk})
    assert chrome.pk in member_ids(agent)
    assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}


def test_platform_restricted_labels_go_only_to_matching_hosts(client, global_secret):
    everyone = dynamic("Everyone", "SELECT 1")
    macs = dynamic("Macs", "SELECT 1", platform="darwin")
    linux = dynamic("Linux", "SELECT 1", platform="linux")
    ubuntu = dynamic("Ubuntu boxes", "SELECT 1", platform="ubuntu")
    windows_or_mac = dynamic("Desktops", "SELECT 1", platform="windows,darwin")
    mac = enroll(client, global_secret, "mac-a")
    box = enroll(client, global_secret, "box-1", platform="ubuntu", name="Ubuntu", platform_like="debian")
    win = enroll(client, global_secret, "win-1", platform="windows", name="Microsoft Windows 11 Pro")

    def sent(agent: Agent) -> set[int]:
        return {int(n.removeprefix(PREFIX)) for n in label_queries(agent.authed("distributed/read").json())}

    assert sent(mac) == {everyone.pk, macs.pk, windows_or_mac.pk}
    assert sent(box) == {everyone.pk, linux.pk, ubuntu.pk}
    assert sent(win) == {everyone.pk, windows_or_mac.pk}


def test_labels_wait_until_the_hosts_platform_is_known(client, global_secret):
    dynamic("Macs", "SELECT 1", platform="darwin")
    dynamic("Everyone", "SELECT 1")
    agent = Agent(client, "bare")
    agent.details = {}
    agent.enroll(global_secret)
    body = agent.authed("distributed/read").json()
    assert label_queries(body) == {} and body["accelerate"] == 10

    details = {name: [] for name in body["queries"]}
    details["fleet_detail_query_os_version"] = [{"platform": "darwin", "name": "macOS", "major": "14"}]
    details["fleet_detail_query_system_info"] = [{"hostname": "bare.local", "uuid": "bare"}]
    agent.authed("distributed/write", {"queries": details, "statuses": {n: 0 for n in details}})
    assert len(label_queries(agent.authed("distributed/read").json())) == 2


def test_answers_for_unknown_or_deleted_labels_are_accepted_and_ignored(client, global_secret):
    gone = dynamic("Soon gone")
    gone_id = gone.pk
    agent = enroll(client, global_secret, "mac-a")
    queries = agent.authed("distributed/read").json()["queries"]
    labels.delete_label(gone)
    answer(
        agent, {**queries, f"{PREFIX}999999": "SELECT 1", f"{PREFIX}x": "SELECT 1"}, members={gone_id, 999999}
    )
    assert not LabelMembership.objects.filter(label_id__in=[gone_id, 999999]).exists()


def test_label_writes_reach_the_next_check_in(client, global_secret):
    agent = enroll(client, global_secret, "mac-a")
    assert label_queries(agent.authed("distributed/read").json()) == {}  # caches the (empty) list
    first = dynamic("First")
    assert set(label_queries(agent.authed("distributed/read").json())) == {f"{PREFIX}{first.pk}"}

    answer(agent, agent.authed("distributed/read").json()["queries"], members={first.pk})
    make_labels_due(agent)
    labels.update_label(first, query="SELECT 1 FROM processes WHERE name = 'zoom'")
    assert not member_ids(agent) & {first.pk}  # answers to the old query mean nothing now
    assert first.pk not in cached_label_ids(agent)
    assert label_queries(agent.authed("distributed/read").json()) == {f"{PREFIX}{first.pk}": first.query}

    labels.delete_label(first)
    assert label_queries(agent.authed("distributed/read").json()) == {}


def test_a_host_with_no_label_to_answer_stops_looking_once_it_writes(client, global_secret):
    dynamic("Windows only", "SELECT 1", platform="windows")
    agent = enroll(client, global_secret, "mac-a")
    answer(agent, agent.authed("distributed/read").json()["queries"])  # details only
    assert host_of(agent).label_updated_at > timezone.now() - timedelta(minutes=1)
    assert agent.authed("distributed/read").json() == {"queries": {}, "discovery": {}}


# --- builtin labels ------------------------------------------------------------------------------------


def test_builtin_labels_are_fleets_with_their_sql(builtins):
    stored = {label.name: label for label in Label.objects.filter(label_type=LabelType.BUILTIN)}
    assert set(stored) == {spec.name for spec in BUILTIN_LABELS}
    assert {"All Hosts", "macOS", "MS Windows", "Ubuntu Linux", "CentOS Linux", "Red Hat Linux"} <= set(
        stored
    )
    assert {"All Linux", "Fedora Linux", "chrome"} <= set(stored)
    assert stored["All Hosts"].query == "SELECT 1;"
    assert stored["macOS"].query == "SELECT 1 FROM os_version WHERE platform = 'darwin';"
    assert stored["macOS"].platform == "darwin"
    assert labels.ensure_builtin_labels() == sorted(builtins.values())  # idempotent


def test_builtin_labels_are_filled_at_enrolment_and_follow_the_platform(client, global_secret, builtins):
    mac = enroll(client, global_secret, "mac-a")
    box = enroll(client, global_secret, "box-1", platform="ubuntu", name="Ubuntu", platform_like="debian")
    win = enroll(client, global_secret, "win-1", platform="windows", name="Microsoft Windows 11 Pro")

    def names(agent: Agent) -> set[str]:
        ids = set(cached_label_ids(agent))
        assert ids == member_ids(agent)
        return {name for name, pk in builtins.items() if pk in ids}

    assert names(mac) == {"All Hosts", "macOS", "macOS 14+ (Sonoma+)"}
    assert names(box) == {"All Hosts", "Ubuntu Linux", "All Linux"}
    assert names(win) == {"All Hosts", "MS Windows"}
    # Builtins are decided by the server, never sent to agents.
    assert label_queries(mac.authed("distributed/read").json()) == {}

    # The box is reinstalled as RHEL: its details move it between builtins.
    body = box.authed("distributed/read").json()
    rows = {name: [] for name in body["queries"]}
    rows["fleet_detail_query_os_version"] = [
        {"platform": "rhel", "platform_like": "fedora", "name": "Red Hat Enterprise Linux", "version": "9.4"}
    ]
    box.authed("distributed/write", {"queries": rows, "statuses": {n: 0 for n in rows}})
    assert names(box) == {"All Hosts", "Red Hat Linux", "All Linux"}


def test_installing_builtins_fills_them_for_existing_hosts():
    Label.objects.filter(label_type=LabelType.BUILTIN).delete()
    cache.clear()
    Host.objects.bulk_create(  # bulk_create skips signals, as hosts from before the migration
        [
            Host(osquery_host_id="a", platform="darwin", os_version="macOS 13.6.1"),
            Host(osquery_host_id="b", platform="centos", platform_like="rhel", os_version="CentOS Linux 7"),
            Host(osquery_host_id="c", platform="fedora", os_version="Fedora Linux 40"),
        ]
    )
    labels.ensure_builtin_labels()
    ids = labels.builtin_label_ids()

    def names(identifier: str) -> set[str]:
        pks = set(
            LabelMembership.objects.filter(host__osquery_host_id=identifier).values_list(
                "label_id", flat=True
            )
        )
        return {name for name, pk in ids.items() if pk in pks}

    assert names("a") == {"All Hosts", "macOS"}  # 13: not Sonoma+
    assert names("b") == {"All Hosts", "CentOS Linux", "All Linux"}
    assert names("c") == {"All Hosts", "Fedora Linux", "All Linux"}


def test_builtin_labels_cannot_be_changed_or_deleted(builtins):
    mac = Label.objects.get(pk=builtins["macOS"])
    with pytest.raises(PermissionDenied, match="builtin"):
        labels.update_label(mac, description="mine now")
    with pytest.raises(PermissionDenied, match="builtin"):
        labels.delete_label(mac)
    with pytest.raises(ValidationError, match="builtin"):
        labels.create_label(name="macos", query="SELECT 1")


# --- manual labels --------------------------------------------------------------------------------------


def test_manual_labels_list_their_hosts_and_are_never_sent(client, global_secret):
    mac = enroll(client, global_secret, "mac-a")
    box = enroll(client, global_secret, "box-1", platform="ubuntu")
    other = make_host("db-1", hardware_serial="SER-9")
    host = host_of(mac)
    vip = labels.create_label(
        name="VIPs", label_membership_type=LabelMembershipType.MANUAL, hosts=[host.pk, "box-1.local", "SER-9"]
    )
    assert set(vip.hosts.values_list("pk", flat=True)) == {host.pk, host_of(box).pk, other.pk}
    assert vip.pk in cached_label_ids(mac)
    assert label_queries(mac.authed("distributed/read").json()) == {}

    labels.update_label(vip, hosts=[host.uuid])  # replaces the list
    assert set(vip.hosts.values_list("pk", flat=True)) == {host.pk}
    assert vip.pk not in cached_label_ids(box)

    with pytest.raises(ValidationError) as exc:
        labels.update_label(vip, hosts=["nope", "mac-a.local", "missing-2"])
    assert exc.value.message_dict["hosts"] == ["Unknown host(s): nope, missing-2."]
    assert set(vip.hosts.values_list("pk", flat=True)) == {host.pk}  # nothing changed


def test_label_fields_are_checked():
    with pytest.raises(ValidationError) as exc:
        labels.create_label(name="", query="SELEC 1", platform="beos")
    errors = exc.value.message_dict
    assert set(errors) == {"name", "query", "platform"}
    assert "syntax error" in errors["query"][0]
    with pytest.raises(ValidationError) as exc:
        labels.create_label(name="M", label_membership_type="manual", query="SELECT 1")
    assert "no query" in exc.value.message_dict["query"][0]
    with pytest.raises(ValidationError) as exc:
        labels.create_label(name="D", query="SELECT 1", hosts=["x"])
    assert "manual" in exc.value.message_dict["hosts"][0]
    dynamic("Taken")
    with pytest.raises(ValidationError, match="already exists"):
        dynamic("taken")
    label = dynamic("Mine")
    with pytest.raises(ValidationError, match="cannot change"):
        labels.update_label(label, label_membership_type="manual")


# --- campaigns target labels ------------------------------------------------------------------------


def test_campaigns_target_labels_by_id_and_by_name(client, global_secret, admin, builtins):
    chrome = dynamic("Has Chrome")
    agents = [enroll(client, global_secret, f"mac-{i}") for i in range(3)]
    for i, agent in enumerate(agents):
        answer(agent, agent.authed("distributed/read").json()["queries"], members={chrome.pk} if i else set())
    by_id = campaigns.create_campaign(admin, "SELECT 1", {"labels": [chrome.pk]})
    assert by_id.targeted_count == 2
    by_name = campaigns.create_campaign(admin, "SELECT 1", {"labels": ["Has Chrome", "macOS"]})
    assert by_name.targeted_count == 3
    with pytest.raises(campaigns.CampaignError, match=r"unknown label\(s\): nope, 424242"):
        campaigns.create_campaign(admin, "SELECT 1", {"labels": ["nope", 424242, str(chrome.pk)]})


# --- the check-in's cost ----------------------------------------------------------------------------------


@pytest.mark.parametrize("label_count", [5, 50])
def test_check_in_query_count_does_not_grow_with_labels(client, global_secret, label_count):
    created = [
        dynamic(f"label-{i}", "SELECT 1", platform="darwin" if i % 2 else "") for i in range(label_count)
    ]
    agents = [enroll(client, global_secret, f"mac-{i}") for i in range(3)]
    agents[0].authed("distributed/read")  # fills the cached label list

    probe = agents[1]
    with CaptureQueriesContext(connection) as due_read:
        body = probe.authed("distributed/read").json()
    assert len(label_queries(body)) == label_count
    assert len(due_read) == 0, [q["sql"] for q in due_read]

    with CaptureQueriesContext(connection) as write:
        answer(probe, body["queries"], members={label.pk for label in created[::2]})
    # details (software: one more, its digest) + labels, whatever the number of labels
    assert len(write) <= 13, [q["sql"] for q in write]
    label_writes = [
        q["sql"] for q in write if "label" in q["sql"].lower() and "select" not in q["sql"][:7].lower()
    ]
    assert len(label_writes) <= 3, label_writes  # one DELETE, one INSERT, the host's label_updated_at

    with CaptureQueriesContext(connection) as warm:
        assert probe.authed("distributed/read").json() == {"queries": {}, "discovery": {}}
    assert len(warm) == 0
    cache.clear()
    with CaptureQueriesContext(connection) as cold:
        probe.authed("distributed/read")
    assert len(cold) == 1  # the node key (joined to the host's label ids): labels are not due, no label list


# --- console ------------------------------------------------------------------------------------------------

LABELS = "/admin/hosts/label/"


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def test_console_lists_labels_with_host_counts(admin_client, client, global_secret, builtins):
    enroll(client, global_secret, "mac-a")
    enroll(client, global_secret, "mac-b")
    dynamic("Has Chrome")
    page = admin_client.get(LABELS)
    assert page.status_code == 200
    rows = {label.name: label.host_count for label in page.context["cl"].result_list}
    assert (
        rows["All Hosts"] == 2 and rows["macOS"] == 2 and rows["MS Windows"] == 0 and rows["Has Chrome"] == 0
    )
    assert f'href="/admin/hosts/host/?label_id={builtins["macOS"]}"' in page.content.decode()

    hosts = admin_client.get(f"/admin/hosts/host/?label_id={builtins['macOS']}")
    assert {h.hostname for h in hosts.context["cl"].result_list} == {"mac-a.local", "mac-b.local"}
    none = admin_client.get(f"/admin/hosts/host/?label_id={builtins['MS Windows']}")
    assert list(none.context["cl"].result_list) == []


def test_console_builtin_label_page_is_read_only_with_members(admin_client, client, global_secret, builtins):
    enroll(client, global_secret, "mac-a")
    url = f"{LABELS}{builtins['macOS']}/change/"
    page = admin_client.get(url).content.decode()
    assert "mac-a" in page and "Builtin (maintained by Fleet)" in page
    assert "SELECT 1 FROM os_version WHERE platform = &#x27;darwin&#x27;;" in page
    assert 'name="_save"' not in page
    response = admin_client.post(url, {"name": "Mine", "query": "SELECT 1"})
    assert response.status_code == 403
    assert admin_client.post(f"{LABELS}{builtins['macOS']}/delete/", {"post": "yes"}).status_code == 403
    assert Label.objects.get(pk=builtins["macOS"]).name == "macOS"


def test_console_creates_labels_and_shows_sql_errors(admin_client, client, global_secret):
    mac = enroll(client, global_secret, "mac-a")
    form = admin_client.get(f"{LABELS}add/").content.decode()
    assert "font-family: monospace" in form

    bad = admin_client.post(
        f"{LABELS}add/", {"name": "Broken", "label_membership_type": "dynamic", "query": "SELEC 1"}
    )
    assert bad.status_code == 200
    assert "SQL syntax error" in bad.content.decode() and not Label.objects.filter(name="Broken").exists()

    ok = admin_client.post(
        f"{LABELS}add/",
        {
            "name": "Chrome users",
            "label_membership_type": "dynamic",
            "platform": "darwin",
            "query": "SELECT 1",
        },
    )
    assert ok.status_code == 302
    chrome = Label.objects.get(name="Chrome users")
    assert chrome.platform == "darwin"
    assert f"{PREFIX}{chrome.pk}" in mac.authed("distributed/read").json()["queries"]

    manual = admin_client.post(
        f"{LABELS}add/", {"name": "Pets", "label_membership_type": "manual", "hosts": "mac-a.local\n"}
    )
    assert manual.status_code == 302
    pets = Label.objects.get(name="Pets")
    assert list(pets.hosts.values_list("hostname", flat=True)) == ["mac-a.local"]
    assert pets.pk in cached_label_ids(mac)

    edit = admin_client.get(f"{LABELS}{pets.pk}/change/").content.decode()
    assert "mac-a" in edit  # the uuid in the list, the host among the members
    cleared = admin_client.post(f"{LABELS}{pets.pk}/change/", {"name": "Pets", "hosts": ""})
    assert cleared.status_code == 302 and not pets.hosts.exists()


def test_console_observers_look_but_do_not_change(client, builtins):
    from django.contrib.auth.models import Permission

    from hosts.choices import Role
    from tests.factories import user_with_role

    user = user_with_role("obs", Role.OBSERVER)
    user.is_staff = True
    user.save()
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_label", "add_label", "change_label"])
    )
    client.force_login(user)
    label = dynamic("Has Chrome")
    assert client.get(LABELS).status_code == 200
    assert client.get(f"{LABELS}add/").status_code == 403
    page = client.get(f"{LABELS}{label.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.post(f"{LABELS}{label.pk}/change/", {"name": "Mine"}).status_code == 403
