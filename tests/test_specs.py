"""Configuration as code: ``manage.py apply`` / ``export`` with Fleet's YAML specs.

Every file in ``tests/data/fleet/`` (copies of Fleet's files) is applied; the expected counts
come from parsing the same file here with PyYAML, independently of the importer.
"""

from __future__ import annotations

import io
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from hosts.models import EnrollSecret, FleetSettings, Label, LabelMembership, LabelType, Team
from packs.models import Pack, ScheduledQuery
from packs.spec import SpecError, apply_documents, parse_yaml
from queries.models import Query
from tests.factories import make_host

pytestmark = pytest.mark.django_db

FLEET = Path(__file__).resolve().parent / "data" / "fleet"
MULTI = FLEET / "multi-file"


def documents_of(*paths: Path) -> list[dict]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def kinds(*paths: Path) -> Counter:
    """Documents per kind, ``report`` counted as ``query`` (they are the same thing)."""
    return Counter("query" if d["kind"] == "report" else d["kind"] for d in documents_of(*paths))


def run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    if stdin is not None:
        import sys

        saved, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command(*args, stdout=out, stderr=io.StringIO())
        finally:
            sys.stdin = saved
    else:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def apply_files(*paths: Path, dry_run: bool = False) -> str:
    args = ["apply"]
    for path in paths:
        args += ["-f", str(path)]
    return run(*args, *(["--dry-run"] if dry_run else []))


