"""``manage.py prepare_demo``: what ``make run`` needs before it starts the server.

An admin login, a global enroll secret for the demo hosts, a self-signed certificate for the
HTTPS port, and Fleet's standard query library as saved queries (once, when there are none).
Apple MDM as ``manage.py mdm setup --dev`` leaves it (the MDM CA, a stand-in push certificate and
the local APNs stand-in's certificates, no Apple account needed) and two demo configuration
profiles for every Mac, so the simulated Macs have something to install and osquery to verify.
For the demo task agent: an agent key (kept in a 0600 file, since the server stores only its
digest), the ``server`` metric destination, and three tasks checking this server itself, so their
charts fill in the console. Idempotent: a second run keeps the same password, secret,
certificates, CA and agent key, so agents and Macs enrolled earlier keep working. Prints
``key=value`` lines that ``scripts/run.py`` reads.
"""

from __future__ import annotations

import os
import plistlib
import secrets
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from fleet.selfsigned import ensure_certificate
from hosts.choices import Role
from hosts.models import EnrollSecret, UserRole
from hosts.services import generate_enroll_secret

# Fleet's standard query library (queries/data/README.md has its source and licence).
STANDARD_QUERY_LIBRARY = Path(__file__).resolve().parents[3] / "queries/data/standard-query-library.yml"

# Two harmless settings every demo Mac gets (identifier, name, payload): the MDM installs them, the
# Mac's osquery reports them in macos_profiles, and the console shows them verified.
DEMO_PROFILES = (
    (
        "com.example.demo.firewall",
        "Demo: firewall on",
        {"PayloadType": "com.apple.security.firewall", "EnableFirewall": True, "EnableStealthMode": True},
    ),
    (
        "com.example.demo.screensaver",
        "Demo: screen saver after 10 minutes",
        {"PayloadType": "com.apple.screensaver", "idleTime": 600, "askForPassword": True},
    ),
)


