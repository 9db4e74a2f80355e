"""REST calls that wait for agents (a synchronous live query or script run) are bounded per process
(``fleet.held_requests``): refused with a 503 that says where they belong, before anything starts.
A production web process (two threads) holds one at a time and keeps serving agents meanwhile;
daphne, where the proxies send them, holds several at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from prometheus_client import REGISTRY

from campaigns.models import Campaign
from fleet import held_requests
from fleet.held_requests import HELD_PATHS, held_request
from hosts.models import EnrollSecret
from hostscripts.models import ScriptRun
from tests.factories import api_for, token_for, user_with_role
from tests.live_processes import server_env, start_daphne, start_web, stop, stop_group, wait_for, wait_healthy
from tests.scripts_support import SYNC, orbit_host
from tests.test_rest_campaigns import HTTPClient, enroll_over_http, enrolled

RUN = "/api/v1/campaigns/run/"


def refused_count() -> float:
    return REGISTRY.get_sample_value("fleet_held_requests_refused_total") or 0.0


@pytest.fixture
def uncapped() -> Iterator[None]:
    """Whatever a test caps, the next test starts from the setting alone."""
    held_requests.cap(None)
    yield
    held_requests.cap(None)


@pytest.fixture
def admin_api(db):
    return api_for(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))


def test_the_held_paths_are_exactly_the_two_calls_that_wait():
    assert (reverse("campaign-run"), reverse("script-run-sync")) == HELD_PATHS


@pytest.mark.django_db
def test_a_process_that_may_hold_none_refuses_both_calls_and_starts_nothing(
    client, global_secret, admin_api, settings, uncapped
):
    settings.HELD_REQUESTS = 0
    enrolled(client, global_secret, ["alpha"])
    host = orbit_host("sync-host")
    before = refused_count()

    for path, body in (
        (RUN, {"sql": "SELECT 1", "targets": {"all": True}, "timeout": 1}),
        (SYNC, {"host_id": host.pk, "script_contents": "echo hi"}),
    ):
        response = admin_api.post(path, body, format="json")
        assert response.status_code == 503, response.content
        assert response["Retry-After"] == str(held_requests.RETRY_AFTER_SECONDS)
        message = response.json()["message"]
        assert "does not hold requests that wait" in message and "ws role" in message and path in message

    assert not Campaign.objects.exists() and not ScriptRun.objects.exists()
    assert refused_count() == before + 2


@pytest.mark.django_db
def test_one_more_than_the_limit_is_refused_and_the_slot_comes_back(
    client, global_secret, admin_api, settings, uncapped
):
    settings.HELD_REQUESTS = 1
    enrolled(client, global_secret, ["alpha"])
    body = {"sql": "SELECT 1", "targets": {"all": True}, "timeout": 0.2}
    with held_request():  # another request of this process is waiting
        response = admin_api.post(RUN, body, format="json")
        assert response.status_code == 503 and "already holds 1 requests" in response.json()["message"]
    assert not Campaign.objects.exists()

    response = admin_api.post(RUN, body, format="json")
    assert response.status_code == 200 and response.json()["timed_out"] is True
    response = admin_api.post(RUN, body, format="json")  # released after the wait, not leaked
    assert response.status_code == 200


@pytest.mark.django_db
def test_bad_input_and_refused_callers_do_not_keep_a_slot(client, global_secret, settings, uncapped):
    settings.HELD_REQUESTS = 1
    enrolled(client, global_secret, ["alpha"])
    observer = api_for(user_with_role("obs", "observer"))
    admin = api_for(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    assert observer.post(RUN, {"sql": "SELECT 1", "targets": {"all": True}}, format="json").status_code == 403
    assert admin.post(RUN, {"sql": "SELEC 1", "targets": {"all": True}}, format="json").status_code == 400
    response = admin.post(RUN, {"sql": "SELECT 1", "targets": {"all": True}, "timeout": 0.1}, format="json")
    assert response.status_code == 200


def test_a_cap_lowers_the_setting_and_never_raises_it(settings, uncapped):
    settings.HELD_REQUESTS = 4
    assert held_requests.current_limit() == 4
    held_requests.cap(1)
    assert held_requests.current_limit() == 1
    held_requests.cap(10)
    assert held_requests.current_limit() == 4
    held_requests.cap(-3)
    assert held_requests.current_limit() == 0


# --- real servers ----------------------------------------------------------------------------------


def _post_json(base_url: str, token: str, path: str, body: dict) -> tuple[int, dict, float]:
    began = time.monotonic()
    response = HTTPClient(base_url, token).post(path, json.dumps(body))
    return response.status_code, json.loads(response.content), time.monotonic() - began


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_two_thread_web_process_holds_one_run_and_keeps_serving_agents(tmp_path):
    """The production default (two threads): while one synchronous live query waits, the other
    thread answers agents at once, and a second synchronous call is refused rather than taking it."""
    EnrollSecret.objects.create(secret="held-secret")
    token = token_for(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    process, url = start_web(server_env(tmp_path / "var"), tmp_path / "web.log", workers=1, threads=2)
    try:
        wait_healthy(process, url)
        (agent,) = enroll_over_http(url, "held-secret", ["quiet"])  # online, never answers
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                _post_json, url, token, RUN, {"sql": "SELECT 1", "targets": {"all": True}, "timeout": 6}
            )
            wait_for(Campaign.objects.exists, 20, "the held run to start its campaign")

            began = time.monotonic()
            queries = agent.authed("distributed/read").json()["queries"]
            assert queries and time.monotonic() - began < 2  # the live query, on the free thread
            status, body, elapsed = _post_json(
                url, token, RUN, {"sql": "SELECT 2", "targets": {"all": True}, "timeout": 6}
            )
            assert status == 503 and "ws role" in body["message"] and elapsed < 2
            assert Campaign.objects.count() == 1

            status, body, elapsed = held.result(timeout=30)
        assert status == 200 and body["timed_out"] is True and elapsed >= 6
    finally:
        stop_group(process)
    assert "Traceback" not in (tmp_path / "web.log").read_text()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_daphne_holds_several_runs_at_once(tmp_path):
    """The ws role, where the proxies send these calls: every request has a thread of its own, so
    three synchronous runs wait side by side and all return after their timeout, not one after
    another."""
    token = token_for(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    host = orbit_host("sync-on-daphne", seen_ago=timedelta(seconds=1))  # online: the runs wait for it
    env = server_env(tmp_path / "var", DATABASE_CONN_MAX_AGE="0", SCRIPTS_SYNC_MAX_WAIT="3")
    process, url = start_daphne(env, tmp_path / "ws.log")
    try:
        wait_healthy(process, url)
        began = time.monotonic()
        bodies = [
            (RUN, {"sql": "SELECT 1", "targets": {"hosts": ["sync-on-daphne"]}, "timeout": 3}),
            (RUN, {"sql": "SELECT 2", "targets": {"hosts": ["sync-on-daphne"]}, "timeout": 3}),
            (SYNC, {"host_id": host.pk, "script_contents": "echo waits"}),
        ]
        with ThreadPoolExecutor(len(bodies)) as pool:
            replies = list(pool.map(lambda item: _post_json(url, token, *item), bodies))
        total = time.monotonic() - began
    finally:
        stop(process)
    assert [status for status, _, _ in replies] == [200, 200, 408], replies
    assert all(elapsed >= 3 for _, _, elapsed in replies[:2])
    assert total < 9, total  # side by side: three in a row would take over 3 + 3 + the script's wait
    assert Campaign.objects.count() == 2 and ScriptRun.objects.count() == 1
