"""The deployment files agree with the code and with each other.

deploy/validate.sh checks each file against its own tool (Compose, the Kubernetes schemas, nginx);
none of those knows this project. These tests do, without Docker or a cluster: every variable the
files set is one the server reads, every command is a real entry point with options its program
accepts, the probes and health checks get a 200 as the kubelet and Docker send them under the
production security settings, nginx and the Ingress send every WebSocket route to daphne and
allow the largest agent body, and the Kubernetes objects point at each other correctly.
"""

from __future__ import annotations

import re
import secrets
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, get_commands, load_command_class
from django.test import Client
from django.urls import Resolver404, resolve

from campaigns.api import RUN_TIMEOUT_CAP
from fleet.held_requests import HELD_PATHS
from fleet.routing import websocket_urlpatterns
from tests.test_deploy_check import manage, mysql_driver_installed, read_env_file

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
ENV_EXAMPLE = ROOT / "docker" / "production.env.example"
NGINX_CONF = ROOT / "docker" / "nginx" / "fleet.conf"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SERVER_IMAGE = "fleet-server"  # the image name the manifests use (kustomization.yaml sets it)
# In the example for compose alone: the MariaDB container's password (the same as DATABASE_URL's).
COMPOSE_ONLY = {"MARIADB_PASSWORD"}
SERVER_ROLES = {"migrate", "certs", "web", "ws", "worker", "beat"}


# --- Reading the files -------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(text: str) -> str:
    """Compose's interpolation with nothing set: `${X:-default}` is the default, `$$` is `$`."""
    text = re.sub(r"(?<!\$)\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)
    return text.replace("$$", "$")


def server_services() -> dict[str, dict]:
    return {name: svc for name, svc in compose()["services"].items() if name in SERVER_ROLES}


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]
    return documents


def objects(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def pod_specs() -> Iterator[tuple[str, dict]]:
    for doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def configmap() -> dict[str, str]:
    return objects("ConfigMap")["fleet-config"]["data"]


def secret_template() -> dict[str, str]:
    return objects("Secret")["fleet-secrets"]["stringData"]


def allowed_hosts(value: str) -> list[str]:
    return [host.strip() for host in value.split(",") if host.strip()]


def host_allowed(host: str, hosts: list[str]) -> bool:
    return any(host == h or (h.startswith(".") and host.endswith(h)) or h == "*" for h in hosts)


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((instruction.upper(), arguments.strip()))
    return stages


def nginx_locations() -> dict[str, dict[str, list[list[str]]]]:
    """`location` blocks of docker/nginx/fleet.conf: {path: {directive: [args, ...]}}; "" = server.
    An exact-match block (`location = /path/`) is keyed "= /path/"."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    server = text[text.index("server {") :]
    blocks = {"": server}
    location = r"location\s+((?:=\s+)?\S+)\s*\{([^}]*)\}"
    for match in re.finditer(location, server):
        blocks[re.sub(r"\s+", " ", match.group(1))] = match.group(2)
    blocks[""] = re.sub(location, "", server)
    parsed = {}
    for path, body in blocks.items():
        directives: dict[str, list[list[str]]] = {}
        for statement in body.replace("server {", "").split(";"):
            words = statement.split()
            if words:
                directives.setdefault(words[0], []).append(words[1:])
        parsed[path] = directives
    return parsed


def nginx_size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def seconds(value: str) -> float:
    if value[-1].isalpha():
        return float(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]
    return float(value)


# --- What the code reads -----------------------------------------------------------------------

ENV_READ = re.compile(
    r"""(?:\benv\.\w+|\bsecret|os\.environ\.get|os\.getenv|os\.environ\.setdefault)"""
    r"""\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
    r"""|\b[A-Z_]*ENV\s*=\s*["']([A-Z][A-Z0-9_]*)["']"""  # MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
)


def env_names_read(packages: list[str]) -> set[str]:
    names: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or "tests" in path.parts:
                continue
            text = path.read_text()
            for match in ENV_READ.finditer(text):
                names.add(next(group for group in match.groups() if group))
            names.update(f"{m.group(1)}_FILE" for m in re.finditer(r"\bsecret\(\s*[\"']([A-Z0-9_]+)", text))
    return names


