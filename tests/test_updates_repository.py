"""The update repository and ``manage.py updates``: keys, metadata versions, expiries, errors."""

from __future__ import annotations

import io
import json
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from tuf.api.metadata import Metadata

from updates import demo, keys
from updates import tuf_metadata as tm
from updates.client import target_path_for
from updates.passphrases import MissingPassphrase, PassphraseSource
from updates.repository import NewTarget, UpdateRepository

# `manage.py updates` records its changes in the audit trail (a database write).
pytestmark = pytest.mark.django_db

PASSPHRASES = {role: f"pass-{role}-123" for role in keys.ROLES}


@pytest.fixture
def repo_root(settings, tmp_path) -> Path:
    """Settings point at a fresh repository root; keys are sealed cheaply (the format is the same)."""
    root = tmp_path / "tuf"
    settings.AGENT_UPDATES = {
        **settings.AGENT_UPDATES,
        "REPOSITORY_DIR": str(root / "repository"),
        "KEYS_DIR": str(root / "keys"),
        "BASE_URL": "",
        "KEY_SCRYPT_N": 2**10,
    }
    return root


@pytest.fixture
def passphrases(monkeypatch) -> dict[str, str]:
    for role, value in PASSPHRASES.items():
        monkeypatch.setenv(f"FLEET_{role.upper()}_PASSPHRASE", value)
    return PASSPHRASES


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("updates", *args, stdout=out)
    return out.getvalue()


def add(target: Path, *extra: str, name: str = "orbit", platform: str = "linux", version: str = "1") -> str:
    options = ["--name", name, "--platform", platform, "--version", version]
    return run("add", "--target", str(target), *options, *extra)


def metadata(root: Path, role: str) -> Metadata:
    return Metadata.from_bytes((root / "repository" / f"{role}.json").read_bytes())


def orbit_file(tmp_path: Path, content: bytes = b"orbit binary v1", name: str = "orbit") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_init_writes_fleet_shaped_metadata_and_owner_only_keys(repo_root, passphrases):
    output = run("init")

    assert output.count("Generated") == 4
    root = metadata(repo_root, "root").signed
    assert root.consistent_snapshot is False
    assert root.version == 1
    for role in keys.ROLES:
        (keyid,) = root.roles[role].keyids
        assert root.keys[keyid].keytype == "ed25519"
        assert root.roles[role].threshold == 1
    assert (repo_root / "repository" / "1.root.json").read_bytes() == (
        repo_root / "repository" / "root.json"
    ).read_bytes()
    now = tm.utcnow()
    expected = {"root": 3650, "targets": 1095, "snapshot": 1095, "timestamp": 14}
    for role, days in expected.items():
        left = metadata(repo_root, role).signed.expires - now
        assert timedelta(days=days) - timedelta(minutes=5) < left <= timedelta(days=days)
    assert stat.S_IMODE((repo_root / "keys").stat().st_mode) == 0o700
    for role in keys.ROLES:
        key_path = repo_root / "keys" / f"{role}.json"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert PASSPHRASES[role] not in key_path.read_text()
    assert not list((repo_root / "repository").rglob("*.pem"))


def test_add_copies_to_each_tag_and_bumps_versions(repo_root, passphrases, tmp_path):
    run("init")
    output = run(
        "add", "--target", str(orbit_file(tmp_path)), "--name", "orbit", "--platform", "linux",
        "--version", "1.15.1", "-t", "1.15", "-t", "1", "-t", "stable",
    )  # fmt: skip

    paths = {f"orbit/linux/{channel}/orbit" for channel in ("1.15.1", "1.15", "1", "stable")}
    for path in paths:
        assert f"targets/{path}" in output
        assert (repo_root / "repository" / "targets" / path).read_bytes() == b"orbit binary v1"
    targets = metadata(repo_root, "targets").signed
    assert set(targets.targets) == paths
    entry = targets.targets["orbit/linux/stable/orbit"]
    assert entry.custom == {"version": "1.15.1"}
    assert set(entry.hashes) == {"sha256", "sha512"}
    assert entry.length == len(b"orbit binary v1")
    assert (targets.version, metadata(repo_root, "snapshot").signed.version) == (2, 2)
    assert metadata(repo_root, "timestamp").signed.version == 2

    run(
        "add", "--target", str(orbit_file(tmp_path, b"orbit binary v2", "orbit.exe")), "--name", "orbit",
        "--platform", "windows", "--version", "1.16.0", "-t", "edge",
    )  # fmt: skip
    assert metadata(repo_root, "targets").signed.version == 3
    assert metadata(repo_root, "snapshot").signed.meta["targets.json"].version == 3
    timestamp = metadata(repo_root, "timestamp").signed
    assert (timestamp.version, timestamp.snapshot_meta.version) == (3, 3)
    assert "orbit/windows/edge/orbit.exe" in metadata(repo_root, "targets").signed.targets

    listing = run("list")
    assert "orbit  windows   edge" in listing
    assert "timestamp.json: version 3" in listing


