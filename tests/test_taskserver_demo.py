"""``make run``'s demo task agent: ``prepare_demo`` leaves a working agent key in a private file,
the ``server`` destination and three tasks on this server, and a second run changes nothing."""

from __future__ import annotations

import io
import stat

from django.core.management import call_command

from taskserver import services
from taskserver.models import AgentKey, MetricDestination, Task


def _prepare(tmp_path) -> dict[str, str]:
    out = io.StringIO()
    call_command(
        "prepare_demo", password_file=str(tmp_path / "pw"), agent_key_file=str(tmp_path / "agent_key"),
        port=8123, tls_port=8443, stdout=out,
    )  # fmt: skip
    return dict(line.split("=", 1) for line in out.getvalue().splitlines() if "=" in line)


def test_the_demo_agent_key_destination_and_tasks(db, tmp_path, settings):
    settings.TLS_CERT_FILE = str(tmp_path / "cert.pem")
    settings.TLS_KEY_FILE = str(tmp_path / "key.pem")
    first = _prepare(tmp_path)
    key_file = tmp_path / "agent_key"
    assert first["agent_key_file"] == str(key_file) and first["demo_tasks"] == "3"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = services.authenticate_key(key_file.read_text().strip())
    assert key is not None and key.team_id is None and key.name == "demo"
    assert MetricDestination.objects.filter(kind="server", team__isnull=True).count() == 1
    health = Task.objects.get(name="Console health")
    assert (
        health.route_type == "any"
        and services.agent_settings(health)["url"] == "http://127.0.0.1:8123/healthz"
    )
    revisions = dict(Task.objects.values_list("name", "revision"))

    second = _prepare(tmp_path)  # the same key, nothing added twice, nothing changed
    assert second["demo_tasks"] == "3" and services.authenticate_key(key_file.read_text().strip()) == key
    assert AgentKey.objects.count() == 1 and MetricDestination.objects.count() == 1
    assert dict(Task.objects.values_list("name", "revision")) == revisions

    key_file.write_text("lost")  # a key file that no longer matches: a new key replaces the old one
    _prepare(tmp_path)
    replaced = services.authenticate_key(key_file.read_text().strip())
    assert replaced is not None and replaced.pk != key.pk and AgentKey.objects.count() == 1
