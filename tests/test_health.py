"""Liveness (/healthz), readiness (/readyz) and Prometheus metrics (/metrics)."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from prometheus_client.parser import text_string_to_metric_families


def _database_down(execute, sql, params, many, context):
    raise OperationalError("server has gone away")


# --- /healthz ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_is_200_without_any_query(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_healthz_works_where_the_database_is_forbidden(client):
    """No django_db mark: pytest-django makes any database access here an error."""
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_healthz_stays_200_while_the_database_is_down(client):
    with connection.execute_wrapper(_database_down):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


# --- /readyz -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_is_200_with_database_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert all(value == "ok" for value in body["checks"].values())
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_fails(client, settings, tmp_path):
    """The check opens its own connection: a database it cannot open is reported, not raised."""
    if connection.vendor != "sqlite":
        pytest.skip("the MariaDB outage is tested through a proxy in test_outages.py")
    from django.db import connections

    database = connections.settings["default"]
    original = database["NAME"]
    database["NAME"] = str(tmp_path / "missing-dir" / "db.sqlite3")  # SQLite cannot open it
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "error: OperationalError"
        assert "unable to open" not in response.content.decode()  # no driver details leak
    finally:
        database["NAME"] = original
    assert client.get("/readyz").status_code == 200  # and recovers when it is back


@pytest.mark.django_db
def test_readyz_is_503_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("error: ")


# --- /metrics ------------------------------------------------------------------------------------


def _assert_prometheus_text(response) -> list[str]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    names = [family.name for family in text_string_to_metric_families(text)]  # parses every line
    assert names and "# HELP" in text and "# TYPE" in text
    return names


@pytest.mark.django_db
def test_metrics_are_open_when_no_token_is_set(client, settings):
    """In the embedded default only (production refuses: tests/test_metrics_auth.py)."""
    settings.EMBEDDED = True
    settings.METRICS_TOKEN = ""
    names = _assert_prometheus_text(client.get("/metrics"))
    assert any(name.startswith("django_http_requests") for name in names)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        "Basic czNjcjN0LW0zdHIxY3M=",
        "Bearer s3cr3t-m3tr1c",
    ],
    ids=["missing", "empty", "scheme-only", "blank-token", "wrong", "basic", "prefix-of-token"],
)
def test_metrics_refuse_a_missing_or_wrong_token(client, settings, authorization):
    settings.METRICS_TOKEN = "s3cr3t-m3tr1cs"
    extra = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = client.get("/metrics", **extra)
    assert response.status_code in (401, 403)
    assert response.json()["error"]
    assert b"django_http_requests" not in response.content


@pytest.mark.django_db
def test_metrics_with_the_bearer_token_are_prometheus_text(client, settings):
    settings.METRICS_TOKEN = "s3cr3t-m3tr1cs"
    client.get("/healthz")  # at least one request counted
    names = _assert_prometheus_text(client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cr3t-m3tr1cs"))
    assert any(name.startswith("django_http_requests") for name in names)
    assert any(name.startswith("django_http_responses") for name in names)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_are_exempt_from_the_ssl_redirect(client, settings, path):
    """Load balancers and Prometheus reach these over plain HTTP inside the cluster."""
    settings.SECURE_SSL_REDIRECT = True
    settings.METRICS_TOKEN = "a-metrics-token-of-enough-length-0123"
    extra = {"HTTP_AUTHORIZATION": f"Bearer {settings.METRICS_TOKEN}"} if path == "/metrics" else {}
    assert client.get(path, **extra).status_code == 200
    assert client.get("/admin/").status_code == 301  # everything else is redirected to HTTPS
