"""Issue 4 end to end, through the REST API and agents speaking the protocol.

A dynamic label's membership follows the agents' answers; a pack targeting that label reaches
exactly those hosts' config; their result logs reach a file, a webhook and NATS, and none is
lost while the webhook is down.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model

from hosts import nodekeys
from hosts.models import Host
from tests.agent import Agent
from tests.factories import api_for
from tests.test_log_destinations import (  # noqa: F401 - fixtures used by name
    NATS_URL,
    BufferedAgent,
    _fresh_destinations,
    collector,
    needs_nats,
    read_lines,
    receiver,
    subject,
    use,
)

pytestmark = pytest.mark.django_db


def due_label_queries(agent: Agent) -> dict[str, str]:
    queries = agent.authed("distributed/read").json()["queries"]
    return {name: sql for name, sql in queries.items() if name.startswith("fleet_label_query_")}


def answer(agent: Agent, answers: dict[str, list[dict]]) -> None:
    body = {"queries": answers, "statuses": dict.fromkeys(answers, 0)}
    assert agent.authed("distributed/write", body).json() == {}


def make_labels_due(agent: Agent) -> None:
    """As if the label interval had passed for this host."""
    hosts = Host.objects.filter(osquery_host_id=agent.identifier)
    hosts.update(label_updated_at="2000-01-01T00:00Z")
    nodekeys.forget_hosts(hosts.values_list("id", flat=True))


def packs_in_config(agent: Agent) -> dict:
    return agent.authed("config").json().get("packs", {})


@needs_nats
def test_label_pack_config_and_logs(client, global_secret, settings, receiver, subject, collector):  # noqa: F811
    api = api_for(get_user_model().objects.create_superuser("root", "r@example.com", "pw"))
    agents = [Agent(client, identifier=f"uuid-e2e-{i}", hostname=f"e2e-{i}") for i in range(3)]
    for agent in agents:
        agent.enroll(global_secret)
        agent.authed("distributed/read")  # details round, so the hosts know their platform

    label = api.post(
        "/api/v1/labels/",
        {"name": "Has nginx", "query": "SELECT 1 FROM processes WHERE name = 'nginx'"},
        format="json",
    ).json()
    query = api.post(
        "/api/v1/queries/",
        {"name": "nginx-conns", "query": "SELECT * FROM process_open_sockets"},
        format="json",
    ).json()
    pack = api.post(
        "/api/v1/packs/", {"name": "web-servers", "targets": {"labels": [label["id"]]}}, format="json"
    ).json()
    scheduled = api.post(
        f"/api/v1/packs/{pack['id']}/scheduled/", {"query_id": query["id"], "interval": 300}, format="json"
    )
    assert scheduled.status_code == 201, scheduled.json()

    # The label query goes to every host; two answer with rows, one without.
    name = f"fleet_label_query_{label['id']}"
    for agent, rows in zip(agents, ([{"1": "1"}], [{"1": "1"}], []), strict=True):
        Host.objects.filter(osquery_host_id=agent.identifier).update(label_updated_at="2000-01-01T00:00Z")
        from hosts import nodekeys

        nodekeys.forget_hosts(
            Host.objects.filter(osquery_host_id=agent.identifier).values_list("id", flat=True)
        )
        assert name in due_label_queries(agent)
        answer(agent, {name: rows})
    assert api.get(f"/api/v1/labels/{label['id']}/").json()["host_count"] == 2

    # Exactly the members get the pack, with the scheduled query in osquery's format.
    configs = [packs_in_config(agent) for agent in agents]
    assert "web-servers" in configs[0] and "web-servers" in configs[1]
    assert "web-servers" not in configs[2]
    assert configs[0]["web-servers"]["queries"]["nginx-conns"]["interval"] == 300

    # Membership follows the answers: the third host starts answering with rows, the first stops.
    for agent, rows in ((agents[2], [{"1": "1"}]), (agents[0], [])):
        nodekeys.forget_hosts(
            Host.objects.filter(osquery_host_id=agent.identifier).values_list("id", flat=True)
        )
        Host.objects.filter(osquery_host_id=agent.identifier).update(label_updated_at="2000-01-01T00:00Z")
        nodekeys.forget_hosts(
            Host.objects.filter(osquery_host_id=agent.identifier).values_list("id", flat=True)
        )
        answer(agent, {name: rows})
    assert "web-servers" in packs_in_config(agents[2]) and "web-servers" not in packs_in_config(agents[0])

    # The members' result logs reach all three destinations, the webhook down for a while.
    use(settings, RESULT_PLUGINS=["filesystem", "webhook", "nats"], WEBHOOK_RESULT_URL=receiver.url,
        NATS_SERVERS=[NATS_URL], NATS_RESULT_SUBJECT=f"{subject}.result")  # fmt: skip
    receiver.mode = "503"
    members = [BufferedAgent(agents[1]), BufferedAgent(agents[2])]
    sent: list[dict] = []
    for round_ in range(3):
        for n, osquery in enumerate(members):
            line = {
                "name": "pack/web-servers/nginx-conns",
                "hostIdentifier": f"e2e-{n}",
                "action": "snapshot",
                "snapshot": [{"fd": str(round_)}],
                "seq": f"{n}-{round_}",
            }
            osquery.buffer.append(line)
            sent.append(line)
            assert not osquery.flush()  # the webhook refuses: osquery keeps its buffer
        time.sleep(0.35)
    receiver.mode = "ok"
    time.sleep(0.35)  # the breaker lets the next attempt through
    for osquery in members:
        assert osquery.flush() and not osquery.buffer

    def seqs(lines):
        return {line["seq"] for line in lines}

    assert seqs(receiver.received) == seqs(sent)
    assert seqs(collector.wait_for(len(sent))) == seqs(sent)  # duplicates allowed, losses not
    assert seqs(read_lines(settings.OSQUERY["RESULT_LOG_FILE"])) == seqs(sent)
