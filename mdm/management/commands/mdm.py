"""``manage.py mdm``: set up and run Apple MDM from the command line (docs/apple-mdm.md).

    mdm setup [--dev] [--force]          create the MDM CA (and, with --dev, a stand-in push cert)
    mdm status                           what is set up: CA, push certificate (topic, expiry), devices
    mdm apns csr --email E [--out F]     a CSR to get the APNs push certificate from Apple
    mdm apns upload CERT [--key KEY]     install the certificate Apple issued (same topic on renewal)
    mdm apns standin [--port N]          run the local APNs stand-in (after `setup --dev`)
    mdm enrollment-profile [--team T] [--out F]   the signed enrollment profile
    mdm devices                          enrolled devices, their hosts, last check-in, push errors
    mdm command send TYPE --host ID ...  queue DeviceInformation, RestartDevice, ... (or --raw FILE)
    mdm command list [--host ID]         recent commands and their states
    mdm command show UUID                one command, with the device's answer
    mdm profiles list | add FILE [--team T] | delete UUID | resend --host ID --identifier I

No secret is ever printed except a lock PIN asked for explicitly (``command show --pin``), which
is recorded in the audit trail. Every failure is one line (``CommandError``), never a traceback.
"""

from __future__ import annotations

import plistlib
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from activities.context import as_command
from hosts.models import Host, Label, Team
from mdm import conf, enrollment_profile, push_certificate, queue, services
from mdm.models import Command as MdmCommand
from mdm.models import Enrollment


def _team(name: str | None) -> Team | None:
    if not name:
        return None
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise CommandError(f"No team named {name!r}.")
    return team


def _hosts(ids: list[int]) -> list[Host]:
    hosts = list(Host.objects.filter(pk__in=ids))
    missing = set(ids) - {h.pk for h in hosts}
    if missing:
        raise CommandError(f"No host with id {', '.join(map(str, sorted(missing)))}.")
    return hosts


