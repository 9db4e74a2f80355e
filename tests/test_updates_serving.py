"""/tuf/: what is served and how, a real TUF client against the live server, and the timestamp task."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.exceptions import ExpiredMetadataError, LengthOrHashMismatchError
from tuf.api.exceptions import RepositoryError as TufRepositoryError
from tuf.ngclient import Updater, UpdaterConfig

from fleet.celery import app as celery_app
from updates import client as tuf_client
from updates import tasks
from updates import tuf_metadata as tm
from updates.repository import NewTarget, UpdateRepository

PASSPHRASES = {role: f"pass-{role}-456" for role in ("root", "targets", "snapshot", "timestamp")}
ORBIT = b"#!/bin/sh\necho orbit 1.38.1\n" * 50
OSQUERYD = b"osqueryd app bundle"
APP = "osqueryd.app.tar.gz"
OSQUERYD_PATH = "osqueryd/macos-app/stable/osqueryd.app.tar.gz"


@pytest.fixture(scope="module")
def signed_once(tmp_path_factory) -> Path:
    """A repository with orbit (stable, edge) and osqueryd for macOS, signed once per module."""
    root = tmp_path_factory.mktemp("tuf")
    repo = UpdateRepository(root / "repository", root / "keys", scrypt_n=2**10)
    repo.init(PASSPHRASES.__getitem__)
    repo.add_targets(
        [
            NewTarget("orbit", "linux", "1.38.1", ("1.38", "stable"), data=ORBIT),
            NewTarget("orbit", "linux", "1.39.0", ("edge",), data=b"orbit edge"),
            NewTarget("osqueryd", "macos-app", "5.14.1", ("stable",), data=OSQUERYD, source_name=APP),
        ],
        PASSPHRASES.__getitem__,
    )
    return root


@pytest.fixture
def repository(settings, tmp_path, monkeypatch, signed_once) -> UpdateRepository:
    """This test's own copy, served; no passphrase in the environment, so nothing re-signs
    behind a test's back."""
    for role in PASSPHRASES:
        monkeypatch.delenv(f"FLEET_{role.upper()}_PASSPHRASE", raising=False)
    shutil.copytree(signed_once, tmp_path / "tuf")
    settings.AGENT_UPDATES = {
        **settings.AGENT_UPDATES,
        "REPOSITORY_DIR": str(tmp_path / "tuf" / "repository"),
        "KEYS_DIR": str(tmp_path / "tuf" / "keys"),
        "BASE_URL": "",
        "KEY_SCRYPT_N": 2**10,
    }
    tasks.reset_clock()
    yield UpdateRepository.from_settings()
    tasks.reset_clock()


@pytest.fixture
def eager():
    saved = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = saved


def updater(base_url: str, root: bytes, cache: Path) -> Updater:
    (cache / "metadata").mkdir(parents=True, exist_ok=True)
    (cache / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(cache / "metadata"),
        metadata_base_url=f"{base_url}/tuf/",
        target_base_url=f"{base_url}/tuf/targets/",
        target_dir=str(cache / "targets"),
        config=UpdaterConfig(prefix_targets_with_hash=False),
        bootstrap=root,
    )


# --- a TUF client against the live server -------------------------------------------------------


def test_ngclient_downloads_a_target_byte_for_byte(live_server, repository, tmp_path):
    tuf = updater(live_server.url, repository.root_bytes(), tmp_path / "client")
    tuf.refresh()
    info = tuf.get_targetinfo("orbit/linux/stable/orbit")
    assert info is not None and info.custom == {"version": "1.38.1"}

    path = tuf.download_target(info, str(tmp_path / "orbit"))

    assert Path(path).read_bytes() == ORBIT
    assert tuf.get_targetinfo(OSQUERYD_PATH).custom == {"version": "5.14.1"}


def test_ngclient_refuses_a_target_changed_after_signing(live_server, repository, tmp_path):
    served = repository.repository_dir / "targets" / "orbit/linux/stable/orbit"
    served.write_bytes(ORBIT.replace(b"1.38.1", b"6.66.6"))  # same length, other bytes
    tuf = updater(live_server.url, repository.root_bytes(), tmp_path / "client")
    tuf.refresh()

    with pytest.raises(LengthOrHashMismatchError):
        tuf.download_target(tuf.get_targetinfo("orbit/linux/stable/orbit"), str(tmp_path / "orbit"))
    assert not (tmp_path / "orbit").exists()