def write(tmp_path: Path, text: str, name: str = "specs.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def plan_of(text: str, **kwargs):
    return apply_documents(parse_yaml(textwrap.dedent(text), "test.yml"), **kwargs)


def counts() -> dict[str, int]:
    return {
        "queries": Query.objects.count(),
        "labels": Label.objects.exclude(label_type=LabelType.BUILTIN).count(),
        "packs": Pack.objects.count(),
        "scheduled": ScheduledQuery.objects.count(),
        "teams": Team.objects.count(),
        "secrets": EnrollSecret.objects.count(),
    }


EMPTY = {"queries": 0, "labels": 0, "packs": 0, "scheduled": 0, "teams": 0, "secrets": 0}


# --- Fleet's files ----------------------------------------------------------------------------------


def test_single_file_configuration():
    path = FLEET / "single-file-configuration.yml"
    docs = documents_of(path)
    expected = kinds(path)
    assert expected == {"query": 15, "label": 2, "pack": 1, "config": 1, "enroll_secret": 1}

    out = apply_files(path)

    assert "Applied." in out
    assert Query.objects.count() == expected["query"]
    assert Label.objects.filter(label_type=LabelType.REGULAR).count() == expected["label"]
    assert Pack.objects.count() == expected["pack"]
    pack_doc = next(d for d in docs if d["kind"] == "pack")["spec"]
    pack = Pack.objects.get(name=pack_doc["name"])
    scheduled = {sq.name: sq for sq in pack.scheduled.select_related("query")}
    assert len(scheduled) == len(pack_doc["queries"]) == 5
    # The same saved query is scheduled twice under two names.
    assert scheduled["osquery_version_snapshot"].query == scheduled["osquery_version_differential"].query
    assert scheduled["osquery_version_snapshot"].snapshot is True
    assert scheduled["osquery_version_differential"].snapshot is None
    assert scheduled["osquery_events"].interval == 86400 and scheduled["osquery_events"].removed is False
    assert scheduled["osquery_schedule"].query.name == "osquery_schedule"
    # Secrets, agent options, labels whose "query" names a saved query.
    secrets = next(d for d in docs if d["kind"] == "enroll_secret")["spec"]["secrets"]
    assert set(EnrollSecret.objects.filter(team=None).values_list("secret", flat=True)) == {
        s["secret"] for s in secrets
    }
    config = next(d for d in docs if d["kind"] == "config")["spec"]
    assert FleetSettings.load().agent_options == config["agent_options"]
    label = Label.objects.get(name="slack_not_running")
    assert label.query == Query.objects.get(name="slack_not_running").query
    assert label.query.startswith("SELECT * from system_info")
    assert Label.objects.get(name="pending_updates").platform == "darwin"  # from `platforms: [darwin]`
    for doc in docs:
        if doc["kind"] == "query":
            query = Query.objects.get(name=doc["spec"]["name"], team=None)
            assert query.query == doc["spec"]["query"].strip()
            assert query.description == (doc["spec"].get("description") or "")
    assert 'note: query taken from the saved query "pending_updates"' in out
    assert "settings not supported yet, ignored: host_expiry_settings, host_settings, org_info" in out


def test_multi_file_configuration_applied_together():
    files = [MULTI / name for name in ("queries.yml", "labels.yml", "team.yml", "organization-settings.yml")]
    expected = kinds(*files)
    assert expected == {"query": 15, "label": 2, "team": 1, "config": 1}

    apply_files(*files)

    assert Query.objects.count() == expected["query"]
    assert Label.objects.filter(label_type=LabelType.REGULAR).count() == expected["label"]
    team_doc = documents_of(MULTI / "team.yml")[0]["spec"]["team"]
    team = Team.objects.get(name="Client Platform Engineerin")  # sic, as in Fleet's file
    assert team.agent_options == team_doc["agent_options"]
    assert list(team.secrets.values_list("secret", flat=True)) == [s["secret"] for s in team_doc["secrets"]]
    # The document with apiVersion twice still counts, and the typo key is ignored (reported).
    assert Query.objects.filter(name="osquery_events").exists()
    assert Query.objects.get(name="docker_processes").description == ""


def test_multi_file_enroll_secrets_alone():
    path = MULTI / "enroll-secrets.yml"
    secrets = documents_of(path)[0]["spec"]["secrets"]
    apply_files(path)
    assert list(EnrollSecret.objects.filter(team=None).order_by("id").values_list("secret", flat=True)) == [
        s["secret"] for s in secrets
    ]


def test_multi_file_secret_cannot_belong_to_the_team_and_the_global_scope():
    """Fleet's example lists one secret both for the team and globally: refused, clearly."""
    every = sorted(MULTI.glob("*.yml"))
    assert len(every) == 5
    with pytest.raises(CommandError) as raised:
        apply_files(*every)
    message = str(raised.value)
    assert "nothing was applied" in message
    assert "enroll-secrets.yml, document 1 (enroll_secret)" in message
    assert 'is also listed for team "Client Platform Engineerin"' in message
    assert counts() == EMPTY
    # Applied one after the other, the second one meets the secret already in use.
    apply_files(MULTI / "team.yml")
    with pytest.raises(CommandError, match='already used by team "Client Platform Engineerin"'):
        apply_files(MULTI / "enroll-secrets.yml")
    assert EnrollSecret.objects.filter(team=None).count() == 0


@pytest.mark.parametrize(
    ("name", "query_count", "skipped"),
    [("standard-query-library.yml", 50, 48), ("standard-query-library-2021.yml", 41, 0)],
)
def test_standard_query_libraries(name, query_count, skipped):
    path = FLEET / name
    expected = kinds(path)
    assert expected["query"] == query_count and expected.get("policy", 0) == skipped

    out = apply_files(path)

    assert Query.objects.count() == expected["query"]
    assert out.count("skipped   policy") == skipped
    assert f"{query_count} to create, 0 to update, 0 to delete, 0 unchanged, {skipped} skipped." in out
    for doc in documents_of(path):
        if doc["kind"] in ("query", "report"):
            assert Query.objects.get(name=doc["spec"]["name"]).query == doc["spec"]["query"].strip()


def test_current_library_fields_and_skipped_policies():
    out = apply_files(FLEET / "standard-query-library.yml")
    assert Query.objects.get(name="Get crashes").platform == "darwin"
    # "darwin,linux,windows" and "darwin, linux, windows" end up the same.
    platforms = set(Query.objects.values_list("platform", flat=True))
    assert "darwin,linux,windows" in platforms and not any(" " in p for p in platforms)
    assert (
        'skipped   policy "Ensure auto-update is enabled" (' in out
        and "policies are not supported yet" in out
    )
    assert "report specs: keys this server does not use, ignored: contributors (50)" in out


def test_2021_library_maps_display_platform_names():
    apply_files(FLEET / "standard-query-library-2021.yml")
    assert (
        Query.objects.get(name="Get installed Chrome Extensions").platform == "darwin,linux,windows,freebsd"
    )
    assert Query.objects.get(name="Detect presence of authorized SSH keys").platform == "darwin,linux"
    nulls = [d["spec"]["name"] for d in documents_of(FLEET / "standard-query-library-2021.yml")]
    nulls = [n for n in nulls if not Query.objects.get(name=n).description]
    assert len(nulls) == 2  # the two specs whose description is null


def test_libraries_update_each_other_by_name():
    apply_files(FLEET / "standard-query-library-2021.yml")
    out = apply_files(FLEET / "standard-query-library.yml")
    both = {d["spec"]["name"] for d in documents_of(FLEET / "standard-query-library-2021.yml")} & {
        d["spec"]["name"] for d in documents_of(FLEET / "standard-query-library.yml") if d["kind"] == "report"
    }
    assert both  # e.g. "Get crashes"
    assert Query.objects.count() == 41 + 50 - len(both)
    assert 'update    query "Get installed Chrome Extensions"' in out
    assert Query.objects.get(name="Get installed Chrome Extensions").platform == "darwin,linux,windows"


def test_pack_example_with_its_queries():
    path = FLEET / "pack-example.yml"
    pack_doc = documents_of(path)[0]["spec"]
    apply_files(MULTI / "queries.yml", path)
    pack = Pack.objects.get(name=pack_doc["name"])
    assert pack.scheduled.count() == len(pack_doc["queries"]) == 5
    snapshot = pack.scheduled.get(name="osquery_version_snapshot")
    assert snapshot.platform == "posix,linux,darwin"  # "posix,linux, darwin" normalised
    assert snapshot.interval == 7200 and snapshot.snapshot is True
    assert pack.target_labels.count() == pack.target_teams.count() == 0  # no targets in the file


# --- plan, dry run, second apply, updates --------------------------------------------------------------


def test_dry_run_changes_nothing_and_prints_the_plan():
    out = apply_files(FLEET / "single-file-configuration.yml", dry_run=True)
    assert 'create    query "osquery_version"' in out
    assert 'create    pack "osquery_monitoring"' in out
    assert 'create    enroll_secret "global"' in out
    assert "19 to create, 1 to update, 0 to delete, 0 unchanged, 0 skipped." in out
    assert "Dry run: nothing was changed." in out
    assert counts() == EMPTY
    assert not FleetSettings.objects.exists()


def test_second_apply_is_all_unchanged():
    files = [FLEET / "single-file-configuration.yml", FLEET / "standard-query-library.yml"]
    apply_files(*files)
    before = counts()
    plan = apply_documents([d for f in files for d in parse_yaml(f.read_text(), f.name)])
    assert {change.action for change in plan.changes} == {"unchanged"}
    assert plan.summary()["unchanged"] == len(plan.changes) == 15 + 2 + 1 + 1 + 1 + 50
    assert counts() == before


def test_update_by_name(tmp_path):
    spec = """
        apiVersion: v1
        kind: query
        spec:
          name: uptime
          query: SELECT * FROM uptime;
          interval: 3600
        """
    apply_files(write(tmp_path, spec))
    query = Query.objects.get(name="uptime")
    changed = spec.replace("interval: 3600", "interval: 600\n          description: How long up")
    out = apply_files(write(tmp_path, changed))
    assert 'update    query "uptime"' in out
    assert "interval: 3600 -> 600" in out and "description: '' -> 'How long up'" in out
    query.refresh_from_db()
    assert (query.interval, query.description) == (600, "How long up")
    assert Query.objects.count() == 1
    # A key left out returns to its default, as in Fleet (the spec is the whole object).
    apply_files(write(tmp_path, spec))
    query.refresh_from_db()
    assert (query.interval, query.description) == (3600, "")


def test_report_kind_and_team_queries(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: v1
        kind: report
        spec:
          name: os
          query: SELECT * FROM os_version;
          team: Servers
          platform: linux
          logging: differential
          observer_can_run: true
          automations_enabled: true
          discard_data: true
          min_osquery_version: 5.12.1
          interval: 300
        ---
        apiVersion: v1
        kind: query
        spec: {name: os, query: "SELECT name FROM os_version;"}
        ---
        apiVersion: v1
        kind: team
        spec: {team: {name: Servers}}
        """,
    )
    apply_files(path)
    team_query = Query.objects.get(name="os", team__name="Servers")
    assert (team_query.platform, team_query.logging, team_query.interval) == ("linux", "differential", 300)
    assert team_query.observer_can_run and team_query.automations_enabled and team_query.discard_data
    assert team_query.min_osquery_version == "5.12.1"
    assert Query.objects.get(name="os", team=None).query == "SELECT name FROM os_version;"


def test_pack_before_its_queries_in_the_same_apply(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: v1
        kind: pack
        spec:
          name: early
          targets: {labels: [Linux boxes], teams: [Ops]}
          queries:
            - {query: later, interval: "60", shard: 50, denylist: false, version: "5.0"}
        ---
        apiVersion: v1
        kind: label
        spec: {name: Linux boxes, query: "SELECT 1 FROM os_version WHERE platform = 'ubuntu';"}
        ---
        apiVersion: v1
        kind: query
        spec: {name: later, query: SELECT 1;}
        ---
        apiVersion: v1
        kind: team
        spec: {team: {name: Ops}}
        """,
    )
    apply_files(path)
    pack = Pack.objects.get(name="early")
    sq = pack.scheduled.get()
    assert (sq.name, sq.query.name, sq.interval, sq.shard, sq.denylist, sq.version) == (
        "later",
        "later",
        60,
        50,
        False,
        "5.0",
    )
    assert [label.name for label in pack.target_labels.all()] == ["Linux boxes"]
    assert [team.name for team in pack.target_teams.all()] == ["Ops"]


def test_pack_spec_replaces_scheduled_queries_and_targets(tmp_path):
    base = """
        apiVersion: v1
        kind: query
        spec: {name: a, query: SELECT 1;}
        ---
        apiVersion: v1
        kind: query
        spec: {name: b, query: SELECT 2;}
        ---
        apiVersion: v1
        kind: team
        spec: {team: {name: Ops}}
        ---
        apiVersion: v1
        kind: pack
        spec:
          name: p
          targets: {teams: [Ops]}
          queries: [{query: a, interval: 60}, {query: b, interval: 60}]
        """
    apply_files(write(tmp_path, base))
    out = apply_files(
        write(
            tmp_path,
            base.replace("targets: {teams: [Ops]}", "disabled: true").replace(
                "[{query: a, interval: 60}, {query: b, interval: 60}]", "[{query: b, interval: 120}]"
            ),
        )
    )
    assert "queries.a: removed" in out and "queries.b.interval: 60 -> 120" in out
    pack = Pack.objects.get(name="p")
    assert pack.disabled and pack.target_teams.count() == 0
    assert list(pack.scheduled.values_list("name", "interval")) == [("b", 120)]


def test_manual_label_lists_hosts(tmp_path):
    make_host("web-1", hardware_serial="C02SERIAL")
    web2 = make_host("web-2")
    make_host("db-1")
    spec = """
        apiVersion: v1
        kind: label
        spec:
          name: Web servers
          label_membership_type: manual
          hosts: [web-1, uuid-web-2]
        """
    apply_files(write(tmp_path, spec))
    label = Label.objects.get(name="Web servers")
    assert label.label_membership_type == "manual"
    assert sorted(label.hosts.values_list("hostname", flat=True)) == ["web-1", "web-2"]
    out = apply_files(write(tmp_path, spec.replace("[web-1, uuid-web-2]", "[C02SERIAL, db-1]")))
    assert 'update    label "Web servers"' in out
    assert sorted(label.hosts.values_list("hostname", flat=True)) == ["db-1", "web-1"]
    assert not LabelMembership.objects.filter(label=label, host=web2).exists()


def test_agent_options_reach_the_served_config(tmp_path, agent):
    assert agent.authed("config").json()["options"]["distributed_interval"] == 10
    apply_files(
        write(
            tmp_path,
            """
            apiVersion: v1
            kind: config
            spec:
              agent_options:
                config:
                  options: {distributed_interval: 42, logger_tls_period: 10}
            """,
        )
    )
    assert agent.authed("config").json()["options"]["distributed_interval"] == 42


def test_pack_targeting_a_team_reaches_its_hosts_config(client, tmp_path):
    from tests.agent import Agent

    path = write(
        tmp_path,
        """
        apiVersion: v1
        kind: team
        spec: {team: {name: Ops, secrets: [{secret: ops-secret-1}]}}
        ---
        apiVersion: v1
        kind: query
        spec: {name: uptime, query: SELECT * FROM uptime;}
        ---
        apiVersion: v1
        kind: pack
        spec:
          name: ops-pack
          targets: {teams: [Ops]}
          queries: [{query: uptime, interval: 300}]
        """,
    )
    apply_files(path)
    member = Agent(client, "uuid-ops")
    assert "node_key" in member.enroll("ops-secret-1")
    config = member.authed("config").json()
    assert config["packs"]["ops-pack"]["queries"]["uptime"]["interval"] == 300
    assert config["packs"]["ops-pack"]["queries"]["uptime"]["query"] == "SELECT * FROM uptime;"


def test_secrets_replace_their_scope_and_may_move(tmp_path):
    EnrollSecret.objects.create(secret="old-global-secret")
    apply_files(
        write(
            tmp_path,
            """
            apiVersion: v1
            kind: enroll_secret
            spec: {secrets: [{secret: kept-global-secret}]}
            ---
            apiVersion: v1
            kind: team
            spec: {team: {name: Ops, secrets: [{secret: old-global-secret}]}}
            """,
        )
    )
    assert list(EnrollSecret.objects.filter(team=None).values_list("secret", flat=True)) == [
        "kept-global-secret"
    ]
    assert EnrollSecret.objects.get(secret="old-global-secret").team.name == "Ops"
    # A team spec without secrets leaves them alone.
    apply_files(write(tmp_path, "apiVersion: v1\nkind: team\nspec: {team: {name: Ops, description: x}}\n"))
    assert Team.objects.get(name="Ops").secrets.count() == 1


def test_stdin_and_several_files(tmp_path):
    query = write(tmp_path, "apiVersion: v1\nkind: query\nspec: {name: q, query: SELECT 1;}\n", "q.yml")
    pack = "apiVersion: v1\nkind: pack\nspec: {name: p, queries: [{query: q, interval: 10}]}\n"
    out = run("apply", "-f", str(query), "-f", "-", stdin=pack)
    assert 'create    pack "p"' in out
    assert Pack.objects.get(name="p").scheduled.get().query.name == "q"


# --- errors: nothing applied ---------------------------------------------------------------------------

VALID = """
apiVersion: v1
kind: query
spec: {name: fine, query: SELECT 1;}
"""


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "apiVersion: v1\nkind: query\nspec: {name: broken, query: SELEC * FROM users;}\n",
            'test.yml, document 2 (query "broken"): query: SQL syntax error: near "SELEC": syntax error.',
        ),
        (
            "apiVersion: v1\nkind: querry\nspec: {name: typo}\n",
            'test.yml, document 2 (querry "typo"): unknown kind "querry"',
        ),
        (
            "apiVersion: v1\nkind: query\nspec: {query: SELECT 1;}\n",
            "test.yml, document 2 (query): name is required",
        ),
        (
            "kind: label\nspec: {name: l, query: SELECT 1;}\n",
            'document 2 (label "l"): apiVersion: v1 is missing',
        ),
        ("apiVersion: v1\nkind: pack\nspec: [1, 2]\n", "document 2 (pack): spec must be a mapping"),
        ("apiVersion: v1\nkind: 5\nspec: {}\n", "document 2 (document): kind must be a string"),
        (
            "apiVersion: v1\nkind: pack\nspec: {name: p, queries: [{query: nope, interval: 5}]}\n",
            'document 2 (pack "p"): queries[0]: there is no saved query named "nope"',
        ),
        (
            "apiVersion: v1\nkind: pack\nspec: {name: p, targets: {labels: [Nope]}}\n",
            "targets.labels: no label named Nope",
        ),
        (
            "apiVersion: v1\nkind: query\nspec: {name: q, query: SELECT 1;, interval: 999999}\n",
            "interval: The interval must be between 0 and 604800 seconds.",
        ),
        (
            "apiVersion: v1\nkind: query\nspec: {name: q, query: SELECT 1;, platform: beos}\n",
            "unknown platform 'beos'",
        ),
        ("apiVersion: v1\nkind: team\nspec: {team: {name: No team}}\n", '"No team" is reserved.'),
        ("apiVersion: v1\nkind: label\nspec: {name: macOS, query: SELECT 1;}\n", "builtin label"),
        (
            "apiVersion: v1\nkind: config\nspec: {agent_options: {bogus: 1}}\n",
            "agent_options: unknown keys: bogus",
        ),
        (
            "apiVersion: v1\nkind: label\nspec: {name: m, label_membership_type: manual, hosts: [ghost]}\n",
            "hosts: Unknown host(s): ghost.",
        ),
        (
            "apiVersion: v1\nkind: query\nspec: {name: fine, query: SELECT 2;}\n",
            'query "fine" is also defined in test.yml, document 1',
        ),
    ],
)
def test_bad_documents_apply_nothing(bad, message):
    with pytest.raises(SpecError) as raised:
        plan_of(VALID + "---\n" + bad)
    assert any(message in error for error in raised.value.errors), raised.value.errors
    assert Query.objects.count() == 0


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, VALID + "---\napiVersion: v1\nkind: query\nspec: {name: [oops}\n")
    with pytest.raises(CommandError) as raised:
        apply_files(path)
    assert f"{path}: YAML syntax error at line 8, column 19: while parsing a flow sequence: expected" in str(
        raised.value
    )
    assert "Nothing was applied." in str(raised.value)
    assert Query.objects.count() == 0


