"""The osquery config each host receives: packs by target, Fleet's Global/team packs, options,
sharding, caching and invalidation (fleet-reference §4.3, osquery-protocol §5)."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts import nodekeys
from hosts.models import FleetSettings, Host, Label, LabelMembership, Team
from hosts.services import set_agent_options
from packs import config as osquery_config
from packs.models import Pack, ScheduledQuery
from queries.models import LoggingMode, Query
from tests.agent import Agent
from tests.factories import make_host

pytestmark = pytest.mark.django_db


def enroll(client, secret: str, identifier: str, platform: str = "darwin", platform_like: str = "") -> Agent:
    agent = Agent(client, identifier, hostname=f"{identifier}.local", platform=platform, serial=identifier)
    if platform_like:
        agent.details["os_version"]["platform_like"] = platform_like
    body = agent.enroll(secret)
    assert "node_key" in body, body
    return agent


def host_of(agent: Agent) -> Host:
    return Host.objects.get(uuid=agent.identifier)


def put_in_labels(agent: Agent, *labels: Label) -> None:
    """Membership as the label engine would record it; the host's cached state then refreshes."""
    host = host_of(agent)
    LabelMembership.objects.bulk_create([LabelMembership(host=host, label=label) for label in labels])
    nodekeys.forget_hosts([host.pk])


def config_of(agent: Agent) -> dict:
    response = agent.authed("config")
    assert response.status_code == 200
    body = response.json()
    assert "error" not in body and "node_invalid" not in body
    return body


def packs_of(agent: Agent) -> dict:
    return config_of(agent).get("packs", {})


def saved_query(name: str, team: Team | None = None, **fields) -> Query:
    fields.setdefault("query", f"SELECT * FROM osquery_info -- {name}")
    return Query.objects.create(name=name, team=team, **fields)


def pack_with(name: str, *queries: Query, **fields) -> Pack:
    pack = Pack.objects.create(name=name, **fields)
    for query in queries:
        ScheduledQuery.objects.create(pack=pack, query=query, name=query.name, interval=600)
    return pack


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="Sales")


@pytest.fixture
def fleet(client, global_secret, team, team_secret, other_team):
    """A mac in Engineering, an Ubuntu box in Sales, a Windows desktop with no team."""
    from hosts.models import EnrollSecret

    sales_secret = EnrollSecret.objects.create(secret="sales-secret-789", team=other_team).secret
    return {
        "mac": enroll(client, team_secret, "mac-1"),
        "linux": enroll(client, sales_secret, "lin-1", "ubuntu", "debian"),
        "win": enroll(client, global_secret, "win-1", "windows"),
    }


# --- which packs reach which host -----------------------------------------------------------------------


def test_each_host_gets_exactly_the_packs_that_target_it(fleet, team, other_team):
    q = saved_query("uptime", query="SELECT * FROM uptime")
    laptops = Label.objects.create(name="Laptops", query="SELECT 1")
    servers = Label.objects.create(name="Servers", query="SELECT 1")
    put_in_labels(fleet["mac"], laptops)
    pack_with("by-label", q).target_labels.add(laptops)
    pack_with("by-other-label", q).target_labels.add(servers)
    pack_with("by-team", q).target_teams.add(other_team)
    pack_with("by-host", q).target_hosts.add(host_of(fleet["win"]))
    pack_with("targets-nothing", q)
    pack_with("disabled", q, disabled=True).target_labels.add(laptops)

    assert set(packs_of(fleet["mac"])) == {"by-label"}
    assert set(packs_of(fleet["linux"])) == {"by-team"}
    assert set(packs_of(fleet["win"])) == {"by-host"}
    assert packs_of(fleet["mac"])["by-label"] == {
        "queries": {"uptime": {"query": "SELECT * FROM uptime", "interval": 600}}
    }


def test_a_host_targeted_several_ways_gets_the_pack_once(fleet, team):
    label = Label.objects.create(name="Macs", query="SELECT 1")
    put_in_labels(fleet["mac"], label)
    pack = pack_with("everything", saved_query("q"))
    pack.target_labels.add(label)
    pack.target_teams.add(team)
    pack.target_hosts.add(host_of(fleet["mac"]))
    assert list(packs_of(fleet["mac"])) == ["everything"]


