"""Fleet Desktop URLs, mounted at the site root: orbit's device_token, the device API, My device.

The device API answers under every version prefix Fleet serves it on (``latest`` is what Fleet
Desktop calls; ``v1`` and ``2022-04`` are Fleet's aliases).
"""

from django.urls import path

from agentapi.capabilities import advertise
from devices import api, orbit, page

app_name = "devices"

_device_routes = [
    ("", api.device_host, "host"),
    ("/desktop", api.desktop, "desktop"),
    ("/ping", api.authenticated_ping, "ping"),
    ("/refetch", api.refetch, "refetch"),
    ("/transparency", api.transparency, "transparency"),
]
_versions = ("latest", "v1", "2022-04")

urlpatterns = [
    path("api/fleet/orbit/device_token", advertise(orbit.device_token), name="orbit-device-token"),
    path("api/fleet/device/ping", api.ping, name="device-ping"),
    *[
        path(f"api/{version}/fleet/device/<str:token>{route}", view, name=f"device-{name}-{version}")
        for version in _versions
        for route, view, name in _device_routes
    ],
    path("device/<str:token>", page.my_device, name="my-device"),
    path("device/<str:token>/refetch", page.refetch, name="refetch"),
    path("device/<str:token>/mdm-enrollment", page.mdm_enrollment, name="mdm-enrollment"),
    # Fleet Desktop's other page links (policies, self-service): this server has one page.
    path("device/<str:token>/<slug:section>", page.section, name="my-device-section"),
]