def server_packages() -> list[str]:
    """The server's packages, as pyproject.toml lists them (the task agent is a program apart)."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [name.rstrip("*") for name in found["include"] if name.rstrip("*") != "taskagent"]


def test_the_scan_finds_what_the_server_reads():
    """The scan below is the test's own code: it must see the ways settings read variables."""
    names = env_names_read(server_packages())
    assert {"DATABASE_URL", "DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE", "METRICS_TOKEN_FILE"} <= names
    assert {"DJANGO_BEHIND_PROXY", "OSQUERY_MAX_LOG_WRITE_SIZE", "FLEET_SERVER_PRIVATE_KEY"} <= names
    assert "MARIADB_PASSWORD" not in names and "FLEET_AGENT_KEY" not in names


def test_every_variable_the_deployment_sets_is_read_by_the_server():
    read = env_names_read(server_packages())
    example = read_env_file(ENV_EXAMPLE)
    set_by = {
        "docker/production.env.example": set(example) - COMPOSE_ONLY,
        "ConfigMap fleet-config": set(configmap()),
        "Secret fleet-secrets": set(secret_template()),
    }
    for name, service in server_services().items():
        set_by[f"compose service {name}"] = set(service.get("environment", {}))
    for pod, spec in pod_specs():
        for container in containers(spec):
            set_by[f"{pod}/{container['name']}"] = {item["name"] for item in container.get("env", [])}
    unknown = {where: sorted(names - read) for where, names in set_by.items() if names - read}
    assert not unknown, f"set but read nowhere in the server (a typo, or a removed setting): {unknown}"


def test_compose_wires_the_example_to_its_own_services():
    example = read_env_file(ENV_EXAMPLE)
    services = compose()["services"]
    database = urlsplit(example["DATABASE_URL"])
    mariadb = services["mariadb"]["environment"]
    assert database.hostname in services and database.hostname == "mariadb"
    assert database.username == mariadb["MARIADB_USER"] and database.path == f"/{mariadb['MARIADB_DATABASE']}"
    assert database.password == example["MARIADB_PASSWORD"], "the two passwords must be the same"
    assert mariadb["MARIADB_PASSWORD"].startswith("${MARIADB_PASSWORD")
    assert urlsplit(example["REDIS_URL"]).hostname in services
    for name, service in server_services().items():
        assert service["env_file"] == "${FLEET_ENV_FILE:-production.env}", name


def test_the_client_profiles_use_every_variable_they_are_given():
    services = compose()["services"]
    simulate = services["simulate"]
    assert simulate["profiles"] == ["simulate"] and "env_file" not in simulate  # no server secrets
    command = " ".join(simulate["command"])
    for name in simulate["environment"]:
        assert f"$${{{name}" in command, name
    agent = services["task-agent"]
    assert agent["build"]["target"] == "task-agent" and agent["profiles"] == ["task-agent"]
    assert set(agent["environment"]) <= env_names_read(["taskagent"])


# --- Commands ----------------------------------------------------------------------------------


SHELL_VARIABLE = re.compile(r"\$\{(\w+)(?::[?-][^}]*)?\}")


