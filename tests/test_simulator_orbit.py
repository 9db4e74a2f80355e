"""The simulated orbit: its script interpreter, and a run against a live server that shows
scripts, lock and the Desktop token working end to end with no real device."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from agentapi.simulator.agent import AgentSettings
from agentapi.simulator.orbit import OrbitSettings, interpret
from agentapi.simulator.runner import SimulationConfig, simulate


def test_interpreter_prints_sleeps_exits_and_times_out():
    ok = interpret("#!/bin/sh\necho hello world\nexit 0", "linux", "web-1", 300)
    assert ok.exit_code == 0 and ok.output.startswith("Linux web-1") and "hello world\n" in ok.output
    failed = interpret("echo about to fail\nexit 3\necho never", "darwin", "mac-1", 300)
    assert failed.exit_code == 3 and "never" not in failed.output and failed.output.startswith("Darwin mac-1")
    slow = interpret("sleep 20\necho done", "linux", "web-1", 10)
    assert slow.exit_code == -1 and slow.runtime == 10 and "done" not in slow.output
    windows = interpret("Write-Output 'hi there'", "windows", "WIN-1", 300)
    assert windows.output.startswith("Host Name: WIN-1") and "hi there" in windows.output


@pytest.mark.django_db(transaction=True)
def test_simulated_orbit_runs_scripts_locks_and_sets_a_desktop_token(live_server, tmp_path):
    from devices.models import DeviceToken
    from hosts.models import EnrollSecret, Host
    from hostscripts import device_actions, services
    from hostscripts.device_status import device_status
    from hostscripts.models import ScriptKind, ScriptRun

    EnrollSecret.objects.create(secret="sim-orbit-secret")
    token_file = tmp_path / "tokens.json"
    config = SimulationConfig(
        url=live_server.url,
        enroll_secret="sim-orbit-secret",
        count=3,
        seed=4,
        start_period=0.2,
        templates="ubuntu:1,windows:1,macos:1",
        duration=4.0,
        progress_interval=60,
        agent=AgentSettings(distributed_interval=0.5, logger_tls_period=1, follow_config_options=False),
        orbit=OrbitSettings(config_interval=0.3, token_file=str(token_file)),
    )

    def queue_work() -> None:
        """Once orbit enrolled every host: a script on each, and a lock on the Linux host."""
        import time

        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and Host.objects.exclude(orbit_node_key_hash=None).count() < 3:
            time.sleep(0.05)
        for host in Host.objects.all():
            services.run_on_host(host, contents="echo simulated\nexit 0")
        device_actions.request_action(Host.objects.get(platform="ubuntu"), ScriptKind.LOCK)

    worker = threading.Thread(target=queue_work)
    worker.start()
    stats = asyncio.run(simulate(config, out=lambda line: None))
    worker.join()
    assert stats.failures["orbit/config"] == 0 and stats.failures["orbit/scripts/result"] == 0, (
        stats.last_errors
    )
    runs = list(ScriptRun.objects.select_related("host"))
    assert len(runs) == 4 and all(run.exit_code == 0 for run in runs), [
        (r.host.platform, r.status) for r in runs
    ]
    assert all("simulated" in run.output for run in runs if run.kind == ScriptKind.SCRIPT)
    assert device_status(Host.objects.get(platform="ubuntu").pk).status == "locked"
    tokens = json.loads(token_file.read_text())
    assert len(tokens) == 3 and DeviceToken.objects.count() == 3
    # orbit_info, read by osquery's detail query, reports the orbit and Desktop versions.
    assert all(host.orbit_version and host.desktop_version for host in Host.objects.all())
