"""A test double of an osquery agent that speaks the wire protocol through Django's test client."""

from __future__ import annotations

import gzip
import json
from typing import Any

from django.test import Client


def host_details(
    identifier: str, hostname: str = "mac-1.local", platform: str = "darwin", serial: str = "C02TEST0001"
) -> dict[str, dict[str, str]]:
    """``host_details`` as osquery sends them at enrolment (all values are strings)."""
    return {
        "os_version": {
            "name": "macOS",
            "major": "14",
            "minor": "5",
            "patch": "0",
            "build": "23F79",
            "platform": platform,
            "platform_like": "darwin",
            "version": "14.5",
            "codename": "Sonoma",
            "arch": "arm64",
        },
        "osquery_info": {
            "version": "5.12.1",
            "uuid": identifier,
            "instance_id": f"inst-{identifier}",
            "build_platform": platform,
        },
        "system_info": {
            "hostname": hostname,
            "uuid": identifier,
            "cpu_type": "arm64e",
            "cpu_brand": "Apple M2",
            "cpu_physical_cores": "8",
            "cpu_logical_cores": "8",
            "physical_memory": "17179869184",
            "hardware_vendor": "Apple Inc.",
            "hardware_model": "Mac14,2",
            "hardware_serial": serial,
            "computer_name": hostname.split(".")[0],
        },
        "platform_info": {"vendor": "Apple Inc."},
    }


class Agent:
    """Enrolls and talks to the agent API like osquery does; ``node_key`` is kept after enroll."""

    def __init__(
        self, client: Client, identifier: str = "uuid-0001", prefix: str = "/api/osquery", **details: str
    ) -> None:
        self.client = client
        self.identifier = identifier
        self.prefix = prefix
        self.details = host_details(identifier, **details)
        self.node_key: str | None = None

    def post(
        self, endpoint: str, body: Any, *, gzip_body: bool = False, header_key: bool = False, **extra: Any
    ):
        data = json.dumps(body).encode()
        headers: dict[str, str] = {}
        if gzip_body:
            data = gzip.compress(data)
            headers["HTTP_CONTENT_ENCODING"] = "gzip"
        if header_key and self.node_key:
            headers["HTTP_AUTHORIZATION"] = f"NodeKey {self.node_key}"
        headers.update(extra)
        return self.client.post(
            f"{self.prefix}/{endpoint}", data=data, content_type="application/json", **headers
        )

    def enroll(self, secret: str) -> dict[str, Any]:
        response = self.post(
            "enroll",
            {
                "enroll_secret": secret,
                "host_identifier": self.identifier,
                "platform_type": "21",
                "host_details": self.details,
            },
        )
        body = response.json()
        self.node_key = body.get("node_key")
        return body

    def authed(self, endpoint: str, body: dict[str, Any] | None = None, **kwargs: Any):
        return self.post(endpoint, {"node_key": self.node_key, **(body or {})}, **kwargs)
