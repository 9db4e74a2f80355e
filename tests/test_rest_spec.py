"""``POST /api/v1/spec/``: Fleet YAML specs over REST (roles, dry run, errors, schema)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model

from hosts.choices import Role
from hosts.models import Team
from packs.models import Pack
from queries.models import Query
from tests.factories import api_for, user_with_role

pytestmark = pytest.mark.django_db

FLEET = Path(__file__).resolve().parent / "data" / "fleet"
URL = "/api/v1/spec/"
SPECS = """
apiVersion: v1
kind: query
spec: {name: uptime, query: SELECT * FROM uptime;}
---
apiVersion: v1
kind: pack
spec: {name: p, queries: [{query: uptime, interval: 60}]}
---
apiVersion: v1
kind: policy
spec: {name: Disk encrypted, query: SELECT 1;}
"""


@pytest.fixture
def admin():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


def post_yaml(api, text: str, query: str = "", content_type: str = "application/yaml"):
    return api.generic("POST", URL + query, text.encode(), content_type=content_type)


def test_admin_applies_yaml(admin):
    response = post_yaml(api_for(admin), SPECS)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["dry_run"] is False and body["applied"] is True
    assert body["summary"] == {"create": 2, "update": 0, "delete": 0, "unchanged": 0, "skipped": 1}
    assert [(c["kind"], c["name"], c["action"]) for c in body["changes"]] == [
        ("query", "uptime", "create"),
        ("pack", "p", "create"),
    ]
    assert body["changes"][0]["source"] == 'request body, document 1 (query "uptime")'
    assert body["skipped"] == [
        {
            "kind": "policy",
            "name": "Disk encrypted",
            "source": "request body, document 3",
            "reason": "policies are not supported yet",
        }
    ]
    assert Query.objects.get(name="uptime").author == admin
    assert Pack.objects.get(name="p").scheduled.get().query.name == "uptime"


def test_update_shows_changed_fields(admin):
    api = api_for(admin)
    post_yaml(api, SPECS)
    response = post_yaml(api, SPECS.replace("interval: 60", "interval: 90"), content_type="text/yaml")
    changes = {c["name"]: c for c in response.json()["changes"]}
    assert changes["uptime"]["action"] == "unchanged"
    assert changes["p"]["action"] == "update"
    assert changes["p"]["fields"]["queries"]["old"]["uptime"]["interval"] == 60
    assert changes["p"]["fields"]["queries"]["new"]["uptime"]["interval"] == 90


def test_json_body(admin):
    specs = [doc for doc in yaml.safe_load_all(SPECS)]
    response = api_for(admin).post(URL, {"specs": specs}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["changes"][1]["source"] == 'specs, document 2 (pack "p")'
    assert Pack.objects.filter(name="p").exists()


def test_yaml_in_another_charset(admin):
    text = "apiVersion: v1\nkind: query\nspec: {name: caf\u00e9, query: SELECT 1;}\n"
    response = api_for(admin).generic(
        "POST", URL, text.encode("latin-1"), content_type="application/yaml; charset=latin-1"
    )
    assert response.status_code == 200, response.json()
    assert Query.objects.filter(name="caf\u00e9").exists()


def test_dry_run_changes_nothing(admin):
    response = post_yaml(
        api_for(admin), (FLEET / "single-file-configuration.yml").read_text(), "?dry_run=true"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True and body["applied"] is False
    assert body["summary"]["create"] == 19
    assert Query.objects.count() == 0 and Pack.objects.count() == 0


def test_bad_dry_run_flag(admin):
    response = post_yaml(api_for(admin), SPECS, "?dry_run=perhaps")
    assert response.status_code == 400
    assert response.json() == {"message": "invalid request", "errors": {"dry_run": ["Use true or false."]}}


def test_errors_are_listed_and_nothing_is_applied(admin):
    bad = SPECS + "---\napiVersion: v1\nkind: label\nspec: {name: broken, query: SELEC 1}\n"
    response = post_yaml(api_for(admin), bad)
    assert response.status_code == 400
    assert response.json() == {
        "message": "1 problem(s) in the specs; nothing was applied.",
        "errors": {
            "specs": [
                'request body, document 4 (label "broken"): '
                'query: SQL syntax error: near "SELEC": syntax error.'
            ]
        },
    }
    assert Query.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ("kind: [", "application/yaml", 400, "The specs cannot be read; nothing was applied."),
        ("", "application/yaml", 400, 'Send YAML (application/yaml) or JSON {"specs": [...]}.'),
        ("---\n---\n", "application/yaml", 400, "There are no spec documents to apply."),
        (
            '{"queries": []}',
            "application/json",
            400,
            'Send YAML (application/yaml) or JSON {"specs": [...]}.',
        ),
        ("{nope", "application/json", 400, None),
        ("a=b", "application/x-www-form-urlencoded", 415, None),
    ],
)
def test_unreadable_bodies(admin, body, content_type, status, message):
    response = post_yaml(api_for(admin), body, content_type=content_type)
    assert response.status_code == status
    assert "message" in response.json()
    if message:
        assert response.json()["message"] == message


def test_too_large(admin, settings):
    settings.SPEC_MAX_BYTES = 100
    response = post_yaml(api_for(admin), SPECS)
    assert response.status_code == 413
    assert response.json() == {"message": "The specs are larger than 100 bytes."}


@pytest.mark.parametrize(
    ("role", "on_team", "allowed"),
    [
        (Role.ADMIN, False, True),
        (Role.GITOPS, False, True),
        (Role.MAINTAINER, False, False),
        (Role.OBSERVER, False, False),
        (Role.OBSERVER_PLUS, False, False),
        (Role.ADMIN, True, False),  # a team admin cannot change global things
        (Role.GITOPS, True, False),
        (None, False, False),
    ],
)
def test_roles(role, on_team, allowed):
    team = Team.objects.create(name="Ops") if on_team else None
    user = user_with_role("someone", role, team)
    response = post_yaml(api_for(user), SPECS, "?dry_run=true")
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        assert response.json() == {"message": "Applying specs needs the global admin or gitops role."}


def test_anonymous_is_refused(client):
    response = client.post(URL, SPECS, content_type="application/yaml")
    assert response.status_code in (401, 403)
    assert Query.objects.count() == 0


def test_in_the_openapi_schema(admin):
    response = api_for(admin).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = (
        response.json() if response["Content-Type"].endswith("json") else yaml.safe_load(response.content)
    )
    operation = schema["paths"]["/api/v1/spec/"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/yaml", "text/yaml", "application/json"}
    assert {p["name"] for p in operation["parameters"]} == {"dry_run"}
    assert set(operation["responses"]) >= {"200", "400", "403"}