def test_every_error_is_listed_with_document_and_name(tmp_path):
    path = write(
        tmp_path,
        VALID
        + """---
apiVersion: v1
kind: query
spec: {name: one, query: "SELECT FROM"}
---
apiVersion: v1
kind: label
spec: {name: two}
""",
    )
    with pytest.raises(CommandError) as raised:
        apply_files(path)
    text = str(raised.value)
    assert text.startswith("2 error(s); nothing was applied:")
    assert f'{path}, document 2 (query "one"): query: SQL syntax error' in text
    assert f'{path}, document 3 (label "two"): query: SQL is empty.' in text
    assert Query.objects.count() == 0


def test_too_many_secrets(settings, tmp_path):
    secrets = "\n".join(f"    - secret: secret-number-{i}" for i in range(51))
    path = write(tmp_path, f"apiVersion: v1\nkind: enroll_secret\nspec:\n  secrets:\n{secrets}\n")
    with pytest.raises(CommandError, match="51 secrets, more than the 50 allowed"):
        apply_files(path)


def test_unsupported_kinds_are_reported_not_dropped():
    plan = plan_of(
        VALID
        + """---
apiVersion: v1
kind: policy
spec: {name: Disk encrypted, query: SELECT 1;}
---
apiVersion: v1
kind: software
spec: {name: Slack}
"""
    )
    assert [(s.kind, s.name, s.source) for s in plan.skipped] == [
        ("policy", "Disk encrypted", "test.yml, document 2"),
        ("software", "Slack", "test.yml, document 3"),
    ]
    assert plan.skipped[0].reason == "policies are not supported yet"
    assert plan.summary() == {"create": 1, "update": 0, "delete": 0, "unchanged": 0, "skipped": 2}
    assert Query.objects.filter(name="fine").exists()