def expand(text: str, env: dict[str, str]) -> str:
    """What the container's shell makes of `${NAME}` with this environment (compose's defaults)."""
    return SHELL_VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def server_commands() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) of every server process the files start; shell wrappers unwrapped."""
    cmd = next(args for op, args in dockerfile_stages()["server"] if op == "CMD")
    yield "Dockerfile CMD", yaml.safe_load(cmd)
    for name, service in {**server_services(), "simulate": compose()["services"]["simulate"]}.items():
        env = {key: interpolate(str(value)) for key, value in service.get("environment", {}).items()}
        yield f"compose {name}", [expand(interpolate(arg), env) for arg in service["command"]]
    for pod, spec in pod_specs():
        for container in containers(spec):
            if container["image"] == SERVER_IMAGE:
                yield f"{pod}/{container['name']}", container["command"]


def unwrap(argv: list[str]) -> list[str]:
    if argv[:2] != ["sh", "-c"]:
        return argv
    script = SHELL_VARIABLE.sub(r"VALUE-\1", argv[2])
    script = re.split(r";|\|\||&&", script.replace("until ", "", 1))[0]
    words = [word for word in shlex.split(script) if word != "exec" and not word.startswith(">")]
    return words


def program_of(argv: list[str]) -> str:
    """What a command runs: the program, or the module or script python is given."""
    if argv[0] == "python":
        return argv[2] if argv[1] == "-m" else argv[1]
    return argv[0]


def check_argv(argv: list[str]) -> None:
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli
    from daphne.cli import CommandLineInterface

    from fleet import web_server

    program, args = argv[0], argv[1:]
    if program_of(argv) == "fleet.web_server":
        parsed = web_server.parse_args(args[2:])
        assert (parsed.host, parsed.port) == ("0.0.0.0", 8000)
        module, attr = web_server.APP.split(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr))
    elif program == "daphne":
        parsed = CommandLineInterface().parser.parse_args(args)
        module, attr = parsed.application.split(":")
        assert module == "fleet.asgi" and attr == "application"
        assert (parsed.host, parsed.port) == ("0.0.0.0", 8001)
    elif program == "celery":
        from fleet.celery import app

        assert args[:2] == ["-A", "fleet"] and args[2] in ("worker", "beat")
        context = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
        celery_cli.commands[args[2]].make_context(args[2], args[3:], obj=context)
    elif program == "python" and args[0] == "manage.py":
        assert args[1] in get_commands(), f"no manage.py command {args[1]}"
        load_command_class(get_commands()[args[1]], args[1]).create_parser("manage.py", args[1]).parse_args(
            args[2:]
        )
    elif program == "python" and args[0] != "-m":
        assert (ROOT / args[0]).is_file(), args[0]
    else:
        raise AssertionError(f"unexpected program {argv[:3]}")


def test_every_server_command_is_a_real_entry_point_with_valid_options():
    seen = set()
    for where, argv in server_commands():
        argv = unwrap(argv)
        try:
            check_argv(argv)
        except SystemExit as exc:  # argparse rejected an option
            raise AssertionError(f"{where}: {argv} rejected ({exc})") from exc
        seen.add(program_of(argv))
    assert {"fleet.web_server", "daphne", "celery", "manage.py"} <= seen


def test_the_celery_worker_serves_its_task_metrics_in_compose_and_kubernetes():
    """Task outcomes are counted in the worker's pool processes: without a directory and a port
    nothing would ever serve them (docs/metrics.md)."""
    worker = compose()["services"]["worker"]
    env = worker["environment"]
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/") and "/tmp" in worker["tmpfs"]
    assert str(env["WORKER_METRICS_PORT"]) in worker["expose"]
    spec = objects("Deployment")["fleet-worker"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    values = {item["name"]: item["value"] for item in container["env"]}
    assert values["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {p["containerPort"] for p in container["ports"]} == {int(values["WORKER_METRICS_PORT"])}


def test_the_task_agent_command_is_one_its_program_accepts():
    from taskagent.cli import build_parser

    agent = compose()["services"]["task-agent"]
    args = build_parser().parse_args(agent["command"])
    assert urlsplit(args.server).hostname == "proxy" and args.ca_file.endswith("cert.pem")
    assert any(volume.endswith(":" + str(Path(args.ca_file).parent) + ":ro") for volume in agent["volumes"])


def test_the_command_line_tools_check_what_is_parsed():
    """The checks can fail: a misspelt option or a missing command is caught."""
    for argv in (
        ["celery", "-A", "fleet", "worker", "--concurency", "2"],
        ["python", "manage.py", "simulate_hosts", "--url", "https://x", "--enroll-secret", "s", "--cnt", "1"],
        ["python", "manage.py", "migrate_everything"],
        ["daphne", "-b", "0.0.0.0", "-p", "8001", "fleet.wsgi:application"],
        ["python", "-m", "fleet.web_server", "--port", "8000", "--wokers", "2"],
        ["python", "-m", "fleet.web_server", "--port", "8080"],
        ["python", "-m", "gunicorn", "fleet.wsgi:application"],
    ):
        with pytest.raises((AssertionError, SystemExit, CommandError, click.UsageError)):
            check_argv(argv)


# --- Health checks and probes ------------------------------------------------------------------


def probes() -> Iterator[tuple[str, str, int, str]]:
    """(where, path, port, Host header) of every HTTP probe and compose health check."""
    for pod, spec in pod_specs():
        for container in spec["containers"]:
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind, {}).get("httpGet")
                if probe:
                    host = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}.get("Host", "")
                    yield f"{pod} {kind}", probe["path"], ports[probe["port"]], host
    for name, service in compose()["services"].items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        url = re.search(r"https?://[^'\" ]+", test)
        if url:
            parts = urlsplit(url.group(0))
            yield f"compose {name}", parts.path, parts.port, parts.hostname


def bound_port(where: str) -> int:
    """The port the process behind a probe listens on, from its own command."""
    pod_or_service = where.split()[1] if where.startswith("compose") else where.split()[0]
    for origin, argv in server_commands():
        if origin.endswith(pod_or_service) or origin.startswith(pod_or_service + "/"):
            argv = unwrap(argv)
            if program_of(argv) == "fleet.web_server":
                from fleet import web_server

                return web_server.parse_args(argv[3:]).port
            if argv[0] == "daphne":
                return int(argv[argv.index("-p") + 1])
    raise AssertionError(f"no server command for {where}")


@pytest.mark.django_db
def test_probes_answer_200_as_sent_under_the_production_security_settings(settings):
    """Plain HTTP, no X-Forwarded-Proto, the probe's Host: a redirect or a 400 would fail them."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    found = list(probes())
    assert {path for _w, path, _p, _h in found} == {"/healthz", "/readyz"}
    assert len(found) >= 7
    for where, path, port, host in found:
        assert port == bound_port(where), where
        hosts = allowed_hosts(
            configmap()["DJANGO_ALLOWED_HOSTS"]
            if where.startswith("fleet-")
            else read_env_file(ENV_EXAMPLE)["DJANGO_ALLOWED_HOSTS"]
        )
        assert host_allowed(host, hosts), f"{where}: Host {host!r} is not in DJANGO_ALLOWED_HOSTS"
        assert resolve(path).url_name in ("healthz", "readyz")
        settings.ALLOWED_HOSTS = hosts
        response = Client().get(path, HTTP_HOST=f"{host}:{port}")
        assert response.status_code == 200, f"{where}: {path} -> {response.status_code}"
    settings.ALLOWED_HOSTS = ["fleet.example.com"]
    # The test can fail: a pod's address as Host is refused.
    refused = Client(raise_request_exception=False).get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert refused.status_code >= 400