def _demo_mobileconfig(identifier: str, name: str, payload: dict[str, Any]) -> bytes:
    """A one-payload .mobileconfig with UUIDs fixed by its identifier (the same file every run)."""

    def stable_uuid(suffix: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fleet-demo:{identifier}{suffix}")).upper()

    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": stable_uuid(""),
        "PayloadDisplayName": name,
        "PayloadOrganization": "Fleet demo",
        "PayloadScope": "System",
        "PayloadContent": [
            {
                **payload,
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{identifier}.payload",
                "PayloadUUID": stable_uuid(".payload"),
                "PayloadDisplayName": name,
            }
        ],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


class Command(BaseCommand):
    help = "Create the demo admin user, a global enroll secret and a self-signed TLS certificate."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--tls-port", type=int, default=int(os.environ.get("TLS_PORT", "8443")))
        parser.add_argument(
            "--agent-key-file",
            default=str(Path(settings.VAR_DIR) / "demo_agent_key"),
            help="Where the demo task agent's key is kept between runs.",
        )
        parser.add_argument(
            "--password-file",
            default=str(Path(settings.VAR_DIR) / "admin_password"),
            help="Where the generated password is kept between runs.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username, password = self._admin(options["username"], Path(options["password_file"]))
        secret = self._enroll_secret()
        ensure_certificate(Path(settings.TLS_CERT_FILE), Path(settings.TLS_KEY_FILE))
        loaded = self._query_library()
        updates = self._update_repository()
        mdm_topic, demo_profiles = self._mdm()
        agent_key, demo_tasks = self._task_agent(
            Path(options["agent_key_file"]), options["port"], options["tls_port"]
        )
        self.stdout.write(f"username={username}")
        self.stdout.write(f"password={password}")
        self.stdout.write(f"enroll_secret={secret}")
        self.stdout.write(f"cert={settings.TLS_CERT_FILE}")
        self.stdout.write(f"key={settings.TLS_KEY_FILE}")
        self.stdout.write(f"queries_loaded={loaded}")
        self.stdout.write(f"update_repository={updates}")
        self.stdout.write(f"mdm_topic={mdm_topic}")
        self.stdout.write(f"mdm_profiles={demo_profiles}")
        self.stdout.write(f"agent_key_file={agent_key}")
        self.stdout.write(f"demo_tasks={demo_tasks}")

    def _admin(self, username: str, password_file: Path) -> tuple[str, str]:
        """A superuser with the global admin role; the password is generated once and kept."""
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            # Random, and within the password rules (12+ characters with a digit and a symbol).
            password = f"{secrets.token_urlsafe(12)}-{secrets.randbelow(10)}"
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password)
            password_file.chmod(0o600)
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model.objects.create_superuser(username, f"{username}@example.com", password)
        elif not user.check_password(password):
            # The file is the source of truth for the demo login: keep them in step.
            user.set_password(password)
            user.save(update_fields=["password"])
        UserRole.objects.get_or_create(user=user, team=None, defaults={"role": Role.ADMIN})
        return username, password

    def _update_repository(self) -> str:
        """The demo TUF repository the simulated orbits update from (embedded default only)."""
        from updates.demo import ensure_demo_repository

        return ensure_demo_repository()

    def _mdm(self) -> tuple[str, int]:
        """Apple MDM set up for development, and the demo profiles added once; (push topic, number
        of demo profiles in place)."""
        from mdm import push_certificate, services
        from mdm.models import Profile
        from mdm.profiles import services as profiles
        from mdm.profiles.validation import ProfileError

        services.setup(dev=True)
        present = 0
        for identifier, name, payload in DEMO_PROFILES:
            if Profile.objects.filter(scope=0, identifier=identifier).exists():
                present += 1  # kept as it is: an admin may have edited or scoped it
                continue
            try:
                profiles.create_profile(team=None, data=_demo_mobileconfig(identifier, name, payload))
            except ProfileError as exc:  # e.g. an admin's profile already has this name
                self.stderr.write(f"demo profile {name!r} not added: {exc.message}")
                continue
            present += 1
        return push_certificate.topic(), present

    def _task_agent(self, key_file: Path, port: int, tls_port: int) -> tuple[str, int]:
        """The demo task agent's key (its file), the ``server`` destination, and the demo tasks
        added once; (key file, number of demo tasks in place)."""
        from taskserver import services
        from taskserver.models import AgentKey, DestinationKind, MetricDestination, Task

        raw = key_file.read_text().strip() if key_file.exists() else ""
        if not raw or services.authenticate_key(raw) is None:
            AgentKey.objects.filter(scope=0, name="demo").delete()
            _, raw = services.create_agent_key(name="demo", team_id=None)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(raw)
            key_file.chmod(0o600)
        if not MetricDestination.objects.filter(team__isnull=True, kind=DestinationKind.SERVER).exists():
            services.save_destination(name="This server", kind=DestinationKind.SERVER, url="", team_id=None)
        present = 0
        for name, plugin, task_settings, interval, route in (
            ("Console health", "http", {"url": f"http://127.0.0.1:{port}/healthz"}, 10, ("any", {})),
            (
                "Agent API port (TLS)",
                "tcp",
                {"host": "127.0.0.1", "port": tls_port},
                10,
                ("byTags", {"tags": ["demo"]}),
            ),
            (
                "Console sign-in page",
                "http",
                {"url": f"http://127.0.0.1:{port}/admin/login/", "expected_text": "Password"},
                30,
                ("byTags", {"tags": ["demo"]}),
            ),
        ):
            if Task.objects.filter(scope=0, name=name).exists():
                present += 1  # kept as it is: an admin may have edited it
                continue
            services.save_task(
                name=name, plugin=plugin, settings=task_settings, interval=interval,
                route_type=route[0], route_config=route[1], team_id=None,
            )  # fmt: skip
            present += 1
        return str(key_file), present

    def _query_library(self) -> int:
        """Apply Fleet's standard query library when no query exists yet; the number loaded."""
        from packs.spec import apply_documents, parse_yaml
        from queries.models import Query

        if Query.objects.exists():
            return 0
        text = STANDARD_QUERY_LIBRARY.read_text(encoding="utf-8")
        apply_documents(parse_yaml(text, STANDARD_QUERY_LIBRARY.name))
        return Query.objects.count()

    def _enroll_secret(self) -> str:
        existing = EnrollSecret.objects.filter(team__isnull=True).order_by("created_at").first()
        if existing:
            return existing.secret
        # The product's own generator: letters and digits only, so the secret never starts with
        # "-", which the simulator's command line (and an admin's shell) would read as an option.
        return EnrollSecret.objects.create(secret=generate_enroll_secret()).secret
