"""The task agent stands alone (the container image's ``task-agent`` target copies ``taskagent/``
and installs ``taskagent/requirements.txt``, nothing else): no import of Django or of the server's
code, and every third-party module it imports is in that file, in the ranges pyproject.toml uses."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import name -> distribution name, for what taskagent uses.
DISTRIBUTIONS = {"aiohttp": "aiohttp", "google": "protobuf", "cramjam": "cramjam", "dns": "dnspython"}


def _third_party_imports() -> set[str]:
    found = set()
    for path in (ROOT / "taskagent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(n.split(".")[0] for n in names)
    return {n for n in found if n not in sys.stdlib_module_names and n not in ("taskagent", "__future__")}


def _requirements(text: str) -> dict[str, str]:
    pairs = (re.match(r"([A-Za-z0-9_.\-\[\]]+)(.*)", line.strip()) for line in text.splitlines())
    return {m[1].split("[")[0].lower(): m[2].strip() for m in pairs if m and not m[1].startswith("#")}


def test_every_import_is_required_in_the_same_range_as_the_server():
    imports = _third_party_imports()
    assert imports == set(DISTRIBUTIONS), imports
    wanted = _requirements((ROOT / "taskagent/requirements.txt").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    server = _requirements("\n".join(project))
    for module in imports:
        distribution = DISTRIBUTIONS[module]
        assert wanted[distribution] == server[distribution], distribution


def test_the_agent_loads_everything_without_django_or_the_server():
    code = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in {"django", "rest_framework", "channels", "fleet", "taskserver", "hosts"}:
            raise ImportError("the agent must not import " + name)
sys.meta_path.insert(0, Refuse())
import taskagent.cli, taskagent.agent, taskagent.publish.graphite, taskagent.publish.remote_write
import taskagent.publish.server
from taskagent.plugins import all_plugins
from taskagent.publish.remote_write import encode
plugins = sorted(all_plugins())
assert {"http", "tcp", "dns", "ping", "ns1", "osquery"} <= set(plugins), plugins
import dns.asyncresolver, cramjam
print("ok", len(plugins))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