def test_timestamp_re_signs_only_the_timestamp(repo_root, passphrases):
    run("init")
    before = {role: metadata(repo_root, role).signed.version for role in ("targets", "snapshot")}

    assert "Signed timestamp version 2" in run("timestamp")

    assert {role: metadata(repo_root, role).signed.version for role in ("targets", "snapshot")} == before
    assert metadata(repo_root, "timestamp").signed.version == 2


def test_roots_prints_the_signed_root(repo_root, passphrases):
    run("init")
    printed = json.loads(run("roots"))
    assert printed == json.loads((repo_root / "repository" / "root.json").read_bytes())
    assert printed["signed"]["_type"] == "root"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "orbitd", "--platform", "linux"], "unknown target name 'orbitd'"),
        (["--name", "orbit", "--platform", "solaris"], "unknown platform 'solaris'"),
        (["--name", "orbit", "--platform", "linux", "-t", "../etc"], "invalid tag '../etc'"),
        (["--name", "orbit", "--platform", "linux", "-t", ".hidden"], "invalid tag '.hidden'"),
        (["--name", "orbit", "--platform", "linux", "-t", "a/b"], "invalid tag 'a/b'"),
    ],
)
def test_add_refuses_bad_input(repo_root, passphrases, tmp_path, args, message):
    run("init")
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        run("add", "--target", str(orbit_file(tmp_path)), "--version", "1.0.0", *args)
    assert metadata(repo_root, "targets").signed.targets == {}


def test_add_refuses_a_bad_version_and_a_missing_file(repo_root, passphrases, tmp_path):
    run("init")
    with pytest.raises(CommandError, match="invalid version"):
        add(orbit_file(tmp_path), version="..")
    with pytest.raises(CommandError, match="does not exist"):
        add(tmp_path / "nope")


def test_add_before_init(repo_root, passphrases, tmp_path):
    with pytest.raises(CommandError, match="run `manage.py updates init` first"):
        add(orbit_file(tmp_path))
    for action in ("timestamp", "roots", "list"):
        with pytest.raises(CommandError, match="init"):
            run(action)


def test_missing_passphrase_names_the_variable_and_writes_nothing(repo_root, monkeypatch):
    for role in ("root", "targets", "snapshot"):
        monkeypatch.setenv(f"FLEET_{role.upper()}_PASSPHRASE", "x")
    monkeypatch.delenv("FLEET_TIMESTAMP_PASSPHRASE", raising=False)
    with pytest.raises(CommandError, match="set FLEET_TIMESTAMP_PASSPHRASE"):
        run("init")
    assert not (repo_root / "keys").exists()
    assert not (repo_root / "repository" / "root.json").exists()


def test_wrong_passphrase_is_refused_before_anything_changes(repo_root, passphrases, monkeypatch, tmp_path):
    run("init")
    monkeypatch.setenv("FLEET_SNAPSHOT_PASSPHRASE", "not-the-one")
    with pytest.raises(CommandError, match=r"wrong snapshot passphrase \(from FLEET_SNAPSHOT_PASSPHRASE\)"):
        add(orbit_file(tmp_path))
    assert metadata(repo_root, "targets").signed.version == 1
    assert not (repo_root / "repository" / "targets" / "orbit").exists()


def test_init_twice_is_refused(repo_root, passphrases):
    run("init")
    with pytest.raises(CommandError, match="already exists"):
        run("init")


def test_change_passphrase_keeps_the_key(repo_root, passphrases, monkeypatch):
    run("init")
    keyid = keys.public_key(repo_root / "keys", "timestamp").keyid
    monkeypatch.setenv("FLEET_NEW_TIMESTAMP_PASSPHRASE", "brand-new-passphrase")
    run("change-passphrase", "timestamp")

    assert keys.public_key(repo_root / "keys", "timestamp").keyid == keyid
    with pytest.raises(CommandError, match="wrong timestamp passphrase"):
        run("timestamp")
    monkeypatch.setenv("FLEET_TIMESTAMP_PASSPHRASE", "brand-new-passphrase")
    assert "Signed timestamp version 2" in run("timestamp")


def test_keys_are_sealed_with_scrypt_by_default(tmp_path):
    public = keys.write_key(tmp_path / "keys", "targets", keys.generate(), "secret passphrase")
    document = json.loads((tmp_path / "keys" / "targets.json").read_text())
    assert document["kdf"]["name"] == "scrypt" and document["kdf"]["n"] == 2**15
    signer = keys.load_signer(tmp_path / "keys", "targets", "secret passphrase")
    assert signer.public_key.keyid == public.keyid
    with pytest.raises(keys.WrongPassphrase):
        keys.load_private_key(tmp_path / "keys", "targets", "guess")
    with pytest.raises(keys.KeyFileError):  # a key file cannot be passed off as another role's
        (tmp_path / "keys" / "targets.json").rename(tmp_path / "keys" / "snapshot.json")
        keys.load_private_key(tmp_path / "keys", "snapshot", "secret passphrase")