def test_scheduled_saved_queries_form_the_global_and_team_packs(fleet, team, other_team):
    saved_query("global snapshot", interval=300, logging=LoggingMode.SNAPSHOT, query="SELECT * FROM uptime")
    saved_query(
        "eng differential",
        team,
        interval=60,
        logging=LoggingMode.DIFFERENTIAL,
        platform="darwin,linux",
        min_osquery_version="5.10.0",
        query="SELECT pid FROM processes",
    )
    saved_query(
        "sales ignore removals", other_team, interval=3600, logging=LoggingMode.DIFFERENTIAL_IGNORE_REMOVALS
    )
    saved_query("not scheduled", interval=0)
    saved_query("eng unscheduled", team, interval=0)

    mac = packs_of(fleet["mac"])
    assert set(mac) == {"Global", f"team-{team.pk}"}
    assert mac["Global"] == {
        "queries": {
            "global snapshot": {
                "query": "SELECT * FROM uptime",
                "interval": 300,
                "snapshot": True,
                "removed": False,
            }
        }
    }
    assert mac[f"team-{team.pk}"]["queries"] == {
        "eng differential": {
            "query": "SELECT pid FROM processes",
            "interval": 60,
            "removed": True,
            "platform": "darwin,linux",
            "version": "5.10.0",
        }
    }
    linux = packs_of(fleet["linux"])
    assert set(linux) == {"Global", f"team-{other_team.pk}"}
    assert linux[f"team-{other_team.pk}"]["queries"]["sales ignore removals"]["removed"] is False
    assert set(packs_of(fleet["win"])) == {"Global"}  # no team: only the global queries


def test_pack_query_options_are_passed_through_except_shard(fleet):
    q = saved_query("listening", query="SELECT * FROM listening_ports")
    pack = Pack.objects.create(name="net")
    pack.target_hosts.add(host_of(fleet["mac"]))
    ScheduledQuery.objects.create(
        pack=pack,
        query=q,
        name="ports",
        interval=120,
        snapshot=True,
        removed=False,
        denylist=False,
        platform="darwin",
        version="5.0.1",
        shard=100,
    )
    assert packs_of(fleet["mac"])["net"]["queries"]["ports"] == {
        "query": "SELECT * FROM listening_ports",
        "interval": 120,
        "snapshot": True,
        "removed": False,
        "denylist": False,
        "platform": "darwin",
        "version": "5.0.1",
    }


def test_platforms_follow_osquerys_rules(fleet, team, other_team):
    everyone = Pack.objects.create(name="mixed")
    everyone.target_teams.add(team, other_team)
    everyone.target_hosts.add(host_of(fleet["win"]))
    for name, platform in [("mac only", "darwin"), ("posix", "posix"), ("ubuntu", "ubuntu"), ("any", "")]:
        ScheduledQuery.objects.create(
            pack=everyone, query=saved_query(name), name=name, interval=60, platform=platform
        )
    windows_pack = Pack.objects.create(name="windows pack", platform="windows")
    windows_pack.target_teams.add(team, other_team)
    windows_pack.target_hosts.add(host_of(fleet["win"]))
    saved_query("global windows", interval=60, platform="windows")

    mac, linux, win = (packs_of(fleet[h]) for h in ("mac", "linux", "win"))
    assert set(mac["mixed"]["queries"]) == {"mac only", "posix", "any"}
    assert set(linux["mixed"]["queries"]) == {"posix", "ubuntu", "any"}
    assert set(win["mixed"]["queries"]) == {"any"}
    assert "windows pack" not in mac and "windows pack" not in linux
    assert win["windows pack"] == {"queries": {}, "platform": "windows"}
    assert "Global" not in mac and set(win["Global"]["queries"]) == {"global windows"}


def test_agent_options_still_merge_and_their_own_packs_survive(fleet, team):
    set_agent_options(
        team,
        {
            "config": {"options": {"distributed_interval": 30}, "packs": {"from-options": {"queries": {}}}},
            "overrides": {"platforms": {"linux": {"options": {"distributed_interval": 99}}}},
        },
    )
    saved_query("eng", team, interval=60)
    mac = config_of(fleet["mac"])
    assert mac["options"] == {"distributed_interval": 30}
    assert set(mac["packs"]) == {"from-options", f"team-{team.pk}"}
    win = config_of(fleet["win"])  # no team: Fleet's default global options, no packs
    assert win["options"]["pack_delimiter"] == "/"
    assert "packs" not in win


# --- sharding ---------------------------------------------------------------------------------------------


def _sharded_pack(shard: int) -> Pack:
    pack = Pack.objects.create(name="sharded")
    ScheduledQuery.objects.create(pack=pack, query=saved_query("q"), name="q", interval=60, shard=shard)
    ScheduledQuery.objects.create(pack=pack, query=saved_query("everyone"), name="everyone", interval=60)
    return pack


