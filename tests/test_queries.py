"""Saved queries: the SQL check, the osquery-schema warnings and the rules every surface shares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ValidationError

from queries import schema, services
from queries.models import Query
from queries.schema import get_schema, table_warnings, tables_in

SHARED = str(Path(__file__).resolve().parent / "data" / "fleet") + "/"


# --- tables named in SQL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("SELECT * FROM processes", ["processes"]),
        (
            "select p.name from processes p join listening_ports l using (pid)",
            ["processes", "listening_ports"],
        ),
        ("SELECT * FROM users, groups WHERE 1", ["users", "groups"]),
        ("SELECT * FROM main.processes", ["processes"]),
        ('SELECT * FROM "time" JOIN [uptime] JOIN `os_version`', ["time", "uptime", "os_version"]),
        ("SELECT * FROM (SELECT * FROM users) u LEFT JOIN (SELECT 1) x", ["users"]),
        ("SELECT * FROM (users JOIN groups)", ["users", "groups"]),
        ("SELECT (SELECT count(*) FROM users) AS n FROM system_info", ["users", "system_info"]),
        ("SELECT * FROM users WHERE uid IN (SELECT uid FROM user_groups)", ["users", "user_groups"]),
        ("SELECT 'FROM fake' AS s FROM users -- JOIN commented\n/* FROM other */", ["users"]),
        ("SELECT * FROM json_each('[1]'), pragma_table_info('x') JOIN file f", ["file"]),
        ("SELECT 1 IS DISTINCT FROM 2 FROM users", ["users"]),
        (
            "WITH RECURSIVE split(word, str) AS (SELECT '', 'a b' UNION ALL SELECT 1, 2 FROM split) "
            "SELECT * FROM split JOIN users",
            ["users"],
        ),
        ("WITH x AS MATERIALIZED (SELECT * FROM users) SELECT * FROM x", ["users"]),
        ("SELECT * FROM sqlite_master", []),
        ("SELECT 1", []),
    ],
)
def test_tables_in(sql, tables):
    assert tables_in(sql) == tables


def _library(name: str) -> list[dict]:
    with open(SHARED + name, encoding="utf-8") as handle:
        return [
            d["spec"]
            for d in yaml.safe_load_all(handle)
            if d and d.get("kind") in ("query", "report", "policy")
        ]


@pytest.mark.parametrize(
    ("file", "unknown"),
    [
        # shared/data/README.md lists exactly these: extension tables, and yara (now split up).
        ("standard-query-library.yml", {"mdm", "file_lines", "parse_json", "yara"}),
        ("standard-query-library-2021.yml", {"atom_packages", "pkg_packages"}),
        ("multi-file/queries.yml", {"kolide_launcher_info"}),
    ],
)
def test_fleets_query_libraries_name_only_the_known_non_osquery_tables(file, unknown):
    known = get_schema().tables
    found = {table for spec in _library(file) for table in tables_in(spec["query"]) if table not in known}
    assert found == unknown  # the CTE names (extensions_plist, split, target_jars) are not reported


def test_schema_is_loaded_once_and_lists_osquerys_tables():
    first = get_schema()
    assert get_schema() is first
    assert len(first.tables) == 284
    assert first.tables["registry"] == frozenset({"windows"})
    assert "a5b14f63" in first.source


def test_unreadable_schema_skips_the_check_instead_of_failing(settings, tmp_path, caplog):
    settings.OSQUERY_SCHEMA_PATH = str(tmp_path / "missing.json")
    get_schema.cache_clear()
    try:
        assert not get_schema().available
        assert table_warnings("SELECT * FROM no_such_table", ["darwin"]) == []
        assert "unreadable" in caplog.text
    finally:
        del settings.OSQUERY_SCHEMA_PATH
        get_schema.cache_clear()
    assert schema.get_schema().available


def test_warnings_depend_on_the_querys_platforms():
    assert table_warnings("SELECT * FROM registry", []) == []  # all platforms: a Windows table is fine
    assert table_warnings("SELECT * FROM registry", ["windows"]) == []
    [warning] = table_warnings("SELECT * FROM registry", ["darwin", "windows"])
    assert "'registry' is not available on darwin" in warning
    [unknown] = table_warnings("SELECT * FROM procesess", [])
    assert "'procesess' is not in osquery's schema" in unknown
    assert table_warnings("SELECT * FROM registry", ["chrome"]) == []  # no schema data for chrome


# --- checking a query --------------------------------------------------------------------------------------


def _query(**fields) -> Query:
    fields.setdefault("name", "q")
    fields.setdefault("query", "SELECT * FROM osquery_info")
    return Query(**fields)


@pytest.mark.django_db
def test_syntax_error_is_an_error_with_the_parsers_message():
    with pytest.raises(ValidationError) as exc:
        services.check_query(_query(query="SELEC * FROM users"))
    assert 'near "SELEC": syntax error' in " ".join(exc.value.message_dict["query"])


@pytest.mark.django_db
def test_unknown_table_is_a_warning_and_the_query_saves():
    query = _query(query="SELECT * FROM mdm", platform="darwin")
    warnings = services.save_query(query)
    assert query.pk and len(warnings) == 1 and "'mdm'" in warnings[0]


@pytest.mark.django_db
def test_names_are_unique_per_team(team):
    services.save_query(_query(name="users"))
    services.save_query(_query(name="users", team=team))  # the same name in a team is fine
    for duplicate in (_query(name="users"), _query(name=" users ", team=team)):
        with pytest.raises(ValidationError) as exc:
            services.save_query(duplicate)
        assert "already exists" in exc.value.message_dict["name"][0]
    existing = Query.objects.get(name="users", team=None)
    existing.description = "renamed nothing"
    services.save_query(existing)  # saving itself is not a clash


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("platform", "stored"),
    [
        ("darwin", "darwin"),
        ("macOS, Linux", "darwin,linux"),
        (" windows ,darwin,windows", "windows,darwin"),
        ("", ""),
    ],
)
def test_platforms_are_normalised(platform, stored):
    query = _query(platform=platform)
    services.save_query(query)
    assert Query.objects.get(pk=query.pk).platform == stored


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"platform": "beos"}, "platform"),
        ({"interval": 604801}, "interval"),
        ({"min_osquery_version": "five"}, "min_osquery_version"),
        ({"logging": "sometimes"}, "logging"),
        ({"name": "  "}, "name"),
        ({"query": ""}, "query"),
        ({"query": "SELECT 1; SELECT 2"}, "query"),
    ],
)
def test_bad_fields_are_reported_by_field(fields, field):
    with pytest.raises(ValidationError) as exc:
        services.check_query(_query(**fields))
    assert field in exc.value.message_dict


@pytest.mark.django_db
def test_team_scope_and_scheduled(team):
    query = _query(team=team, interval=60)
    services.save_query(query)
    assert query.team_scope == str(team.pk) and query.scheduled
    assert not _query(interval=0).scheduled
