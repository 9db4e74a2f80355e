"""Where the MDM's material lives and how devices reach us: the CA directory, the public URL,
and the push endpoint (Apple's, or the local stand-in after ``mdm setup --dev``)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import HttpRequest

from mdm.pki.ca import CertificateAuthority, MdmNotConfigured, load_ca

__all__ = ["MdmNotConfigured", "ca", "ca_dir", "configured", "server_url", "standin_dir"]


def ca_dir() -> Path:
    return Path(settings.MDM["DIR"])


def standin_dir() -> Path:
    """The dev APNs stand-in's CA and server certificate (``mdm setup --dev``)."""
    return ca_dir() / "apns-standin"


def ca() -> CertificateAuthority:
    """The MDM CA; :class:`MdmNotConfigured` until ``manage.py mdm setup`` has run."""
    return load_ca(ca_dir())


def configured() -> bool:
    try:
        ca()
    except MdmNotConfigured:
        return False
    return True


def server_url(request: HttpRequest | None = None) -> str:
    """The https base URL devices use (``FLEET_MDM_SERVER_URL``, else the request's own)."""
    configured_url = settings.MDM["SERVER_URL"].rstrip("/")
    if configured_url or request is None:
        return configured_url
    return f"{request.scheme}://{request.get_host()}"