def test_shard_takes_a_stable_share_of_hosts(team):
    hosts = Host.objects.bulk_create(
        [
            Host(osquery_host_id=f"h{i}", uuid=f"u{i}", hostname=f"h{i}", platform="darwin")
            for i in range(1000)
        ]
    )
    if hosts[0].pk is None:  # backends that do not return ids from bulk inserts
        hosts = list(Host.objects.order_by("pk"))
    _sharded_pack(25).target_labels.add(label := Label.objects.create(name="all", query="SELECT 1"))

    def has_query(host: Host) -> bool:
        body = osquery_config.render_for(nodekeys.state_of(host, label_ids=[label.pk]))
        queries = json.loads(body)["packs"]["sharded"]["queries"]
        assert "everyone" in queries
        return "q" in queries

    first = [has_query(h) for h in hosts]
    assert 200 <= sum(first) <= 300  # ~25 % of 1000
    osquery_config.invalidate()
    assert [has_query(h) for h in hosts] == first  # the same hosts after a fresh render


def test_sharded_query_is_not_sent_with_a_shard_field(fleet):
    _sharded_pack(50).target_hosts.add(host_of(fleet["mac"]))
    queries = [packs_of(fleet["mac"])["sharded"]["queries"] for _ in range(3)]
    assert queries[0] == queries[1] == queries[2]
    assert all("shard" not in q for q in queries[0].values())


def test_shard_class_keys_share_renders_between_hosts_on_the_same_side():
    meta = osquery_config.Meta(shards=(10, 50))
    states = [
        nodekeys.HostState(
            id=i, team_id=None, platform="darwin", platform_like="", hostname="h", needs_identity=False,
            details_due_at=0, refetch_requested=False, online_interval=60,
        )
        for i in range(1, 400)
    ]  # fmt: skip
    inputs = [osquery_config.inputs_for(s, meta) for s in states]
    assert {i.shard_class for i in inputs} == {0, 1, 2}
    for i in inputs:  # the class says exactly which shards the host is in
        assert (i.bucket < 10, i.bucket < 50) == (i.shard_class < 1, i.shard_class < 2)
        assert i.key("g").endswith(f":0:{i.shard_class}")


# --- caching and invalidation -------------------------------------------------------------------------------


def test_config_request_does_no_database_work_when_warm_and_constant_work_when_cold(fleet, team):
    def setup(n: int) -> None:
        labels = [Label.objects.create(name=f"label {n}-{i}", query="SELECT 1") for i in range(n)]
        put_in_labels(fleet["mac"], *labels)
        for i in range(n):
            pack = pack_with(
                f"pack {n}-{i}", saved_query(f"q {n}-{i}", interval=60), saved_query(f"r {n}-{i}")
            )
            pack.target_labels.add(labels[i])
            pack.target_teams.add(team)
            pack.target_hosts.add(host_of(fleet["mac"]))

    counts = []
    for n, expected_packs in ((1, 2), (6, 8)):
        setup(n)
        config_of(fleet["mac"])  # warm every cache (node key, generation, meta, config)
        with CaptureQueriesContext(connection) as warm:
            config_of(fleet["mac"])
        assert len(warm) == 0, [q["sql"] for q in warm]
        cache.clear()
        osquery_config._memo.update(catalog=None, meta=None)  # a fresh process, empty cache
        with CaptureQueriesContext(connection) as cold:
            assert len(packs_of(fleet["mac"])) == expected_packs  # this round's, earlier ones', Global
        # The render reads single tables; only the node-key lookup joins (the host to its labels).
        renders = [q["sql"] for q in cold if "node_key_hash" not in q["sql"]]
        assert not [sql for sql in renders if " JOIN " in sql.upper()]
        counts.append(len(cold))
    assert counts[0] == counts[1]


def test_hosts_with_the_same_inputs_share_one_render(fleet, team, client, team_secret):
    twin = enroll(client, team_secret, "mac-2")
    direct = Pack.objects.create(name="direct")
    direct.target_hosts.add(host_of(fleet["mac"]))
    gen = osquery_config.generation()
    meta = osquery_config.meta(gen)
    mac_state = nodekeys.state_of(host_of(fleet["mac"]))
    twin_state = nodekeys.state_of(host_of(twin))
    mac_key = osquery_config.inputs_for(mac_state, meta).key(gen)
    twin_key = osquery_config.inputs_for(twin_state, meta).key(gen)
    assert mac_key != twin_key  # the directly targeted host has its own
    third = enroll(client, team_secret, "mac-3")
    assert osquery_config.inputs_for(nodekeys.state_of(host_of(third)), meta).key(gen) == twin_key
    assert "direct" in packs_of(fleet["mac"]) and "direct" not in packs_of(twin)


def _save(obj, **fields) -> None:
    for name, value in fields.items():
        setattr(obj, name, value)
    obj.save()


def _delete_targeted_label(ctx) -> None:
    ctx["other"].target_labels.add(ctx["label"])
    ctx["before"] = config_of(ctx["agent"])
    assert "other" in ctx["before"]["packs"]
    ctx["label"].delete()  # its target rows go by cascade, without m2m_changed


