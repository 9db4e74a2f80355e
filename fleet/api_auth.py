"""REST API login: hashed, expiring tokens (django-rest-knox) behind brute-force throttling.

- ``POST /api/v1/auth/token/`` with ``username`` and ``password`` (form or JSON) answers
  ``{"token": ..., "expiry": ...}``. The token is shown this once: the database keeps only its
  SHA-512 digest (knox), and it stops working at ``expiry`` (``API_TOKEN_TTL_HOURS``). Clients
  send ``Authorization: Token <token>``, as before.
- ``POST /api/v1/auth/logout/`` revokes the token the request carries;
  ``POST /api/v1/auth/logout-all/`` revokes every token of its user.

Password guessing meets two limits. django-axes counts failed logins per *pair* of username and
client address, the console's and this endpoint's together, and refuses that pair for the cool-off
once it reaches ``AXES_FAILURE_LIMIT`` (429 here, a lockout page in the console). Keying on the
pair, not the username, means an attacker elsewhere cannot lock the real user out; the second
limit, a per-address rate on this endpoint (``API_LOGIN_RATE``), stops one address from trying
many usernames. Both answer in the REST error shape, ``{"message": ...}``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import authenticate, user_logged_in, user_logged_out
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from knox.auth import TokenAuthentication
from knox.models import AuthToken
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

CREDENTIALS_REFUSED = "Unable to log in with provided credentials."


# --- who is asking -------------------------------------------------------------------------------
def client_address(request: HttpRequest) -> str:
    """The client's IP address: the peer, or behind a load balancer the address it saw.

    A load balancer appends the peer it saw to ``X-Forwarded-For``, so only the last entry is
    trusted; earlier ones are whatever the client sent. Used by axes and the login throttle.
    """
    meta = getattr(request, "META", {})
    if settings.CLIENT_ADDRESS_FROM_X_FORWARDED_FOR:
        forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return meta.get("REMOTE_ADDR") or "unknown"


def _cool_off() -> timedelta:
    return settings.AXES_COOLOFF_TIME


def lockout_message() -> str:
    minutes = max(1, round(_cool_off().total_seconds() / 60))
    return (
        "Too many failed logins for this account from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """What a locked-out login gets (``AXES_LOCKOUT_CALLABLE``): JSON on the API, a page elsewhere."""
    retry_after = str(int(_cool_off().total_seconds()))
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"message": lockout_message()}, status=429)
    else:
        context = {
            **admin.site.each_context(request),
            "title": "Login temporarily refused",
            "message": lockout_message(),
        }
        response = TemplateResponse(request, "admin/login_locked_out.html", context, status=429)
        response.render()
    response["Retry-After"] = retry_after
    return response


class LockedOut(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "locked_out"

    def __init__(self) -> None:
        super().__init__(lockout_message())
        self.wait = _cool_off().total_seconds()  # DRF turns this into Retry-After


class LoginRateThrottle(SimpleRateThrottle):
    """Login attempts per client address, signed in or not (``API_LOGIN_RATE``)."""

    scope = "login"

    def get_rate(self) -> str:
        return settings.API_LOGIN_RATE

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_address(request._request)}


# --- the endpoints -----------------------------------------------------------------------------
class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(write_only=True)
    password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"})

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The plain HttpRequest: django-axes marks a lockout on it for its middleware.
        http_request = self.context["request"]._request
        user = authenticate(http_request, username=attrs["username"], password=attrs["password"])
        if user is None:
            if getattr(http_request, "axes_locked_out", False):
                raise LockedOut()
            raise serializers.ValidationError(CREDENTIALS_REFUSED, code="authorization")
        attrs["user"] = user
        return attrs


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`. Shown only once.")
    expiry = serializers.DateTimeField(help_text="The token stops working at this time.")


def _issue_token(user: Any) -> tuple[AuthToken, str]:
    """A new token for ``user``; expired ones are dropped and the oldest beyond the cap revoked."""
    now = timezone.now()
    with transaction.atomic():
        AuthToken.objects.filter(user=user, expiry__lte=now).delete()
        live = AuthToken.objects.filter(user=user).filter(Q(expiry__gt=now) | Q(expiry__isnull=True))
        surplus = live.count() - settings.API_TOKEN_LIMIT_PER_USER + 1
        if surplus > 0:
            oldest = list(live.order_by("created").values_list("digest", flat=True)[:surplus])
            AuthToken.objects.filter(digest__in=oldest).delete()
        return AuthToken.objects.create(user=user, expiry=settings.API_TOKEN_TTL)


class TokenLoginView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        summary="Get an API token",
        description=(
            "Exchange a username and password for a token. The token is shown only in this answer; "
            "it expires at `expiry`. Repeated failures answer 429 for a while."
        ),
        request=LoginSerializer,
        responses={200: TokenSerializer},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        instance, token = _issue_token(user)
        user_logged_in.send(sender=user.__class__, request=request._request, user=user)
        return Response(TokenSerializer({"token": token, "expiry": instance.expiry}).data)


class TokenLogoutView(APIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Revoke this token",
        request=None,
        responses={204: None},
        description="The token stops working.",
    )
    def post(self, request: Request) -> Response:
        request.auth.delete()
        user_logged_out.send(sender=request.user.__class__, request=request._request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenLogoutAllView(APIView):
    permission_classes = [IsAuthenticated]  # a token or a console session

    @extend_schema(
        summary="Revoke every token of this user",
        request=None,
        responses={204: None},
        description="Every API token of the signed-in user stops working (console sessions stay).",
    )
    def post(self, request: Request) -> Response:
        AuthToken.objects.filter(user=request.user).delete()
        if isinstance(request.auth, AuthToken):  # a console session is not logged out by this
            user_logged_out.send(sender=request.user.__class__, request=request._request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