def test_yaml_bomb_is_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, "
        bomb += f"*{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    with pytest.raises(Exception, match="expand to more than"):
        parse_yaml(bomb, "bomb.yml")


# --- export ---------------------------------------------------------------------------------------------


def _build_everything(tmp_path):
    apply_files(FLEET / "single-file-configuration.yml")
    apply_files(FLEET / "standard-query-library.yml")
    make_host("web-1")
    make_host("web-2", hardware_serial="SER-2")
    apply_files(
        write(
            tmp_path,
            """
            apiVersion: v1
            kind: team
            spec:
              team:
                name: Ops
                description: Operations
                agent_options: {config: {options: {distributed_interval: 30}}}
                secrets: [{secret: ops-secret-1}, {secret: ops-secret-2}]
            ---
            apiVersion: v1
            kind: team
            spec: {team: {name: Empty}}
            ---
            apiVersion: v1
            kind: query
            spec:
              name: multi
              team: Ops
              description: |
                Two lines
                of description
              query: |
                SELECT *
                FROM uptime;
              interval: 60
              logging: differential_ignore_removals
              automations_enabled: true
            ---
            apiVersion: v1
            kind: label
            spec: {name: Web, label_membership_type: manual, hosts: [web-1, SER-2], description: webs}
            ---
            apiVersion: v1
            kind: label
            spec: {name: Linux, query: "SELECT 1 FROM os_version WHERE platform = 'x';", platform: ubuntu}
            ---
            apiVersion: v1
            kind: pack
            spec:
              name: targeted
              description: everything
              platform: linux
              targets: {labels: [Web, macOS], teams: [Ops], hosts: [web-1]}
              queries:
                - {query: multi, team: Ops, name: m, interval: 90, snapshot: true, shard: 10}
                - {query: hostname, interval: 600, removed: false, denylist: true, platform: posix}
            """,
        )
    )


