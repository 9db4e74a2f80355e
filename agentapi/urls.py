"""Agent URLs: ``/api/osquery/...`` with Fleet's ``/api/v1/osquery/...`` alias, and orbit's."""

from django.urls import path

from agentapi import orbit, views
from agentapi.capabilities import advertise, orbit_ping
from hostscripts import orbit_api as scripts_orbit

_osquery = [
    ("enroll", views.enroll, "enroll"),
    ("config", views.config, "config"),
    ("distributed/read", views.distributed_read, "distributed-read"),
    ("distributed/write", views.distributed_write, "distributed-write"),
    ("log", views.log, "log"),
]

urlpatterns = [
    *[path(f"api/osquery/{route}", view, name=f"osquery-{name}") for route, view, name in _osquery],
    *[path(f"api/v1/osquery/{route}", view, name=f"osquery-v1-{name}") for route, view, name in _osquery],
    path("api/fleet/orbit/ping", orbit_ping, name="orbit-ping"),
    path("api/fleet/orbit/enroll", advertise(orbit.orbit_enroll), name="orbit-enroll"),
    path("api/fleet/orbit/config", advertise(orbit.orbit_config), name="orbit-config"),
    path(
        "api/fleet/orbit/scripts/request",
        advertise(scripts_orbit.script_request),
        name="orbit-script-request",
    ),
    path(
        "api/fleet/orbit/scripts/result", advertise(scripts_orbit.script_result), name="orbit-script-result"
    ),
]
