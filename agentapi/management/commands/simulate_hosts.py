"""``manage.py simulate_hosts``: N simulated osquery agents against a running server.

It is a Django command only so that it is found where operators look; it does not touch the
database and works against any server (this one or another) reachable over HTTP(S). With
``--mdm``, some macOS hosts are also Apple MDM devices; the APNs stand-in that wakes them uses
the certificates ``manage.py mdm setup --dev`` wrote under ``FLEET_MDM_DIR`` (read from disk only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentapi.simulator.agent import AgentSettings
from agentapi.simulator.apple_sim import MdmSettings
from agentapi.simulator.identity import DEFAULT_TEMPLATES, parse_templates
from agentapi.simulator.orbit import OrbitSettings, fetch_root
from agentapi.simulator.runner import SimulationConfig, run_simulation


class Command(BaseCommand):
    help = (
        "Simulate osquery agents speaking the real TLS remote protocol (enroll, config, distributed "
        "read/write, logs) against URL, like Fleet's osquery-perf."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="Server base URL, e.g. https://127.0.0.1:8443")
        parser.add_argument("--enroll-secret", required=True)
        parser.add_argument("--count", type=int, default=10, help="Number of hosts (default 10).")
        parser.add_argument("--seed", type=int, default=0, help="Same seed, same hosts (default 0).")
        parser.add_argument(
            "--start-period",
            type=float,
            default=10.0,
            help="Spread agent starts over this many seconds (default 10).",
        )
        parser.add_argument(
            "--os-templates",
            default=DEFAULT_TEMPLATES,
            help=f"Weighted OS mix (default {DEFAULT_TEMPLATES}).",
        )
        parser.add_argument("--distributed-interval", type=float, default=10.0)
        parser.add_argument("--logger-tls-period", type=float, default=10.0)
        parser.add_argument(
            "--config-interval",
            type=float,
            default=60.0,
            help="--config_refresh of the agents (default 60 s).",
        )
        parser.add_argument(
            "--ignore-config-options",
            action="store_true",
            help="Keep the intervals above even if the served config sets others.",
        )
        parser.add_argument("--logger-tls-compress", action="store_true", help="gzip log requests.")
        parser.add_argument("--api-prefix", default="/api/osquery", help="or /api/v1/osquery")
        tls = parser.add_mutually_exclusive_group()
        tls.add_argument("--insecure", action="store_true", help="Do not verify the server certificate.")
        tls.add_argument("--ca-file", help="Verify the server with this PEM (e.g. its self-signed cert).")
        parser.add_argument(
            "--connections",
            type=int,
            default=64,
            help="Simultaneous HTTP connections shared by all agents (default 64).",
        )
        parser.add_argument(
            "--duration", type=float, default=0.0, help="Stop after N seconds (0: run until Ctrl-C)."
        )
        parser.add_argument("--node-key-file", help="Read node keys from / save them to this JSON file.")
        parser.add_argument("--only-enroll", action="store_true", help="Enroll all hosts, then exit.")
        parser.add_argument("--progress-interval", type=float, default=5.0)
        parser.add_argument(
            "--stats-file", default="", help="At the end, write the totals (latency p50/p99 too) as JSON."
        )
        parser.add_argument(
            "--stats-after",
            type=float,
            default=0.0,
            help="Count requests, errors and latency only from this many seconds on (a warm-up).",
        )
        orbit = parser.add_argument_group("orbit (fleetd)")
        orbit.add_argument(
            "--orbit",
            action="store_true",
            help="Also simulate orbit on every host: config, scripts, lock/wipe, Desktop token, updates.",
        )
        orbit.add_argument(
            "--orbit-config-interval", type=float, default=30.0, help="Default 30 s, as orbit."
        )
        orbit.add_argument(
            "--token-rotation", type=float, default=3600.0, help="Desktop token lifetime (1 h)."
        )
        orbit.add_argument(
            "--device-token-file", default="", help="Write each host's Desktop token here (JSON)."
        )
        orbit.add_argument(
            "--scripts-disabled", action="store_true", help="orbit runs without --enable-scripts."
        )
        orbit.add_argument(
            "--update-url", default="", help="TUF repository base URL, e.g. https://host:8443/tuf"
        )
        orbit.add_argument(
            "--update-root", default="", help="Trusted root.json (default: fetched from --update-url)."
        )
        orbit.add_argument("--update-interval", type=float, default=900.0, help="Default 15 min, as orbit.")
        mdm = parser.add_argument_group("Apple MDM")
        how_many = mdm.add_mutually_exclusive_group()
        how_many.add_argument(
            "--mdm",
            type=int,
            default=0,
            metavar="N",
            help="N macOS hosts are also MDM devices (the first N hosts become Macs if too few are).",
        )
        how_many.add_argument(
            "--mdm-rate",
            type=float,
            default=None,
            help="This share (0-1) of the macOS hosts are MDM devices.",
        )
        mdm.add_argument(
            "--mdm-interval", type=float, default=60.0, help="Seconds between a Mac's check-ins (default 60)."
        )
        mdm.add_argument(
            "--mdm-not-now-rate",
            type=float,
            default=0.1,
            help="Share of commands a Mac answers NotNow, to get again later (default 0.1).",
        )
        mdm.add_argument(
            "--mdm-unlock-after",
            type=float,
            default=120.0,
            help="A locked Mac's user types the PIN after this many seconds (default 120; 0: never).",
        )
        mdm.add_argument(
            "--mdm-reenroll-after-erase",
            action="store_true",
            help="An erased Mac is set up again and re-enrolls (default: it goes silent).",
        )
        mdm.add_argument(
            "--mdm-apns-url",
            default="",
            help="Where the server pushes; the APNs stand-in listens on its port (default MDM DEV_APNS_URL).",
        )
        mdm.add_argument(
            "--mdm-standin-dir",
            default="",
            help="The stand-in's certificates (default FLEET_MDM_DIR/apns-standin, from `mdm setup --dev`).",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["count"] < 1:
            raise CommandError("--count must be at least 1")
        try:
            parse_templates(opts["os_templates"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not opts["url"].startswith(("http://", "https://")):
            raise CommandError("--url must start with http:// or https://")
        settings = AgentSettings(
            distributed_interval=opts["distributed_interval"],
            logger_tls_period=opts["logger_tls_period"],
            config_interval=opts["config_interval"],
            follow_config_options=not opts["ignore_config_options"],
            compress_logs=opts["logger_tls_compress"],
            prefix=opts["api_prefix"].rstrip("/"),
        )
        config = SimulationConfig(
            orbit=self._orbit_settings(opts),
            mdm=self._mdm_settings(opts),
            url=opts["url"],
            enroll_secret=opts["enroll_secret"],
            count=opts["count"],
            seed=opts["seed"],
            start_period=opts["start_period"],
            templates=opts["os_templates"],
            agent=settings,
            insecure=opts["insecure"],
            ca_file=opts["ca_file"],
            duration=opts["duration"] or None,
            node_key_file=opts["node_key_file"],
            only_enroll=opts["only_enroll"],
            connections=opts["connections"],
            progress_interval=opts["progress_interval"],
            stats_after=opts["stats_after"],
        )
        self.stdout.write(
            f"simulating {config.count} hosts against {config.url} (seed {config.seed}); Ctrl-C to stop"
        )
        stats = run_simulation(config, out=self.stdout.write)
        self.stdout.write(self.style.SUCCESS(f"done: {stats.as_dict()}"))
        if opts["stats_file"]:
            Path(opts["stats_file"]).write_text(json.dumps(stats.as_dict(), indent=1))

    def _mdm_settings(self, opts: dict[str, Any]) -> MdmSettings | None:
        from django.conf import settings

        rate = opts["mdm_rate"]
        if rate is None and opts["mdm"] <= 0:
            return None
        if opts["mdm"] < 0 or (rate is not None and not 0 <= rate <= 1):
            raise CommandError("--mdm must be positive and --mdm-rate between 0 and 1")
        if opts["mdm_interval"] <= 0:
            raise CommandError("--mdm-interval must be positive")
        if not 0 <= opts["mdm_not_now_rate"] < 1:
            raise CommandError("--mdm-not-now-rate must be at least 0 and below 1")
        return MdmSettings(
            count=opts["mdm"],
            rate=rate,
            interval=opts["mdm_interval"],
            not_now_rate=opts["mdm_not_now_rate"],
            unlock_after=opts["mdm_unlock_after"],
            reenroll_after_erase=opts["mdm_reenroll_after_erase"],
            standin_dir=opts["mdm_standin_dir"] or str(Path(settings.MDM["DIR"]) / "apns-standin"),
            apns_url=opts["mdm_apns_url"] or settings.MDM["DEV_APNS_URL"],
        )

    def _orbit_settings(self, opts: dict[str, Any]) -> OrbitSettings | None:
        if not opts["orbit"]:
            return None
        root = b""
        if opts["update_root"]:
            try:
                root = Path(opts["update_root"]).read_bytes()
            except OSError as exc:
                raise CommandError(f"--update-root: {exc}") from None
        elif opts["update_url"]:
            root = fetch_root(opts["update_url"], insecure=opts["insecure"], ca_file=opts["ca_file"])
        return OrbitSettings(
            config_interval=opts["orbit_config_interval"],
            token_rotation=opts["token_rotation"],
            update_interval=opts["update_interval"],
            update_url=opts["update_url"].rstrip("/"),
            update_root=root,
            scripts_enabled=not opts["scripts_disabled"],
            token_file=opts["device_token_file"],
        )
