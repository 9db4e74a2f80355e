"""``/metrics`` in production is never open: without METRICS_TOKEN it refuses and says what to set,
and ``check --deploy`` warns (fleet.W001 / fleet.W002)."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks

pytestmark = pytest.mark.django_db

TOKEN = "a-long-random-metrics-token-0123456789"


@pytest.fixture
def production(settings):
    settings.EMBEDDED = False
    settings.METRICS_TOKEN = ""
    return settings


def check_ids(deploy: bool = True) -> set[str]:
    return {message.id for message in run_checks(include_deployment_checks=deploy)}


def test_production_without_a_token_refuses_and_tells_the_operator(client, production):
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    message = response.json()["message"]
    assert "METRICS_TOKEN" in message and "METRICS_TOKEN_FILE" in message
    assert b"django_http_requests" not in response.content
    # no header opens it either
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403


def test_production_with_a_token_needs_it(client, production):
    production.METRICS_TOKEN = TOKEN
    refused = client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert "METRICS_TOKEN" in refused.json()["message"]
    scraped = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert scraped.status_code == 200 and b"django_http_requests" in scraped.content


def test_the_embedded_default_keeps_metrics_open_on_loopback(client, settings):
    settings.EMBEDDED = True
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


def test_deploy_check_warns_when_production_has_no_token(production):
    assert "fleet.W001" in check_ids()
    assert "fleet.W001" not in check_ids(deploy=False)  # a deployment check only


def test_deploy_check_warns_about_a_placeholder_or_short_token(production):
    production.METRICS_TOKEN = "replace-me-with-a-random-metrics-token"
    assert "fleet.W002" in check_ids()
    production.METRICS_TOKEN = "short"
    assert "fleet.W002" in check_ids()
    production.METRICS_TOKEN = TOKEN
    assert not {"fleet.W001", "fleet.W002"} & check_ids()


def test_deploy_check_is_quiet_for_the_embedded_default(settings):
    settings.EMBEDDED = True
    settings.METRICS_TOKEN = ""
    assert not {"fleet.W001", "fleet.W002"} & check_ids()
