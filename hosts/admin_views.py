"""The console's "Add hosts" page: what an admin needs to point osquery at this server.

It shows the enroll secrets of a scope (global or one team), the server's TLS certificate and a
ready osquery flagfile like Fleet's, each downloadable under the file name the flagfile refers
to (``secret.txt``, ``fleet.pem``, ``flagfile.txt``), so that the three files plus the shown
``osqueryd`` command enrol a host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.http.request import split_domain_port
from django.template.response import TemplateResponse

from hosts.models import EnrollSecret, Team
from hosts.permissions import SECRET_READ_ROLES, has_team_role, visible_team_ids

SECRET_FILE = "secret.txt"
CERT_FILE = "fleet.pem"
FLAGFILE = "flagfile.txt"
GLOBAL_SCOPE = ""

# Fleet's generated flagfile, in its order; the TLS hostname is filled in per server.
_FLAGS: list[tuple[str, str]] = [
    ("enroll_secret_path", SECRET_FILE),
    ("tls_server_certs", CERT_FILE),
    ("tls_hostname", "{tls_hostname}"),
    ("host_identifier", "uuid"),
    ("enroll_tls_endpoint", "/api/osquery/enroll"),
    ("config_plugin", "tls"),
    ("config_tls_endpoint", "/api/osquery/config"),
    ("config_refresh", "10"),
    ("disable_distributed", "false"),
    ("distributed_plugin", "tls"),
    ("distributed_interval", "10"),
    ("distributed_tls_max_attempts", "3"),
    ("distributed_tls_read_endpoint", "/api/osquery/distributed/read"),
    ("distributed_tls_write_endpoint", "/api/osquery/distributed/write"),
    ("logger_plugin", "tls"),
    ("logger_tls_endpoint", "/api/osquery/log"),
    ("logger_tls_period", "10"),
]
OSQUERYD_COMMAND = f"sudo osqueryd --flagfile={FLAGFILE} --verbose"


def agent_tls_hostname(request: HttpRequest) -> str:
    """``host:port`` agents connect to: the configured one, else the browser's host on TLS_PORT."""
    if settings.AGENT_TLS_HOSTNAME:
        return settings.AGENT_TLS_HOSTNAME
    host, _port = split_domain_port(request.get_host())
    return f"{host or 'localhost'}:{settings.TLS_PORT}"


def build_flagfile(tls_hostname: str) -> str:
    """The osquery flagfile for this server (one ``--flag=value`` a line)."""
    lines = [f"--{name}={value.format(tls_hostname=tls_hostname)}" for name, value in _FLAGS]
    return "\n".join(lines) + "\n"


def read_certificate() -> tuple[str | None, str]:
    """``(pem, "")`` for the server's certificate, or ``(None, why it is missing)``."""
    path = Path(settings.TLS_CERT_FILE)
    try:
        return path.read_text(), ""
    except FileNotFoundError:
        return None, (
            f'No TLS certificate at {path}. "make run" creates a self-signed one; in production, '
            "set FLEET_TLS_CERT_FILE to the certificate agents see (for a certificate from a public "
            f"CA, leave --tls_server_certs out of the flagfile)."
        )
    except OSError as exc:
        return None, f"The TLS certificate at {path} cannot be read: {exc.strerror}."


def readable_scopes(user: Any) -> list[tuple[str, str]]:
    """``(value, label)`` of the scopes whose secrets the user may read: global, then teams."""
    team_ids = visible_team_ids(user, SECRET_READ_ROLES)
    teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
    scopes = [(GLOBAL_SCOPE, "No team (global secrets)")] if team_ids is None else []
    return scopes + [(str(team.pk), team.name) for team in teams.only("id", "name")]


def _download(body: str, filename: str, content_type: str = "text/plain") -> HttpResponse:
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def add_hosts(request: HttpRequest) -> TemplateResponse:
    """The page: pick a scope, see its secrets, the certificate, the flagfile and the command."""
    scopes = readable_scopes(request.user)
    chosen = request.GET.get("team", scopes[0][0] if scopes else GLOBAL_SCOPE)
    if chosen not in {value for value, _label in scopes}:
        chosen = scopes[0][0] if scopes else None
    secrets: list[EnrollSecret] = []
    if chosen is not None:
        secrets = list(
            EnrollSecret.objects.filter(team_id=int(chosen) if chosen else None).select_related("team")
        )
    pem, cert_problem = read_certificate()
    tls_hostname = agent_tls_hostname(request)
    context = {
        **admin.site.each_context(request),
        "title": "Add hosts",
        "scopes": scopes,
        "chosen_scope": chosen,
        "secrets": secrets,
        "certificate": pem,
        "certificate_problem": cert_problem,
        "certificate_path": settings.TLS_CERT_FILE,
        "tls_hostname": tls_hostname,
        "flagfile": build_flagfile(tls_hostname),
        "command": OSQUERYD_COMMAND,
        "secret_file": SECRET_FILE,
        "cert_file": CERT_FILE,
        "flagfile_name": FLAGFILE,
    }
    return TemplateResponse(request, "admin/hosts/host/add_hosts.html", context)


def download_certificate(request: HttpRequest) -> HttpResponse:
    pem, problem = read_certificate()
    if pem is None:
        raise Http404(problem)
    return _download(pem, CERT_FILE, "application/x-pem-file")


def download_flagfile(request: HttpRequest) -> HttpResponse:
    return _download(build_flagfile(agent_tls_hostname(request)), FLAGFILE)


def download_secret(request: HttpRequest, secret_id: int) -> HttpResponse:
    """One enroll secret as ``secret.txt`` (no trailing newline, as osquery reads the file whole)."""
    secret = EnrollSecret.objects.filter(pk=secret_id).first()
    if secret is None:
        raise Http404("No such enroll secret.")
    if not has_team_role(request.user, secret.team_id, SECRET_READ_ROLES):
        raise PermissionDenied
    return _download(secret.secret, SECRET_FILE)