def test_ngclient_refuses_metadata_changed_after_signing(live_server, repository, tmp_path):
    targets = repository.metadata_path("targets")
    targets.write_bytes(targets.read_bytes().replace(b'"1.39.0"', b'"9.99.9"'))
    with pytest.raises(TufRepositoryError):
        tuf_client.check_for_updates(
            f"{live_server.url}/tuf", repository.root_bytes(), tmp_path / "c", ["orbit/linux/edge/orbit"]
        )


def _run_task(task):
    """Run a task here and return its result. Celery's "never .get() inside a task" guard is a
    process-wide flag that any thread running an eager task sets (the session's live server runs
    the MDM pushes of other tests eagerly): this test is not inside a task, so it opts out."""
    return task.apply().get(disable_sync_subtasks=False)


def test_expired_timestamp_is_refused_then_refreshed_by_the_beat_task(
    live_server, repository, tmp_path, monkeypatch, caplog
):
    repository.refresh_timestamp(PASSPHRASES["timestamp"], expires=tm.utcnow() - timedelta(hours=1))
    with pytest.raises(ExpiredMetadataError):
        updater(live_server.url, repository.root_bytes(), tmp_path / "first").refresh()

    with caplog.at_level(logging.ERROR, logger="updates.tasks"):  # no passphrase: said loudly, no crash
        assert "FLEET_TIMESTAMP_PASSPHRASE is not set" in _run_task(tasks.refresh_timestamp)["error"]
    assert "cannot be re-signed" in caplog.text

    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", PASSPHRASES["timestamp"])
    done = _run_task(tasks.refresh_timestamp)

    assert done["version"] == 4
    assert repository.timestamp_expires() - tm.utcnow() > timedelta(days=13)
    versions = tuf_client.check_for_updates(
        f"{live_server.url}/tuf", repository.root_bytes(), tmp_path / "second", ["orbit/linux/edge/orbit"]
    )
    assert versions == {"orbit/linux/edge/orbit": "1.39.0"}


# --- the beat task --------------------------------------------------------------------------------


def test_task_leaves_a_fresh_timestamp_alone(repository, monkeypatch):
    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", PASSPHRASES["timestamp"])
    assert tasks.refresh_timestamp()["skipped"] == "fresh"
    repository.refresh_timestamp(PASSPHRASES["timestamp"], expires=tm.utcnow() + timedelta(days=6))
    assert tasks.refresh_timestamp()["version"] == 4


def test_task_does_nothing_without_a_repository(settings, tmp_path):
    settings.AGENT_UPDATES = {**settings.AGENT_UPDATES, "REPOSITORY_DIR": str(tmp_path / "none")}
    assert tasks.refresh_timestamp() == {"skipped": "no repository"}
    assert not (tmp_path / "none").exists()


def test_task_logs_a_wrong_passphrase(repository, monkeypatch, caplog):
    repository.refresh_timestamp(PASSPHRASES["timestamp"], expires=tm.utcnow() + timedelta(days=1))
    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", "wrong")
    with caplog.at_level(logging.ERROR, logger="updates.tasks"):
        assert "wrong timestamp passphrase" in tasks.refresh_timestamp()["error"]
    assert "could not be re-signed" in caplog.text