def _delete_config():
    Pack.objects.all().delete()
    Query.objects.all().delete()
    Label.objects.exclude(label_type=LabelType.BUILTIN).delete()
    EnrollSecret.objects.all().delete()
    Team.objects.all().delete()
    FleetSettings.objects.all().delete()


def test_export_round_trip(tmp_path):
    _build_everything(tmp_path)
    before = counts()
    exported = tmp_path / "export.yml"
    call_command("export", "-o", str(exported), stdout=io.StringIO(), stderr=io.StringIO())
    text = exported.read_text()
    docs = documents_of(exported)
    assert kinds(exported) == {
        "config": 1,
        "enroll_secret": 1,
        "team": 2,
        "query": before["queries"],
        "label": before["labels"],
        "pack": before["packs"],
    }
    assert "macOS" not in [d["spec"]["name"] for d in docs if d["kind"] == "label"]  # builtin: left out
    assert "query: |-\n    SELECT *\n    FROM uptime;" in text  # multi-line SQL stays readable

    # Applied to the database it came from: nothing to do.
    plan = apply_documents(parse_yaml(text, "export.yml"))
    assert {change.action for change in plan.changes} == {"unchanged"}

    # Applied to an empty configuration: the same objects again, and the same export.
    _delete_config()
    assert counts() == EMPTY
    apply_files(exported)
    assert counts() == before
    again = run("export")
    assert again == text
    pack = Pack.objects.get(name="targeted")
    assert sorted(pack.target_labels.values_list("name", flat=True)) == ["Web", "macOS"]
    assert list(pack.target_hosts.values_list("hostname", flat=True)) == ["web-1"]
    m = pack.scheduled.get(name="m")
    assert (m.query.team.name, m.snapshot, m.shard, m.removed) == ("Ops", True, 10, None)
    assert sorted(Label.objects.get(name="Web").hosts.values_list("hostname", flat=True)) == [
        "web-1",
        "web-2",
    ]
    assert Team.objects.get(name="Ops").agent_options == {"config": {"options": {"distributed_interval": 30}}}
    assert Team.objects.get(name="Empty").agent_options is None


def test_export_to_stdout_of_an_empty_fleet():
    docs = list(yaml.safe_load_all(run("export")))
    assert [d["kind"] for d in docs] == ["config", "enroll_secret"]
    assert docs[1]["spec"] == {"secrets": []}