def test_demo_repository_is_fast_idempotent_and_embedded_only(settings, repo_root):
    settings.EMBEDDED = True
    started = time.monotonic()
    assert "created the demo update repository" in demo.ensure_demo_repository()
    assert time.monotonic() - started < 2.0
    repository = UpdateRepository.from_settings()
    versions = {(e.name, e.platform, e.channel): e.version for e in repository.targets()}
    assert versions[("orbit", "linux", "stable")] == demo.DEMO_VERSIONS["stable"]["orbit"]
    assert versions[("orbit", "linux", "edge")] == demo.DEMO_VERSIONS["edge"]["orbit"]
    assert versions[("osqueryd", "macos-app", "stable")] == demo.DEMO_VERSIONS["stable"]["osqueryd"]
    assert versions[("desktop", "windows", "edge")] == demo.DEMO_VERSIONS["edge"]["desktop"]
    assert (repo_root / "repository/targets/desktop/windows/stable/fleet-desktop.exe").is_file()
    timestamp_version = metadata(repo_root, "timestamp").signed.version

    assert "ready" in demo.ensure_demo_repository()
    assert metadata(repo_root, "timestamp").signed.version == timestamp_version

    settings.EMBEDDED = False
    assert demo.ensure_demo_repository().startswith("skipped")


def test_demo_leaves_a_real_repository_alone(settings, repo_root, passphrases):
    settings.EMBEDDED = True
    run("init")
    assert "not a demo one" in demo.ensure_demo_repository()
    assert metadata(repo_root, "targets").signed.targets == {}


def test_new_target_channels_put_the_version_first_once():
    target = NewTarget("orbit", "linux", "1.2.3", ("stable", "1.2.3", "1.2"), data=b"x")
    assert target.channels() == ["1.2.3", "stable", "1.2"]


def test_damaged_metadata_is_reported_not_raised(repo_root, passphrases):
    run("init")
    (repo_root / "repository" / "targets.json").write_text("{not json")
    with pytest.raises(CommandError, match="targets.json is not valid TUF metadata"):
        run("list")


def test_prompts_for_what_the_environment_lacks(monkeypatch):
    monkeypatch.delenv("FLEET_TARGETS_PASSPHRASE", raising=False)
    answers = iter(["typed-passphrase", "typed-passphrase", "one", "two"])
    source = PassphraseSource(interactive=True, confirm=True, ask=lambda prompt: next(answers))
    assert source("targets") == "typed-passphrase"
    assert source.describe("targets") == ""
    with pytest.raises(MissingPassphrase, match="differ"):
        source("targets")
    monkeypatch.setenv("FLEET_TARGETS_PASSPHRASE", "from-env")
    assert source("targets") == "from-env"
    assert source.describe("targets") == " (from FLEET_TARGETS_PASSPHRASE)"


ORBIT_PATHS = [
    ("orbit", "linux", "orbit/linux/stable/orbit"),
    ("orbit", "windows", "orbit/windows/stable/orbit.exe"),
    ("osqueryd", "macos-app", "osqueryd/macos-app/stable/osqueryd.app.tar.gz"),
    ("desktop", "macos", "desktop/macos/stable/desktop.app.tar.gz"),
    ("desktop", "linux", "desktop/linux/stable/desktop.tar.gz"),
    ("desktop", "windows", "desktop/windows/stable/fleet-desktop.exe"),
]


def test_paths_orbit_asks_for_match_what_demo_publishes(settings, repo_root):
    settings.EMBEDDED = True
    demo.ensure_demo_repository()
    for component, platform, path in ORBIT_PATHS:
        assert target_path_for(component, platform) == path
        assert (repo_root / "repository" / "targets" / path).is_file(), path


def test_publishing_is_in_the_audit_trail(tmp_path, monkeypatch):
    from activities.models import Activity

    root = tmp_path / "repo"
    for role in ("root", "targets", "snapshot", "timestamp"):
        monkeypatch.setenv(f"FLEET_{role.upper()}_PASSPHRASE", f"pass-{role}-123")
    target = tmp_path / "orbit"
    target.write_bytes(b"orbit binary")
    call_command("updates", "init", "--path", str(root), stdout=io.StringIO())
    call_command(
        "updates", "add", "--path", str(root), "--target", str(target), "--name", "orbit",
        "--platform", "linux", "--version", "1.40.0", "-t", "stable", stdout=io.StringIO(),
    )  # fmt: skip
    types = list(Activity.objects.order_by("id").values_list("type", "surface"))
    assert types == [("initialised_update_repository", "command"), ("published_agent_update", "command")]
    published = Activity.objects.get(type="published_agent_update")
    assert published.details["version"] == "1.40.0"
    assert "orbit/linux/stable/orbit" in published.details["paths"]
