"""Who may run scripts, act on devices and read results, over REST: Fleet's roles, global and per team.

Admins and maintainers run scripts (globally, or on their team's hosts); observers and observers+
only read the results of their teams' hosts. A host or run of another team is 404, so it does
not leak; a visible host a role may not act on is 403; gitops and users without a role get 403.
"""

from __future__ import annotations

import pytest

from hosts.choices import Role
from hosts.models import Team
from hostscripts import services
from tests.factories import api_for, user_with_role
from tests.scripts_support import BATCH, RUN, orbit_host, results

pytestmark = pytest.mark.django_db

ROLES = [Role.ADMIN, Role.MAINTAINER, Role.OBSERVER, Role.OBSERVER_PLUS, Role.GITOPS]
RUNNERS = {Role.ADMIN, Role.MAINTAINER}
READERS = {Role.ADMIN, Role.MAINTAINER, Role.OBSERVER, Role.OBSERVER_PLUS}


@pytest.fixture
def world(db):
    team_a, team_b = Team.objects.create(name="Alpha"), Team.objects.create(name="Beta")
    host_a = orbit_host("host-a", "ubuntu", team=team_a)
    host_b = orbit_host("host-b", "ubuntu", team=team_b)
    run_a = services.run_on_host(host_a, contents="echo a")
    run_b = services.run_on_host(host_b, contents="echo b")
    return {"team_a": team_a, "host_a": host_a, "host_b": host_b, "run_a": run_a, "run_b": run_b}


def _api(role: str, scope: str, world: dict):
    team = None if scope == "global" else world["team_a"]
    return api_for(user_with_role(f"{role}-{scope}", role, team))


@pytest.mark.parametrize("scope", ["global", "team"])
@pytest.mark.parametrize("role", ROLES)
def test_running_on_own_host(world, role, scope):
    api = _api(role, scope, world)
    response = api.post(RUN, {"host_id": world["host_a"].pk, "script_contents": "echo"}, format="json")
    expected = 202 if role in RUNNERS else 403
    assert response.status_code == expected, response.content
    lock = api.post(f"/api/v1/hosts/{world['host_a'].pk}/lock/")
    assert lock.status_code == (202 if role in RUNNERS else 403), lock.content


@pytest.mark.parametrize("role", ROLES)
def test_other_teams_host_is_not_found_for_team_users(world, role):
    api = _api(role, "team", world)
    response = api.post(RUN, {"host_id": world["host_b"].pk, "script_contents": "echo"}, format="json")
    assert response.status_code == (404 if role in READERS else 403)
    assert api.post(f"/api/v1/hosts/{world['host_b'].pk}/wipe/").status_code == (
        404 if role in READERS else 403
    )


@pytest.mark.parametrize("scope", ["global", "team"])
@pytest.mark.parametrize("role", ROLES)
def test_reading_results(world, role, scope):
    api = _api(role, scope, world)
    own = api.get(results(f"{world['run_a'].execution_id}/"))
    other = api.get(results(f"{world['run_b'].execution_id}/"))
    if role not in READERS:
        assert own.status_code == other.status_code == 403
        return
    assert own.status_code == 200
    assert other.status_code == (200 if scope == "global" else 404)
    listed = {r["execution_id"] for r in api.get(results("")).json()["results"]}
    expected = {world["run_a"].execution_id} | ({world["run_b"].execution_id} if scope == "global" else set())
    assert listed == expected
    assert api.get(f"/api/v1/hosts/{world['host_b'].pk}/scripts/").status_code == (
        200 if scope == "global" else 404
    )


@pytest.mark.parametrize("role", [Role.OBSERVER, Role.OBSERVER_PLUS])
def test_observers_cannot_cancel(world, role):
    api = _api(role, "team", world)
    assert api.post(results(f"{world['run_a'].execution_id}/cancel/")).status_code == 403
    upcoming = f"/api/v1/hosts/{world['host_a'].pk}/activities/upcoming/{world['run_a'].execution_id}/"
    assert api.delete(upcoming).status_code == 403


def test_team_maintainer_cancels_own_team_runs_only(world):
    api = _api(Role.MAINTAINER, "team", world)
    assert api.post(results(f"{world['run_a'].execution_id}/cancel/")).status_code == 200
    assert api.post(results(f"{world['run_b'].execution_id}/cancel/")).status_code == 404


def test_team_script_cannot_run_on_another_teams_host(world):
    from hostscripts.models import Script

    script = Script.objects.create(name="alpha.sh", contents="echo", team=world["team_a"])
    api = _api(Role.ADMIN, "global", world)
    response = api.post(RUN, {"host_id": world["host_b"].pk, "script_id": script.pk}, format="json")
    assert response.status_code == 422 and "another team" in response.json()["message"]
    batch = api.post(BATCH, {"script_id": script.pk, "host_ids": [world["host_b"].pk]}, format="json").json()
    assert batch["queued"] == 0


def test_anonymous_is_401_or_403(client, world):
    response = client.post(RUN, {"host_id": world["host_a"].pk, "script_contents": "echo"})
    assert response.status_code in (401, 403)


# --- the console pages -------------------------------------------------------------------------------

OK, LOGIN, GONE, DENIED = "ok", "login", "gone", "denied"


def _outcome(response) -> str:
    if response.status_code == 200:
        return OK
    if response.status_code == 302:
        location = response["Location"]
        if "/admin/login/" in location:
            return LOGIN
        return GONE if location.rstrip("/").endswith("/admin") else OK
    return {404: GONE, 403: DENIED}[response.status_code]


@pytest.mark.parametrize("scope", ["global", "team"])
@pytest.mark.parametrize("role", ROLES)
def test_console_pages(client, world, role, scope):
    client.force_login(
        user_with_role(f"{role}-{scope}", role, None if scope == "global" else world["team_a"])
    )
    host_a, host_b = world["host_a"].pk, world["host_b"].pk
    console = role != Role.GITOPS
    writer = role in RUNNERS

    def expect(url: str, wanted: str, method: str = "get", data: dict | None = None) -> None:
        response = getattr(client, method)(url, data or {})
        assert _outcome(response) == (wanted if console else LOGIN), (url, response.status_code)

    expect("/admin/hostscripts/script/", OK)
    expect("/admin/hostscripts/script/add/", OK if writer else DENIED)
    expect("/admin/hostscripts/scriptrun/", OK)
    expect(f"/admin/hostscripts/scriptrun/{world['run_a'].pk}/change/", OK)
    expect(f"/admin/hostscripts/scriptrun/{world['run_b'].pk}/change/", OK if scope == "global" else GONE)
    expect(f"/admin/hostscripts/scriptrun/host/{host_a}/run/", OK if writer else DENIED)
    expect(f"/admin/hostscripts/scriptrun/host/{host_a}/wipe/", OK if writer else DENIED)
    other_run_page = OK if scope == "global" and writer else (DENIED if scope == "global" else GONE)
    expect(f"/admin/hostscripts/scriptrun/host/{host_b}/run/", other_run_page)
