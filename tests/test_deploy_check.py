"""Django's deployment checklist passes with the documented production environment.

The variables come from docker/production.env.example, so what the example documents is what is
tested. Only the secrets (placeholders there) and the data directory are substituted, and the
MySQL URL becomes an SQLite one when the MySQL driver is not installed (``check`` does not connect
to the database, but Django imports the driver of the configured backend).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / "docker" / "production.env.example"
REQUIRED = {
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_SECURE_SSL_REDIRECT",
    "DJANGO_SECURE_HSTS_SECONDS",
    "DJANGO_SECURE_COOKIES",
    "DJANGO_BEHIND_PROXY",
    "FLEET_VAR_DIR",
    "METRICS_TOKEN",
    "FLEET_SERVER_PRIVATE_KEY",
}

pytestmark = pytest.mark.slow


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as ``docker --env-file`` reads them (no quotes, no expansion)."""
    variables: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key.isidentifier(), f"{path.name}:{number}: {line!r}"
        assert key not in variables, f"{path.name}:{number}: {key} is set twice"
        variables[key] = value
    return variables


def mysql_driver_installed() -> bool:
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return False
    return True


def production_env(tmp_path: Path) -> dict[str, str]:
    variables = read_env_file(ENV_EXAMPLE)
    for name, value in variables.items():  # every secret the example leaves as a placeholder
        if value.startswith("replace-me"):
            variables[name] = secrets.token_urlsafe(50)
    variables["FLEET_VAR_DIR"] = str(tmp_path)
    if not mysql_driver_installed():
        variables["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return variables


def manage(tmp_path: Path, variables: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py with only these variables (nothing leaks in from the test environment)."""
    env = {
        name: os.environ[name]
        for name in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")
        if name in os.environ
    }
    env.update(variables)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_example_documents_every_production_variable():
    variables = read_env_file(ENV_EXAMPLE)
    assert set(variables) >= REQUIRED, f"missing: {sorted(REQUIRED - set(variables))}"
    assert variables["DATABASE_URL"].startswith("mysql://")
    assert variables["REDIS_URL"].startswith("redis://")
    assert "*" not in variables["DJANGO_ALLOWED_HOSTS"]
    assert int(variables["DJANGO_SECURE_HSTS_SECONDS"]) >= 31536000
    for flag in ("DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_COOKIES", "DJANGO_BEHIND_PROXY"):
        assert variables[flag] in ("1", "true", "True", "yes", "on"), flag
    assert "DJANGO_DEBUG" not in variables or variables["DJANGO_DEBUG"] in (
        "0",
        "false",
        "False",
        "no",
        "off",
    )


def test_example_holds_no_usable_secret_key():
    """The example must not ship a key someone could deploy as is."""
    key = read_env_file(ENV_EXAMPLE)["DJANGO_SECRET_KEY"]
    assert len(key) < 50 or "replace" in key.lower() or "change" in key.lower()


def test_example_holds_no_usable_metrics_token():
    token = read_env_file(ENV_EXAMPLE)["METRICS_TOKEN"]
    assert token.startswith("replace-me")


def test_check_deploy_passes_with_the_production_environment(tmp_path):
    result = manage(tmp_path, production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in result.stdout, output
    assert "WARNINGS" not in output and "ERRORS" not in output


def test_check_deploy_fails_with_the_placeholder_secret_key(tmp_path):
    """The example cannot be deployed unchanged: Django flags its placeholder key."""
    variables = production_env(tmp_path)
    variables["DJANGO_SECRET_KEY"] = read_env_file(ENV_EXAMPLE)["DJANGO_SECRET_KEY"]
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["DJANGO_SECRET_KEY", "FLEET_SERVER_PRIVATE_KEY"])
def test_placeholder_secrets_stop_migrate(tmp_path, name):
    """A template's placeholder is an error, not a warning: `migrate` (and so the Kubernetes
    pods, which wait for `migrate --check`) refuses to run with it, whatever its length."""
    variables = production_env(tmp_path)
    variables[name] = "replace-me-" + "x" * 60
    result = manage(tmp_path, variables, "check")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "fleet.E002" in output and name in output

    variables.pop("DATABASE_URL"), variables.pop("REDIS_URL")  # the embedded default: no check
    result = manage(tmp_path, variables, "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_is_safe_with_only_the_required_variables(tmp_path):
    """HTTPS redirect, HSTS and secure cookies are production's defaults, not opt-ins."""
    full = production_env(tmp_path)
    required = ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "METRICS_TOKEN", "DJANGO_ALLOWED_HOSTS")
    variables = {name: full[name] for name in required}
    variables["FLEET_VAR_DIR"] = full["FLEET_VAR_DIR"]
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output and "ERRORS" not in output


def test_check_deploy_fails_when_the_security_settings_are_turned_off(tmp_path):
    """The test can fail: turning the HTTPS settings off is reported."""
    variables = production_env(tmp_path)
    variables.update(
        DJANGO_SECURE_SSL_REDIRECT="0", DJANGO_SECURE_HSTS_SECONDS="0", DJANGO_SECURE_COOKIES="0"
    )
    variables.pop("DJANGO_SECURE_HSTS_PRELOAD", None)
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in output, check_id


def test_check_deploy_warns_without_a_metrics_token(tmp_path):
    """Production with /metrics unprotected (so refused) is reported; so is the placeholder."""
    variables = production_env(tmp_path)
    del variables["METRICS_TOKEN"]
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "fleet.W001" in result.stdout + result.stderr

    variables["METRICS_TOKEN"] = read_env_file(ENV_EXAMPLE)["METRICS_TOKEN"]
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "fleet.W002" in result.stdout + result.stderr
