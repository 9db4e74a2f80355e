"""Console: the query library (SQL editor, parser errors, schema warnings, roles) and packs
(scheduled queries inline, targets), through the real admin pages."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from hosts.choices import Role
from hosts.models import Label, Team, UserRole
from packs.models import Pack, ScheduledQuery
from queries.models import Query
from tests.agent import Agent

pytestmark = pytest.mark.django_db
QUERIES = "/admin/queries/query/"
PACKS = "/admin/packs/pack/"


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def query_form(**fields) -> dict:
    data = {
        "name": "Listening ports",
        "description": "",
        "query": "SELECT pid, port FROM listening_ports",
        "team": "",
        "min_osquery_version": "",
        "interval": "0",
        "logging": "snapshot",
    }
    data.update(fields)
    return data


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- query library ----------------------------------------------------------------------------------------


def test_query_list_shows_team_platform_interval_and_logging(admin_client, team):
    Query.objects.create(name="uptime", query="SELECT * FROM uptime", interval=3660, platform="darwin,linux")
    Query.objects.create(name="eng users", query="SELECT * FROM users", team=team, logging="differential")
    page = admin_client.get(QUERIES).content.decode()
    for text in (
        "uptime",
        "Global",
        "darwin, linux",
        "1 h 1 min",
        "eng users",
        "Engineering",
        "not scheduled",
    ):
        assert text in page
    assert "Differential" in page
    filtered = admin_client.get(QUERIES, {"scheduled": "1"})
    assert [q.name for q in filtered.context["cl"].result_list] == ["uptime"]
    by_team = admin_client.get(QUERIES, {"team_id": "0"})
    assert [q.name for q in by_team.context["cl"].result_list] == ["uptime"]


def test_add_form_has_a_monospace_sql_editor(admin_client):
    page = admin_client.get(f"{QUERIES}add/").content.decode()
    assert 'spellcheck="false"' in page and "monospace" in page


def test_syntax_error_is_a_form_error_on_the_sql(admin_client):
    response = admin_client.post(f"{QUERIES}add/", query_form(query="SELECT pid port FROM FROM x"))
    assert response.status_code == 200
    assert "syntax error" in " ".join(response.context["adminform"].form.errors["query"])
    assert not Query.objects.exists()


def test_unknown_table_saves_with_a_warning_message(admin_client):
    response = admin_client.post(
        f"{QUERIES}add/", query_form(query="SELECT * FROM registry", platform=["darwin"]), follow=True
    )
    query = Query.objects.get()
    assert query.platform == "darwin" and query.author.username == "root"
    assert any("'registry' is not available on darwin" in m for m in messages_of(response))
    page = admin_client.get(f"{QUERIES}{query.pk}/change/").content.decode()
    assert "not available on darwin" in page  # the schema check on the query's page


def test_duplicate_name_is_a_form_error(admin_client):
    Query.objects.create(name="Listening ports", query="SELECT 1")
    response = admin_client.post(f"{QUERIES}add/", query_form())
    assert "already exists" in " ".join(response.context["adminform"].form.errors["name"])


def _staff(username: str, role: str, team: Team | None, *models: str):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    codenames = [f"{action}_{model}" for model in models for action in ("view", "add", "change", "delete")]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    UserRole.objects.create(user=user, team=team, role=role)
    return user


def test_team_maintainer_saves_only_team_queries(client, team):
    other = Team.objects.create(name="Sales")
    global_query = Query.objects.create(name="global", query="SELECT 1")
    theirs = Query.objects.create(name="theirs", query="SELECT 1", team=other)
    client.force_login(_staff("tm", Role.MAINTAINER, team, "query"))
    form = client.get(f"{QUERIES}add/").context["adminform"].form
    assert list(form.fields["team"].queryset) == [team] and form.fields["team"].required
    response = client.post(f"{QUERIES}add/", query_form(team=str(other.pk)))
    assert "team" in response.context["adminform"].form.errors
    response = client.post(f"{QUERIES}add/", query_form(team=str(team.pk)))
    assert response.status_code == 302 and Query.objects.filter(team=team).exists()
    listed = {q.name for q in client.get(QUERIES).context["cl"].result_list}
    assert listed == {"global", "Listening ports"}  # global ones are readable, other teams' are not
    page = client.get(f"{QUERIES}{global_query.pk}/change/")
    assert page.status_code == 200 and not page.context["has_change_permission"]  # read-only view
    assert client.post(f"{QUERIES}{global_query.pk}/change/", query_form(name="hacked")).status_code == 403
    assert client.get(f"{QUERIES}{theirs.pk}/change/").status_code == 302  # not visible: redirected


# --- packs --------------------------------------------------------------------------------------------------


def pack_form(**fields) -> dict:
    data = {
        "name": "monitoring",
        "description": "",
        "platform": "",
        "scheduled-TOTAL_FORMS": "0",
        "scheduled-INITIAL_FORMS": "0",
        "scheduled-MIN_NUM_FORMS": "0",
        "scheduled-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


def scheduled_row(index: int, query: Query, **fields) -> dict:
    row = {"query": str(query.pk), "name": "", "interval": "60", "platform": "", "version": "", "shard": ""}
    row.update(fields)
    return {f"scheduled-{index}-{k}": v for k, v in row.items()}


def test_pack_with_inline_scheduled_queries_and_targets_reaches_the_config(
    admin_client, client, team, team_secret
):
    query = Query.objects.create(name="ports", query="SELECT * FROM listening_ports")
    label = Label.objects.create(name="Servers", query="SELECT 1")
    data = pack_form(
        target_teams=[str(team.pk)],
        target_labels=[str(label.pk)],
        **{"scheduled-TOTAL_FORMS": "2"},
        **scheduled_row(0, query, shard="100", snapshot="true"),
        **scheduled_row(1, query, name="ports hourly", interval="3600"),
    )
    response = admin_client.post(f"{PACKS}add/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    pack = Pack.objects.get()
    assert sorted(pack.scheduled.values_list("name", flat=True)) == ["ports", "ports hourly"]
    assert list(pack.target_teams.all()) == [team] and list(pack.target_labels.all()) == [label]
    agent = Agent(client, "mac-x")
    agent.enroll(team_secret)
    assert set(agent.authed("config").json()["packs"]["monitoring"]["queries"]) == {"ports", "ports hourly"}
    listing = admin_client.get(PACKS).content.decode()
    assert "1 label(s), 1 team(s)" in listing


def test_pack_form_errors(admin_client):
    query = Query.objects.create(name="ports", query="SELECT 1")
    response = admin_client.post(f"{PACKS}add/", pack_form(name="Global"))
    assert "reserved" in " ".join(response.context["adminform"].form.errors["name"])
    response = admin_client.post(
        f"{PACKS}add/", pack_form(**{"scheduled-TOTAL_FORMS": "1"}, **scheduled_row(0, query, interval="0"))
    )
    assert response.status_code == 200
    [inline] = response.context["inline_admin_formsets"]
    assert "interval" in inline.formset.forms[0].errors
    response = admin_client.post(
        f"{PACKS}add/", pack_form(**{"scheduled-TOTAL_FORMS": "1"}, **scheduled_row(0, query, shard="150"))
    )
    assert "shard" in response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert not Pack.objects.exists() and not ScheduledQuery.objects.exists()


def test_pack_change_page_lists_scheduled_queries_inline(admin_client):
    query = Query.objects.create(name="ports", query="SELECT 1")
    pack = Pack.objects.create(name="p")
    ScheduledQuery.objects.create(pack=pack, query=query, name="open ports", interval=60)
    page = admin_client.get(f"{PACKS}{pack.pk}/change/").content.decode()
    assert "open ports" in page and "Targets" in page


def test_packs_need_a_global_role_in_the_console(client, team):
    client.force_login(_staff("teamadmin", Role.ADMIN, team, "pack", "scheduledquery"))
    assert client.get(PACKS).status_code == 403
    client.force_login(_staff("observer", Role.OBSERVER, None, "pack", "scheduledquery"))
    assert client.get(PACKS).status_code == 200
    assert client.get(f"{PACKS}add/").status_code == 403


def test_query_library_links_each_query_to_the_live_query_page(admin_client):
    from urllib.parse import quote_plus

    from queries.models import Query

    query = Query.objects.create(name="uptime", query="SELECT * FROM uptime")
    page = admin_client.get(QUERIES).content.decode()
    assert f"/admin/campaigns/campaign/new/?query_id={query.pk}" in page
    saved = admin_client.get(f"/admin/campaigns/campaign/new/?query_id={query.pk}").content.decode()
    assert "Saved query: uptime" in saved and "disabled" in saved  # runs as saved, SQL not editable
    response = admin_client.get(f"/admin/campaigns/campaign/new/?sql={quote_plus('SELECT * FROM uptime')}")
    assert "SELECT * FROM uptime</textarea>" in response.content.decode()
