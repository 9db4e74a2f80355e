"""Agent URLs: ``/api/osquery/...`` with Fleet's ``/api/v1/osquery/...`` alias, and orbit's."""

from django.urls import path

from agentapi import orbit, views

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
    path("api/fleet/orbit/enroll", orbit.orbit_enroll, name="orbit-enroll"),
    path("api/fleet/orbit/config", orbit.orbit_config, name="orbit-config"),
]