class Command(BaseCommand):
    help = "Set up and operate Apple MDM: CA, APNs certificate, enrollment profile, commands, profiles."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        setup = actions.add_parser("setup", help="Create the MDM CA (once).")
        setup.add_argument("--dev", action="store_true", help="Also a stand-in push certificate (no Apple).")
        setup.add_argument("--force", action="store_true", help="Replace the CA: every device re-enrolls.")
        actions.add_parser("status", help="What is set up.")

        apns = actions.add_parser("apns", help="The APNs push certificate.").add_subparsers(
            dest="apns_action", required=True
        )
        csr = apns.add_parser("csr", help="Make a CSR for Apple.")
        csr.add_argument("--email", required=True)
        csr.add_argument("--org", default="Fleet")
        csr.add_argument("--out", help="Write the CSR here instead of standard output.")
        upload = apns.add_parser("upload", help="Install the certificate Apple issued.")
        upload.add_argument("certificate", help="PEM or DER file.")
        upload.add_argument("--key", help="Its private key (PEM), when it was not made by `apns csr`.")
        standin = apns.add_parser("standin", help="Run the local APNs stand-in (after setup --dev).")
        standin.add_argument("--port", type=int, default=None)

        profile = actions.add_parser("enrollment-profile", help="Write the signed enrollment profile.")
        profile.add_argument("--team")
        profile.add_argument("--out", help="File (default: standard output).")
        profile.add_argument("--server-url", help="Base URL devices use (default FLEET_MDM_SERVER_URL).")

        actions.add_parser("devices", help="Enrolled devices.")

        command = actions.add_parser("command", help="MDM commands.").add_subparsers(
            dest="command_action", required=True
        )
        send = command.add_parser("send", help="Queue a command on hosts.")
        send.add_argument("request_type", nargs="?", default="", help="DeviceInformation, RestartDevice, ...")
        send.add_argument("--host", type=int, action="append", required=True, help="Host id (repeatable).")
        send.add_argument("--raw", help="A command plist file (admins' raw command).")
        send.add_argument("--wait", type=float, default=0, help="Seconds to wait for the answers.")
        listing = command.add_parser("list", help="Recent commands.")
        listing.add_argument("--host", type=int)
        listing.add_argument("--limit", type=int, default=50)
        show = command.add_parser("show", help="One command and the device's answer.")
        show.add_argument("uuid")
        show.add_argument("--pin", action="store_true", help="Reveal a lock or erase PIN (audited).")

        profiles = actions.add_parser("profiles", help="Configuration profiles.").add_subparsers(
            dest="profiles_action", required=True
        )
        plist = profiles.add_parser("list", help="Profiles and their status counts.")
        plist.add_argument("--team")
        padd = profiles.add_parser("add", help="Add (or replace, same identifier) a profile.")
        padd.add_argument("file")
        padd.add_argument("--team")
        for mode in ("include-all", "include-any", "exclude-any"):
            padd.add_argument(f"--labels-{mode}", action="append", default=[], metavar="LABEL")
        pdel = profiles.add_parser("delete", help="Delete a profile (it is removed from hosts).")
        pdel.add_argument("uuid")
        presend = profiles.add_parser("resend", help="Send a profile to a host again.")
        presend.add_argument("--host", type=int, required=True)
        presend.add_argument("--identifier", required=True)

    @as_command
    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "setup":
                self._setup(options)
            elif action == "status":
                self._status()
            elif action == "apns":
                getattr(self, f"_apns_{options['apns_action']}")(options)
            elif action == "enrollment-profile":
                self._enrollment_profile(options)
            elif action == "devices":
                self._devices()
            elif action == "command":
                getattr(self, f"_command_{options['command_action']}")(options)
            elif action == "profiles":
                self._profiles(options)
        except services.MdmError as exc:
            raise CommandError(exc.message) from None
        except conf.MdmNotConfigured:
            raise CommandError("MDM is not set up: run `manage.py mdm setup` first.") from None
        except enrollment_profile.NotReady as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{exc.filename or ''}: {exc.strerror or exc}") from None

    # --- setup and status --------------------------------------------------------------------------

    def _setup(self, options: dict[str, Any]) -> None:
        authority, created = services.setup(dev=options["dev"], force=options["force"])
        subject = authority.certificate.subject.rfc4514_string()
        if created:
            self.stdout.write(f"Created the MDM CA ({subject}) in {conf.ca_dir()}; its key is owner-only.")
        else:
            self.stdout.write(f"The MDM CA already exists ({subject}); nothing replaced (--force replaces).")
        if options["dev"]:
            self.stdout.write(
                f"Push certificate: stand-in, topic {push_certificate.topic()}; pushes go to the local "
                "APNs stand-in (`manage.py mdm apns standin`)."
            )
        self._status()

    def _status(self) -> None:
        self.stdout.write(f"MDM CA: {'set up' if conf.configured() else 'not set up (manage.py mdm setup)'}")
        row = push_certificate.current()
        if row.certificate_pem:
            kind = " (stand-in, not Apple's)" if row.is_dev else ""
            self.stdout.write(f"APNs certificate{kind}: topic {row.topic}, expires {row.not_after:%Y-%m-%d}")
            warning = push_certificate.warning(row)
            if warning:
                self.stdout.write(self.style.WARNING(f"Warning: the APNs certificate {warning}."))
        else:
            self.stdout.write("APNs certificate: none (manage.py mdm apns csr, then apns upload)")
        if row.pending_csr_pem:
            self.stdout.write(f"A CSR made {row.pending_created_at:%Y-%m-%d} waits for its certificate.")
        enrolled = Enrollment.objects.filter(enrolled=True).count()
        failing = Enrollment.objects.filter(enrolled=True, push_failures__gt=0).count()
        self.stdout.write(f"Enrolled devices: {enrolled} ({failing} with failing pushes)")

    # --- APNs --------------------------------------------------------------------------------------

    def _apns_csr(self, options: dict[str, Any]) -> None:
        csr = push_certificate.make_csr(options["email"], options["org"])
        if options["out"]:
            Path(options["out"]).write_bytes(csr)
            self.stdout.write(
                f"Wrote {options['out']}. Get it signed for MDM and upload it at identity.apple.com, "
                "then `manage.py mdm apns upload` the certificate Apple gives back."
            )
        else:
            self.stdout.write(csr.decode(), ending="")

    def _apns_upload(self, options: dict[str, Any]) -> None:
        data = Path(options["certificate"]).read_bytes()
        key = Path(options["key"]).read_bytes() if options["key"] else None
        row = services.upload_push_certificate(data, key_pem=key)
        self.stdout.write(
            f"Installed the APNs certificate: topic {row.topic}, expires {row.not_after:%Y-%m-%d}."
        )

    def _apns_standin(self, options: dict[str, Any]) -> None:
        from urllib.parse import urlsplit

        from django.conf import settings

        from mdm.apns.certificate import load_dev_bundle
        from mdm.apns.standin import ApnsStandIn

        directory = conf.standin_dir()
        if not (directory / "ca.pem").exists():
            raise CommandError("No stand-in material: run `manage.py mdm setup --dev` first.")
        bundle = load_dev_bundle(directory)
        port = options["port"] if options["port"] is not None else urlsplit(settings.MDM["DEV_APNS_URL"]).port
        standin = ApnsStandIn(
            port=port or 0,
            server_cert_pem=bundle.server_cert_pem,
            server_key_pem=bundle.server_key_pem,
            client_ca_pem=bundle.ca_cert_pem,
        )
        standin.start()
        self.stdout.write(f"APNs stand-in listening on {standin.url} (Ctrl-C stops it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            standin.stop()

    # --- enrollment profile and devices ------------------------------------------------------------

    def _enrollment_profile(self, options: dict[str, Any]) -> None:
        from django.conf import settings

        base = (options["server_url"] or settings.MDM["SERVER_URL"]).rstrip("/")
        if not base:
            raise CommandError("Give --server-url (or set FLEET_MDM_SERVER_URL): the https URL devices use.")
        body = enrollment_profile.signed(_team(options["team"]), base)
        if options["out"]:
            Path(options["out"]).write_bytes(body)
            self.stdout.write(f"Wrote {options['out']} ({len(body)} bytes, signed).")
        else:
            sys.stdout.buffer.write(body)

    def _devices(self) -> None:
        rows = Enrollment.objects.select_related("host", "host__team").order_by("-last_seen_at")[:1000]
        self.stdout.write(f"{'UDID':38} {'SERIAL':14} {'HOST':>6} {'TEAM':16} {'STATE':10} LAST SEEN  PUSH")
        for e in rows:
            team = e.host.team.name if e.host and e.host.team else "-"
            seen = timezone.localtime(e.last_seen_at).strftime("%m-%d %H:%M") if e.last_seen_at else "never"
            state = "enrolled" if e.enrolled else ("out" if e.checked_out_at else "pending")
            push = e.last_push_error or "ok"
            host_id = str(e.host_id or "-")
            self.stdout.write(
                f"{e.udid:38} {e.serial_number:14} {host_id:>6} {team[:16]:16} {state:10} {seen}  {push}"
            )

    # --- commands ----------------------------------------------------------------------------------

    def _command_send(self, options: dict[str, Any]) -> None:
        hosts = _hosts(options["host"])
        raw = Path(options["raw"]).read_bytes() if options["raw"] else None
        if raw is None and not options["request_type"]:
            raise CommandError("Name a command type (e.g. DeviceInformation) or give --raw FILE.")
        try:
            sent = services.send(hosts, options["request_type"], raw=raw)
        except services.commands.CommandError as exc:
            raise CommandError(str(exc)) from None
        for command in sent.commands:
            self.stdout.write(
                f"Queued {command.request_type} {command.uuid} for host {command.enrollment.host_id}"
            )
        for host_id, reason in sent.skipped.items():
            self.stdout.write(self.style.WARNING(f"Skipped host {host_id}: {reason}"))
        if options["wait"] > 0 and sent.commands:
            self._wait([c.pk for c in sent.commands], options["wait"])

    def _wait(self, ids: list[int], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            waiting = MdmCommand.objects.filter(
                pk__in=ids, status__in=("", "NotNow"), cancelled=False
            ).count()
            if not waiting:
                break
            time.sleep(0.5)
        for command in MdmCommand.objects.filter(pk__in=ids):
            self.stdout.write(f"{command.uuid}: {command.state}")

    def _command_list(self, options: dict[str, Any]) -> None:
        rows = MdmCommand.objects.select_related("enrollment").order_by("-created_at", "-id")
        if options["host"]:
            rows = rows.filter(enrollment__host_id=options["host"])
        for c in rows[: max(1, min(options["limit"], 1000))]:
            when = timezone.localtime(c.created_at).strftime("%Y-%m-%d %H:%M:%S")
            self.stdout.write(
                f"{when} {c.uuid} {c.request_type:26} host {c.enrollment.host_id or '-':>5} {c.state}"
            )

    def _command_show(self, options: dict[str, Any]) -> None:
        command = MdmCommand.objects.filter(uuid=options["uuid"]).select_related("enrollment").first()
        if command is None:
            raise CommandError(f"No command {options['uuid']}.")
        self.stdout.write(f"{command.request_type} {command.uuid}: {command.state}")
        self.stdout.write(f"Host {command.enrollment.host_id}, device {command.enrollment.udid}")
        self.stdout.write(
            f"Queued {command.created_at:%Y-%m-%d %H:%M:%S} by {command.requested_by_name or '-'}"
        )
        self.stdout.write(
            f"Delivered {command.delivery_count} time(s), NotNow {command.not_now_count} time(s)"
        )
        for error in command.error_chain:
            text = error.get("USEnglishDescription") or error.get("LocalizedDescription", "")
            self.stdout.write(f"Error {error.get('ErrorCode', '')} {error.get('ErrorDomain', '')}: {text}")
        result = queue.result_plist(command)
        if result is not None:
            result.pop("PushMagic", None)
            self.stdout.write(plistlib.dumps(result, fmt=plistlib.FMT_XML).decode(), ending="")
        if options["pin"]:
            self.stdout.write(f"PIN: {services.reveal_pin(command)}")

    # --- profiles ----------------------------------------------------------------------------------

    def _profiles(self, options: dict[str, Any]) -> None:
        from mdm.profiles import services as profiles
        from mdm.profiles.validation import ProfileError

        action = options["profiles_action"]
        try:
            if action == "list":
                self._profiles_list(_team(options.get("team")))
            elif action == "add":
                labels = {
                    mode: list(Label.objects.filter(name__in=options[f"labels_{mode}"]))
                    for mode in ("include_all", "include_any", "exclude_any")
                }
                for mode, found in labels.items():
                    missing = set(options[f"labels_{mode}"]) - {label.name for label in found}
                    if missing:
                        raise CommandError(f"No label named {', '.join(sorted(missing))}.")
                profile = profiles.create_profile(
                    team=_team(options["team"]),
                    data=Path(options["file"]).read_bytes(),
                    labels_include_all=labels["include_all"],
                    labels_include_any=labels["include_any"],
                    labels_exclude_any=labels["exclude_any"],
                )
                self.stdout.write(f"Added {profile.name} ({profile.identifier}) as {profile.uuid}.")
            elif action == "delete":
                from mdm.models import Profile

                profile = Profile.objects.filter(uuid=options["uuid"]).first()
                if profile is None:
                    raise CommandError(f"No profile {options['uuid']}.")
                profiles.delete_profile(profile)
                self.stdout.write(f"Deleted {profile.name}; hosts will have it removed.")
            elif action == "resend":
                host = _hosts([options["host"]])[0]
                profiles.resend(host, options["identifier"])
                self.stdout.write(f"Resending {options['identifier']} to host {host.pk}.")
        except ProfileError as exc:
            raise CommandError(str(exc)) from None

    def _profiles_list(self, team: Team | None) -> None:
        from django.db.models import Count, Q

        from mdm.models import Profile

        rows = Profile.objects.select_related("team").annotate(
            **{
                s: Count("hosts", filter=Q(hosts__status=s))
                for s in ("verified", "verifying", "pending", "failed")
            }
        )
        if team is not None:
            rows = rows.filter(team=team)
        for p in rows:
            scope = p.team.name if p.team else "(no team)"
            self.stdout.write(
                f"{p.uuid} {p.name[:30]:30} {p.identifier[:40]:40} {scope[:16]:16} "
                f"verified {p.verified} verifying {p.verifying} pending {p.pending} failed {p.failed}"
            )
