"""Apple MDM's HTTP endpoints: SCEP, the check-in and command channel, and the enrollment profile.

Devices are untrusted: bodies are bounded before they are read, every message must carry a valid
``Mdm-Signature`` from an identity we issued, and every refusal is a 4xx with a one-line reason
(devices show or log it), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import plistlib
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from hosts.enrollment import EnrollmentError, find_secret
from hosts.models import Team
from mdm import challenge, conf, enrollment_profile, protocol
from mdm.models import DeviceIdentity
from mdm.pki import scep
from mdm.pki.ca import MdmNotConfigured
from mdm.signature import Unauthenticated, signer_digest

logger = logging.getLogger(__name__)

MAX_SCEP_MESSAGE = 64 * 1024
PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The body, or ``None`` when it is larger than ``limit`` (checked before reading it all)."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return None
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


# --- /mdm/apple/mdm --------------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["PUT", "POST"])
def mdm_channel(request: HttpRequest) -> HttpResponse:
    """Check-ins (``MessageType``) and command reports (``Status``), both signed plists."""
    body = _read_body(request, settings.MDM["MAX_BODY"])
    if body is None:
        return _text(413, "message too large")
    try:
        signer = signer_digest(request.headers.get("Mdm-Signature"), body)
        try:
            message = plistlib.loads(body)
        except Exception:  # plistlib raises many exception types on garbage
            return _text(400, "the body is not a plist")
        if not isinstance(message, dict):
            return _text(400, "the body is not a dictionary")
        if "MessageType" in message:
            with transaction.atomic():
                reply = protocol.checkin(message, signer)
        else:
            reply = protocol.report(message, signer, body)
    except MdmNotConfigured:
        return _text(404, "MDM is not set up on this server")
    except Unauthenticated as exc:
        logger.info("MDM message refused: %s", exc)
        return _text(401, str(exc))
    except protocol.ProtocolError as exc:
        return _text(exc.status, exc.message)
    response = HttpResponse(reply.body, status=reply.status)
    response["Content-Type"] = "application/xml" if reply.body else "text/plain"
    return response


# --- /mdm/apple/scep -------------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "POST", "HEAD"])
def scep_endpoint(request: HttpRequest) -> HttpResponse:
    """SCEP (RFC 8894): GetCACaps, GetCACert, and PKIOperation by GET (base64) or POST (DER)."""
    operation = request.GET.get("operation", "")
    try:
        authority = conf.ca()
    except MdmNotConfigured:
        return _text(404, "MDM is not set up on this server")
    if operation == "GetCACaps":
        return HttpResponse(scep.CA_CAPS, content_type="text/plain")
    if operation == "GetCACert":
        content_type, der = scep.get_ca_cert(authority)
        return HttpResponse(der, content_type=content_type)
    if operation != "PKIOperation":
        return _text(400, "unknown SCEP operation")
    if request.method == "POST":
        message = _read_body(request, MAX_SCEP_MESSAGE)
    else:
        message = _decode_get_message(request.GET.get("message", ""))
    if not message:
        return _text(400, "missing or oversized SCEP message")
    try:
        result = scep.handle_pki_operation(
            authority, message, _check_challenge, days=settings.MDM["DEVICE_CERT_DAYS"]
        )
    except scep.ScepError as exc:
        return _text(400, f"bad SCEP message: {exc}")
    if result.certificate is not None:
        _record_identity(result)
    else:
        logger.info("SCEP request refused: %s", result.failure)
    return HttpResponse(result.reply, content_type="application/x-pki-message")


def _decode_get_message(value: str) -> bytes | None:
    if not value or len(value) > MAX_SCEP_MESSAGE * 2:
        return None
    try:
        return base64.b64decode(value.replace(" ", "+"), validate=False)
    except (binascii.Error, ValueError):
        return None


def _check_challenge(password: str, csr: Any) -> int | None:
    return challenge.team_of_challenge(password)


def _record_identity(result: scep.ScepResult) -> None:
    certificate = result.certificate
    subject = certificate.subject.rfc4514_string()[:255]
    DeviceIdentity.objects.update_or_create(
        sha256=hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
        defaults={
            "serial_hex": format(certificate.serial_number, "x"),
            "subject": subject,
            "team_id": result.context,
            "not_after": certificate.not_valid_after_utc,
        },
    )


# --- /api/mdm/apple/enroll -------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "POST"])
def enroll(request: HttpRequest) -> HttpResponse:
    """The signed enrollment profile. With ``enroll_secret`` (a team's or the global enroll secret,
    for self-service and scripted installs) the secret picks the team; a signed-in admin may pass
    ``team_id`` instead (the console's download)."""
    secret = request.GET.get("enroll_secret") or request.POST.get("enroll_secret")
    try:
        team = _team_for(request, secret)
    except EnrollmentError:
        return _text(401, "invalid enroll secret")
    except PermissionDenied as exc:
        return _text(403, str(exc) or "not allowed")
    except Team.DoesNotExist:
        return _text(404, "no such team")
    return profile_response(team, request)


def profile_response(team: Team | None, request: HttpRequest) -> HttpResponse:
    try:
        body = enrollment_profile.signed(team, conf.server_url(request))
    except enrollment_profile.NotReady as exc:
        return _text(409, str(exc))
    response = HttpResponse(body, content_type=PROFILE_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{enrollment_profile.filename(team)}"'
    response["Cache-Control"] = "no-store"
    return response


def _team_for(request: HttpRequest, secret: str | None) -> Team | None:
    if secret:
        return find_secret(secret).team
    user = request.user
    if not getattr(user, "is_authenticated", False):
        raise EnrollmentError("no credentials")
    from mdm.access import may_manage_team  # console roles

    team_id = request.GET.get("team_id") or ""
    team = Team.objects.get(pk=int(team_id)) if team_id.isdigit() else None
    if not may_manage_team(user, team):
        raise PermissionDenied("Your role does not allow enrolling devices in this team.")
    return team