CHANGES = {
    "query created": lambda ctx: saved_query("new scheduled", interval=60),
    "query changed": lambda ctx: _save(Query.objects.get(name="watched"), query="SELECT 2"),
    "query deleted": lambda ctx: Query.objects.get(name="watched").delete(),
    "pack created": lambda ctx: pack_with("another").target_teams.add(ctx["team"]),
    "pack renamed": lambda ctx: _save(ctx["pack"], name="renamed"),
    "pack disabled": lambda ctx: _save(ctx["pack"], disabled=True),
    "pack deleted": lambda ctx: ctx["pack"].delete(),
    "scheduled query added": lambda ctx: ScheduledQuery.objects.create(
        pack=ctx["pack"], query=saved_query("extra"), name="extra", interval=30
    ),
    "scheduled query changed": lambda ctx: _save(ctx["pack"].scheduled.get(), interval=1234),
    "scheduled query deleted": lambda ctx: ctx["pack"].scheduled.all().delete(),
    "host target removed": lambda ctx: ctx["pack"].target_hosts.clear(),
    "label target added": lambda ctx: ctx["other"].target_labels.add(ctx["label"]),
    "team target added": lambda ctx: ctx["other"].target_teams.add(ctx["team"]),
    "targets set": lambda ctx: ctx["other"].target_hosts.set([ctx["host"]]),
    "targeted label deleted": _delete_targeted_label,
    "team agent options": lambda ctx: _save(ctx["team"], agent_options={"config": {"options": {"x": 1}}}),
    "global agent options": lambda ctx: _save(
        FleetSettings.load(), agent_options={"config": {"options": {}}}
    ),
    "team deleted": lambda ctx: ctx["team"].delete(),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_kind_of_change_reaches_the_next_config(fleet, team, change):
    label = Label.objects.create(name="watched label", query="SELECT 1")
    put_in_labels(fleet["mac"], label)
    watched = saved_query("watched", interval=60)
    saved_query("team query", team, interval=60)
    pack = pack_with("watched pack", watched)
    pack.target_hosts.add(host_of(fleet["mac"]))
    ctx = {
        "team": team,
        "pack": pack,
        "other": Pack.objects.create(name="other"),
        "label": label,
        "host": host_of(fleet["mac"]),
        "agent": fleet["mac"],
    }
    ctx["before"] = config_of(fleet["mac"])
    assert config_of(fleet["mac"]) == ctx["before"]  # served from the cache
    CHANGES[change](ctx)
    assert config_of(fleet["mac"]) != ctx["before"]


def test_set_agent_options_still_invalidates(fleet):
    set_agent_options(None, {"config": {"options": {"distributed_interval": 42}}})
    assert config_of(fleet["win"])["options"] == {"distributed_interval": 42}


def test_a_label_membership_change_reaches_the_config_with_the_hosts_state(fleet):
    label = Label.objects.create(name="Servers", query="SELECT 1")
    pack_with("servers", saved_query("q")).target_labels.add(label)
    assert "servers" not in packs_of(fleet["linux"])
    put_in_labels(fleet["linux"], label)  # the label engine refreshes the host's state like this
    assert "servers" in packs_of(fleet["linux"])


def test_renders_from_before_an_invalidation_are_never_served_after_it(fleet):
    q = saved_query("q", interval=60)
    before = packs_of(fleet["mac"])
    # A write whose signal is bypassed (a raw UPDATE) followed by an explicit invalidation.
    Query.objects.filter(pk=q.pk).update(interval=90)
    assert packs_of(fleet["mac"]) == before  # still cached: nobody said the inputs changed
    osquery_config.invalidate()
    assert packs_of(fleet["mac"])["Global"]["queries"]["q"]["interval"] == 90


def test_generation_survives_a_lost_cache_without_serving_old_configs(fleet):
    saved_query("q", interval=60)
    packs_of(fleet["mac"])
    cache.delete(osquery_config.GENERATION_KEY)  # evicted
    Query.objects.filter(name="q").update(interval=77)
    assert packs_of(fleet["mac"])["Global"]["queries"]["q"]["interval"] == 77


def test_directly_targeted_hosts_come_from_the_cached_meta(team):
    host = make_host("direct-1", team, platform="darwin")
    pack = Pack.objects.create(name="direct")
    pack.target_hosts.add(host)
    gen = osquery_config.generation()
    meta = osquery_config.meta(gen)
    assert meta.direct_hosts == frozenset({host.pk})
    with CaptureQueriesContext(connection) as queries:
        assert osquery_config.meta(gen) == meta
    assert len(queries) == 0