def test_beat_schedule_runs_the_task(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["updates-refresh-timestamp"]
    assert entry["task"] == tasks.TASK_NAME == tasks.refresh_timestamp.name
    assert entry["schedule"] <= 6 * 3600


def test_embedded_server_refreshes_when_serving_the_timestamp(client, repository, monkeypatch, eager):
    repository.refresh_timestamp(PASSPHRASES["timestamp"], expires=tm.utcnow() + timedelta(days=2))
    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", PASSPHRASES["timestamp"])

    client.get("/tuf/timestamp.json")
    assert repository.timestamp_expires() - tm.utcnow() > timedelta(days=13)
    version = repository.roles()[-1].version
    repository.refresh_timestamp(PASSPHRASES["timestamp"], expires=tm.utcnow() + timedelta(days=2))
    client.get("/tuf/timestamp.json")  # checked at most once per interval
    assert repository.roles()[-1].version == version + 1


# --- serving --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../keys/timestamp.json",
        "targets/../../keys/root.json",
        "targets/orbit/linux/stable/../../../../keys/root.json",
        "%2e%2e/keys/root.json",
        "targets/%2e%2e/%2e%2e/keys/root.json",
        ".lock",
        "targets/orbit/linux/stable/.orbit.1.tmp",
        "targets//orbit",
        "targets/orbit\\..\\x",
        "keys/root.json",
        "root.json.bak",
        "0.root.json",
        "",
        "targets",
        "targets/",
        "targets/orbit/linux",  # a directory
        "5.root.json",  # not there (a client asks for the next root this way)
    ],
)
def test_only_repository_files_are_served(client, repository, path):
    assert client.get(f"/tuf/{path}").status_code == 404


def test_a_symlink_out_of_the_repository_is_not_followed(client, repository):
    (repository.repository_dir / "targets" / "escape").symlink_to(repository.keys_dir / "root.json")
    assert client.get("/tuf/targets/escape").status_code == 404


def test_metadata_is_json_and_never_cached_stale(client, repository):
    for name in ("root.json", "1.root.json", "targets.json", "snapshot.json", "timestamp.json"):
        response = client.get(f"/tuf/{name}")
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert response["Cache-Control"] == "no-cache"
        assert b"".join(response.streaming_content) == (repository.repository_dir / name).read_bytes()


def test_targets_are_binary_cacheable_and_revalidate(client, repository):
    response = client.get(f"/tuf/targets/{OSQUERYD_PATH}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in response
    assert response["Cache-Control"].startswith("public, max-age=")
    assert response["Content-Length"] == str(len(OSQUERYD))
    assert b"".join(response.streaming_content) == OSQUERYD

    again = client.get(f"/tuf/targets/{OSQUERYD_PATH}", headers={"If-None-Match": response["ETag"]})
    assert again.status_code == 304


def test_head_gives_the_headers_without_the_body(client, repository):
    response = client.head("/tuf/targets/orbit/linux/stable/orbit")
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(ORBIT))
    assert response["Content-Type"] == "application/octet-stream"
    assert response.content == b""


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_the_repository_is_read_only(client, repository, method):
    response = getattr(client, method)("/tuf/timestamp.json")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_with_a_base_url_agents_are_redirected(client, repository, settings):
    settings.AGENT_UPDATES = {**settings.AGENT_UPDATES, "BASE_URL": "https://updates.example.com/fleet/"}
    response = client.get("/tuf/targets/orbit/linux/stable/orbit")
    assert response.status_code == 302
    assert response["Location"] == "https://updates.example.com/fleet/targets/orbit/linux/stable/orbit"
    assert client.get("/tuf/../keys/root.json").status_code == 404


def test_nothing_is_served_before_init(client, settings, tmp_path):
    settings.AGENT_UPDATES = {**settings.AGENT_UPDATES, "REPOSITORY_DIR": str(tmp_path / "none")}
    settings.AGENT_UPDATES["BASE_URL"] = ""
    assert client.get("/tuf/root.json").status_code == 404


# --- the simulator's client ---------------------------------------------------------------------


def test_check_for_updates_downloads_when_asked(live_server, repository, tmp_path):
    cache = tmp_path / "host"
    wanted = ["orbit/linux/stable/orbit", OSQUERYD_PATH, "desktop/linux/x/y"]
    versions = tuf_client.check_for_updates(
        f"{live_server.url}/tuf/", repository.root_bytes(), cache, wanted, download=True
    )

    assert versions == {"orbit/linux/stable/orbit": "1.38.1", OSQUERYD_PATH: "5.14.1"}
    assert tuf_client.target_file(cache, "orbit/linux/stable/orbit").read_bytes() == ORBIT


def test_expected_404s_are_not_logged(client, repository, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client.get("/tuf/2.root.json").status_code == 404  # a client looking for a newer root
        assert client.get("/no-such-page/").status_code == 404
    assert "Not Found: /no-such-page/" in caplog.text
    assert "/tuf/" not in caplog.text