def test_liveness_does_no_io_and_only_startup_waits_for_the_database():
    web = objects("Deployment")["fleet-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["startupProbe"]["httpGet"]["path"] == "/readyz"
    liveness = web["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120


# --- Routing: nginx and the Ingress --------------------------------------------------------------


def largest_agent_body() -> int:
    return max(
        settings.OSQUERY["MAX_ENROLL_SIZE"],
        settings.OSQUERY["MAX_REQUEST_SIZE"],
        settings.OSQUERY["MAX_WRITE_SIZE"],
        settings.OSQUERY["MAX_LOG_SIZE"],
        settings.MDM["MAX_BODY"],
    )


def longest_wait() -> float:
    return max(settings.SCRIPTS["SYNC_MAX_WAIT"], RUN_TIMEOUT_CAP)


def test_every_websocket_route_is_under_ws_and_no_http_route_is():
    routes = [str(pattern.pattern) for pattern in websocket_urlpatterns]
    assert routes and all(route.startswith("ws/") for route in routes), routes
    for path in ("/ws/", "/ws/agent/", "/ws/campaigns/1/"):
        with pytest.raises(Resolver404):
            resolve(path)


def test_nginx_sends_websockets_to_daphne_and_the_rest_to_the_web_server():
    locations = nginx_locations()
    services = compose()["services"]
    ws, web, server = locations["/ws/"], locations["/"], locations[""]

    def upstream(block: dict) -> tuple[str, int]:
        target = block["proxy_pass"][0][0]
        if target.startswith("$"):
            target = next(args[1] for args in block["set"] if args[0] == target)
        parts = urlsplit(target)
        return parts.hostname, parts.port

    assert upstream(ws) == ("ws", bound_port("compose ws")) and "ws" in services
    assert upstream(web) == ("web", bound_port("compose web")) and "web" in services
    headers = {args[0].lower(): args[1] for args in ws["proxy_set_header"]}
    assert headers["upgrade"] == "$http_upgrade" and headers["connection"].startswith("$")
    assert ws["proxy_http_version"] == [["1.1"]]
    # Sockets idle between heartbeats (and daphne's 20 s pings) must not be cut.
    assert seconds(ws["proxy_read_timeout"][0][0]) >= 10 * max(settings.TASKSERVER["HEARTBEAT"], 20)
    assert nginx_size(server["client_max_body_size"][0][0]) >= largest_agent_body()
    # The REST calls that wait for agents go to daphne, held as long as they may wait; exactly the
    # paths the server holds (fleet.held_requests), and nothing else is routed by exact match.
    held = [locations[f"= {path}"] for path in HELD_PATHS]
    assert set(locations) == {"", "/ws/", "/", *(f"= {path}" for path in HELD_PATHS)}
    for block in held:
        assert upstream(block) == ("ws", bound_port("compose ws"))
        assert seconds(block["proxy_read_timeout"][0][0]) > longest_wait()
    # What the server trusts when DJANGO_BEHIND_PROXY=1, set in every location.
    header = settings.SECURE_PROXY_SSL_HEADER or ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = header[0].removeprefix("HTTP_").replace("_", "-").lower()
    for block in (ws, web, *held):
        names = {args[0].lower() for args in block["proxy_set_header"]}
        assert {forwarded, "x-forwarded-for", "host"} <= names


def test_compose_proxy_uses_this_config_and_the_certificate_the_certs_step_writes():
    services = compose()["services"]
    proxy = services["proxy"]
    mounts = [interpolate(volume) for volume in proxy["volumes"]]
    assert "./nginx/fleet.conf:/etc/nginx/conf.d/default.conf:ro" in mounts
    certificate = re.search(r"ssl_certificate\s+(\S+);", NGINX_CONF.read_text()).group(1)
    tls_volume = next(m for m in mounts if m.endswith(":" + str(Path(certificate).parent) + ":ro"))
    certs_writes = f"{tls_volume.split(':')[0]}:{services['certs']['command'][-1]}"
    assert certs_writes in [interpolate(volume) for volume in services["certs"]["volumes"]]
    assert proxy["depends_on"]["certs"]["condition"] == "service_completed_successfully"


def test_the_ingress_routes_ws_to_daphne_and_the_rest_to_the_web_server():
    ingresses = objects("Ingress")
    deployments = objects("Deployment")
    services = objects("Service")
    routes = {}
    for ingress in ingresses.values():
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routes[path["path"]] = (ingress, rule["host"], path["backend"]["service"])
                assert path["pathType"] == ("Exact" if path["path"] in HELD_PATHS else "Prefix")
    assert set(routes) == {"/", "/ws/", *HELD_PATHS}
    hosts = allowed_hosts(configmap()["DJANGO_ALLOWED_HOSTS"])
    origins = allowed_hosts(configmap()["DJANGO_CSRF_TRUSTED_ORIGINS"])
    for path, (ingress, host, backend) in routes.items():
        assert host_allowed(host, hosts) and f"https://{host}" in origins
        service = services[backend["name"]]
        port = next(p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"])
        deployment = next(
            d
            for d in deployments.values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        program = program_of(container["command"])
        to_daphne = path == "/ws/" or path in HELD_PATHS
        assert program == ("daphne" if to_daphne else "fleet.web_server"), path
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        annotations = ingress["metadata"]["annotations"]
        read_timeout = float(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        assert read_timeout >= (3600 if path == "/ws/" else longest_wait() if to_daphne else 60), path
    web_body = routes["/"][0]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert nginx_size(web_body) >= largest_agent_body()


# --- Kubernetes objects -------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_names_the_image():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == "fleet"
    assert [image["name"] for image in kustomization["images"]] == [SERVER_IMAGE]
    for pod, spec in pod_specs():
        assert {c["image"] for c in containers(spec)} == {SERVER_IMAGE}, pod


def test_roles_scaling_and_disruptions():
    deployments = objects("Deployment")
    assert set(deployments) == {"fleet-web", "fleet-ws", "fleet-worker", "fleet-beat"}
    beat = deployments["fleet-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    hpa = objects("HorizontalPodAutoscaler")["fleet-web"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "fleet-web" and hpa["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    web = deployments["fleet-web"]["spec"]
    assert "replicas" not in web, "the HPA owns the web replica count"
    assert web["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    pdb = objects("PodDisruptionBudget")["fleet-web"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= web["template"]["metadata"]["labels"].items()
    job = objects("Job")["fleet-migrate"]["spec"]
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["template"]["spec"]["containers"][0]["command"][-2:] == ["migrate", "--noinput"]
    for name, deployment in deployments.items():  # every role waits for the migrate Job
        init = deployment["spec"]["template"]["spec"]["initContainers"]
        assert "migrate --check" in " ".join(init[0]["command"]), name
    ws = deployments["fleet-ws"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DATABASE_CONN_MAX_AGE", "value": "0"} in ws["env"]


def test_pods_run_unprivileged_on_a_read_only_root_with_writable_scratch():
    uid = next(int(args.split(":")[0]) for op, args in dockerfile_stages()["server"] if op == "USER")
    writable = {"/tmp", configmap()["FLEET_VAR_DIR"]}
    for pod, spec in pod_specs():
        security = spec["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == uid, pod
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(spec):
            where = f"{pod}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"], where
            assert context["capabilities"]["drop"] == ["ALL"], where
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert writable <= set(mounts) and all("emptyDir" in mounts[p] for p in writable), where
            assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            for variable in ("PROMETHEUS_MULTIPROC_DIR",):
                if variable in env:
                    assert any(env[variable].startswith(path) for path in writable), where


def test_the_secret_template_holds_no_usable_secret():
    for name, value in secret_template().items():
        if name in ("DATABASE_URL", "REDIS_URL"):
            assert "example" in urlsplit(value).hostname, name
        else:
            assert value.startswith("replace-me"), name
    assert set(secret_template()).isdisjoint(configmap())


# --- Compose and the image ----------------------------------------------------------------------


def test_compose_starts_the_roles_after_migrations_and_healthy_services():
    services = compose()["services"]
    for name in ("web", "ws", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["mariadb"]["condition"] == depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["restart"] == "no" and services["certs"]["restart"] == "no"
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["proxy"]["image"].startswith("nginx:")
    assert all("healthcheck" in services[name] for name in ("mariadb", "redis", "web", "ws", "proxy"))
    named = set(compose()["volumes"])
    assert "mariadb:/var/lib/mysql" in services["mariadb"]["volumes"]
    assert any(v.startswith("var:") for v in services["web"]["volumes"]) and {"mariadb", "var"} <= named
    for service in services.values():  # bind mounts point at files in the repository
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), source
    assert "--profile" not in " ".join(services["web"]["command"])
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_the_image_installs_dependencies_from_pyproject_alone_before_the_code():
    stages = dockerfile_stages()
    deps = stages["server-deps"]
    install = next(i for i, (op, args) in enumerate(deps) if op == "RUN" and "pip install" in args)
    copied = [args for op, args in deps[:install] if op == "COPY"]
    assert copied == ["pyproject.toml /tmp/pyproject.toml"], "only pyproject.toml before pip install"
    extras = re.findall(r"optional-dependencies'\]\['(\w+)'\]", deps[install][1])
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras == ["mysql"] and set(extras) <= set(optional)
    server = stages["server"]
    assert ("COPY", ". .") in server
    assert any(op == "COPY" and args.startswith("--from=server-deps") for op, args in server)
    ignored = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "var", ".git", "docker/production.env"} <= set(ignored)


# --- Documentation and check --deploy ------------------------------------------------------------


def test_the_readme_documents_every_variable_the_deployment_sets():
    readme = (ROOT / "README.md").read_text()
    names = set(read_env_file(ENV_EXAMPLE)) | set(configmap()) | set(secret_template())
    missing = sorted(name for name in names - COMPOSE_ONLY if f"`{name}`" not in readme)
    assert not missing, f"not in the README's Configuration table: {missing}"


@pytest.mark.slow
def test_check_deploy_is_clean_with_the_kubernetes_configuration(tmp_path):
    variables = {**configmap(), **secret_template()}
    for name, value in variables.items():
        if value.startswith("replace-me"):
            variables[name] = secrets.token_urlsafe(50)
    variables["FLEET_VAR_DIR"] = str(tmp_path)
    if not mysql_driver_installed():
        variables["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    result = manage(tmp_path, variables, "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output and "ERRORS" not in output
