"""``manage.py import_pack``: osquery's own packs (``tests/data/osquery-packs/*.conf``, copied from osquery).

Expected values come from reading each file here with ``json`` (after joining the backslash
continued lines of ``osx-attacks.conf``, as ``tests/data/README.md`` describes).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from hosts.models import Team
from packs.models import Pack, ScheduledQuery
from packs.osquery_packs import parse_pack, relax_json
from queries.models import Query

pytestmark = pytest.mark.django_db

PACKS = Path(__file__).resolve().parent / "data" / "osquery-packs"
ALL = sorted(PACKS.glob("*.conf"))
# osquery matches "gentoo" against no platform, so the query would never run: reported, not imported.
NOT_IMPORTABLE = {("it-compliance", "portage_packages")}


def read(path: Path) -> dict:
    return json.loads(re.sub(r"\\\n", "", path.read_text()))


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_there_are_ten_packs():
    assert len(ALL) == 10


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_import_each_pack(path):
    data = read(path)
    expected = {k: v for k, v in data["queries"].items() if (path.stem, k) not in NOT_IMPORTABLE}

    out, err = run("import_pack", str(path))

    pack = Pack.objects.get(name=path.stem)
    assert f'Pack "{path.stem}": {len(expected)} of {len(data["queries"])} queries imported.' in out
    assert pack.platform == ",".join(p.strip() for p in data.get("platform", "").split(",") if p.strip())
    scheduled = {sq.name: sq for sq in pack.scheduled.select_related("query")}
    assert set(scheduled) == {key.strip() for key in expected}  # "Nano Defender " is trimmed
    for key, item in expected.items():
        sq = scheduled[key.strip()]
        assert sq.query.query == item["query"].strip()
        assert sq.interval == int(item["interval"])  # strings and numbers alike
        assert sq.platform == item.get("platform", "")
        assert sq.version == item.get("version", data.get("version", ""))
        for flag in ("snapshot", "removed", "denylist"):
            assert getattr(sq, flag) == item.get(flag)
        assert sq.query.interval == 0  # scheduled through the pack only, never twice
        assert sq.query.team_id is None
    if path.stem == "it-compliance":
        assert "warning: query \"portage_packages\": platform: unknown platform 'gentoo'" in err
        assert "not imported" in err
    else:
        assert "not imported" not in err


def test_osx_attacks_line_continuations():
    path = PACKS / "osx-attacks.conf"
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())  # not strict JSON, as the README says
    run("import_pack", str(path))
    sq = ScheduledQuery.objects.get(pack__name="osx-attacks", name="WireLurker")
    assert "\\" not in sq.query.query
    assert sq.query.query.startswith("select * from launchd where")
    assert "name = 'com.apple.periodic-dd-mm-yy.plist';" in sq.query.query
    assert Pack.objects.get(name="osx-attacks").scheduled.count() == 74


def test_import_every_pack_one_after_the_other():
    for path in ALL:
        run("import_pack", str(path))
    assert Pack.objects.count() == 10
    total = sum(len(read(p)["queries"]) for p in ALL) - len(NOT_IMPORTABLE)
    assert ScheduledQuery.objects.count() == total == 305
    # Every pack runs exactly the SQL of its own file, although several files share query names.
    for path in ALL:
        for key, item in read(path)["queries"].items():
            if (path.stem, key) in NOT_IMPORTABLE:
                continue
            sq = ScheduledQuery.objects.select_related("query").get(pack__name=path.stem, name=key.strip())
            assert sq.query.query == item["query"].strip(), (path.stem, key)
    # kernel_info differs between packs: the later one got its own saved query.
    kernel_info = Query.objects.get(name="kernel_info")
    assert (
        ScheduledQuery.objects.get(pack__name="hardware-monitoring", name="kernel_info").query == kernel_info
    )
    assert ScheduledQuery.objects.get(pack__name="vuln-management", name="kernel_info").query.name == (
        "vuln-management/kernel_info"
    )
    # The same SQL under the same name is shared.
    shared = ScheduledQuery.objects.filter(name="usb_devices").values_list("query_id", flat=True)
    assert len(shared) == 2 and len(set(shared)) == 1


def test_reimport_is_unchanged_and_keeps_targets():
    path = PACKS / "osquery-monitoring.conf"
    run("import_pack", str(path))
    pack = Pack.objects.get(name="osquery-monitoring")
    team = Team.objects.create(name="Ops")
    pack.target_teams.add(team)
    out, _ = run("import_pack", str(path))
    assert "0 to create, 0 to update, 0 to delete, 4 unchanged" in out
    assert list(pack.target_teams.all()) == [team]


def test_reimport_of_a_changed_file_updates_its_own_queries(tmp_path):
    path = tmp_path / "mine.conf"
    path.write_text('{"queries": {"up": {"query": "SELECT * FROM uptime;", "interval": 60}}}')
    run("import_pack", str(path))
    path.write_text('{"queries": {"up": {"query": "SELECT days FROM uptime;", "interval": "120"}}}')
    out, _ = run("import_pack", str(path))
    assert 'update    query "up"' in out
    sq = ScheduledQuery.objects.get(pack__name="mine", name="up")
    assert (sq.query.name, sq.query.query, sq.interval) == ("up", "SELECT days FROM uptime;", 120)
    assert Query.objects.count() == 1


def test_a_library_query_of_the_same_name_is_not_rewritten(tmp_path):
    Query.objects.create(name="up", query="SELECT 1;")
    path = tmp_path / "mine.conf"
    path.write_text('{"queries": {"up": {"query": "SELECT * FROM uptime;", "interval": 60}}}')
    run("import_pack", str(path))
    assert Query.objects.get(name="up").query == "SELECT 1;"
    assert ScheduledQuery.objects.get(name="up").query.name == "mine/up"


def test_name_option_and_dry_run():
    path = PACKS / "windows-attacks.conf"
    out, _ = run("import_pack", str(path), "--name", "Windows attacks", "--dry-run")
    assert 'create    pack "Windows attacks"' in out
    assert "would be imported (dry run: nothing was changed)" in out
    assert Pack.objects.count() == Query.objects.count() == 0
    run("import_pack", str(path), "--name", "Windows attacks")
    assert Pack.objects.get().name == "Windows attacks"


BAD_PACK = """{
  // osquery allows comment lines
  # of both kinds
  "platform": "linux",
  "queries": {
    "good": {"query": "SELECT * FROM uptime;", "interval": "3600", "shard": 20,},
    "no_sql": {"interval": 60},
    "bad_sql": {"query": "SELEC 1", "interval": 60},
    "bad_interval": {"query": "SELECT 1;", "interval": "hourly"},
    "too_often": {"query": "SELECT 1;", "interval": 0},
    "not_an_object": 5,
    "flags": {"query": "SELECT 2;", "interval": 60, "snapshot": "yes"},
    "extra": {"query": "SELECT 3;", "interval": 60, "color": "red"},
    "good": {"query": "SELECT days FROM uptime;", "interval": 60},
  },
}"""


def test_problems_are_reported_per_query(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text(BAD_PACK)
    out, err = run("import_pack", str(path))
    assert 'query "no_sql": query is required (osquery SQL); not imported' in err
    assert 'query "bad_sql": query: SQL syntax error: near "SELEC": syntax error.; not imported' in err
    assert "query \"bad_interval\": interval must be a whole number, not 'hourly'; not imported" in err
    assert 'query "too_often": interval: The interval must be between 1 and 604800 seconds.' in err
    assert 'query "not_an_object": not a JSON object; not imported' in err
    assert "query \"flags\": snapshot must be true or false, not 'yes'; not imported" in err
    assert 'query "extra": ignored unknown key(s) color' in err
    assert 'query "good" appears more than once; the last one is used' in err
    assert 'Pack "bad": 2 of 8 queries imported.' in out
    pack = Pack.objects.get(name="bad")
    assert sorted(pack.scheduled.values_list("name", flat=True)) == ["extra", "good"]
    good = pack.scheduled.get(name="good")
    assert (good.query.query, good.interval, good.shard) == ("SELECT days FROM uptime;", 60, None)
    assert pack.platform == "linux" and good.query.platform == "linux"


def test_strict_imports_nothing(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text(BAD_PACK)
    with pytest.raises(CommandError, match="problem\\(s\\) in strict mode; nothing was imported"):
        run("import_pack", str(path), "--strict")
    assert Pack.objects.count() == Query.objects.count() == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"queries": {\n  "a": {"query": "SELECT 1;",\n  "interval": 5 5}}}',
            "not valid JSON at line 3, column",
        ),
        ('["not", "a", "pack"]', 'an osquery pack is a JSON object with a "queries" object'),
        ('{"queries": {"a": {"interval": 5}}}', "no query could be imported"),
        ('{"platform": "plan9", "queries": {}}', "platform: unknown platform 'plan9'"),
    ],
)
def test_unusable_files(tmp_path, text, message):
    path = tmp_path / "x.conf"
    path.write_text(text)
    with pytest.raises(CommandError, match=re.escape(message)):
        run("import_pack", str(path))
    assert Pack.objects.count() == 0


def test_json_error_positions_follow_the_original_file():
    text = '{\n  "queries": {\n    "a": {"query": "select \\\n      1;", "interval": 5}\n  }\n  oops\n}'
    relaxed, origin = relax_json(text)
    assert '"select       1;"' in relaxed
    with pytest.raises(Exception, match="line 6, column 3: Expecting ',' delimiter"):
        parse_pack(text, "x.conf")
    assert len(origin) == len(relaxed)


def test_pack_level_version_and_shard_reach_each_query(tmp_path):
    path = tmp_path / "v.conf"
    path.write_text(
        '{"version": "5.1.0", "shard": 25, "queries": {"a": {"query": "SELECT 1;", "interval": 9}}}'
    )
    run("import_pack", str(path))
    sq = ScheduledQuery.objects.get(pack__name="v")
    assert (sq.version, sq.shard) == ("5.1.0", 25)
    assert sq.query.min_osquery_version == "5.1.0"
