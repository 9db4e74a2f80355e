"""The pages people reach from a link, outside the console: accept an invitation, set a password.

Both look like the console's login page, log the person in once they are done and send them to
the console. A link that cannot be used (unknown, expired, already used) gets a page saying so,
with status 404. Every request counts against a per-address rate (``users.throttle``), and the
pages are never cached (the token is in their address).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from users import services
from users.forms import AcceptInviteForm
from users.throttle import retry_after


def _page(request: HttpRequest, template: str, status: int = 200, **context: Any) -> TemplateResponse:
    return TemplateResponse(request, template, {**admin.site.each_context(request), **context}, status=status)


def _problem(
    request: HttpRequest, message: str, *, status: int = 404, title: str = "Link not valid"
) -> HttpResponse:
    return _page(request, "users/link_problem.html", status=status, title=title, message=message)


def _throttled(request: HttpRequest) -> HttpResponse | None:
    wait = retry_after(request)
    if wait is None:
        return None
    response = _problem(
        request,
        f"Too many requests from your address. Try again in {wait} second{'s' if wait != 1 else ''}.",
        status=429,
        title="Too many requests",
    )
    response["Retry-After"] = str(wait)
    return response


def _login_backend() -> str:
    """The backend that checks passwords (not django-axes' throttle): the session records it."""
    return next(b for b in settings.AUTHENTICATION_BACKENDS if not b.startswith("axes."))


def _into_console(request: HttpRequest, user: Any) -> HttpResponse:
    """Log the user in; the console for console roles, the API docs for gitops (API-only)."""
    login(request, user, backend=_login_backend())
    if not admin.site.has_permission(request):
        return HttpResponseRedirect(reverse("api-docs"))
    return HttpResponseRedirect(reverse("admin:index"))


@never_cache
@sensitive_variables("token")
@sensitive_post_parameters("password1", "password2")
def accept_invite(request: HttpRequest, token: str) -> HttpResponse:
    """Fleet's invitation page: choose a username, give a name, set a password; then the console."""
    refused = _throttled(request)
    if refused:
        return refused
    try:
        invite = services.find_invite(token)
    except services.InviteUnusable as exc:
        return _problem(request, str(exc))
    form = AcceptInviteForm(
        request.POST if request.method == "POST" else None,
        invite=invite,
        initial={"name": invite.name, "username": invite.email.split("@")[0]},
    )
    if request.method == "POST" and form.is_valid():
        try:
            user = services.accept_invite(
                invite,
                username=form.cleaned_data["username"],
                name=form.cleaned_data.get("name", ""),
                password=form.cleaned_data["password1"],
            )
        except services.InviteUnusable as exc:
            return _problem(request, str(exc))
        except ValidationError as exc:  # e.g. the username was taken meanwhile
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            return _into_console(request, user)
    roles = services.describe_rows(invite.roles.select_related("team"))
    return _page(
        request,
        "users/accept_invite.html",
        title="Create your account",
        form=form,
        invite=invite,
        roles=roles,
    )


@never_cache
@sensitive_variables("token")
@sensitive_post_parameters("new_password1", "new_password2")
def set_password(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """A set-password link (``manage.py user add`` without a password, ``user password``)."""
    refused = _throttled(request)
    if refused:
        return refused
    model = get_user_model()
    try:
        user = model.objects.get(pk=force_str(urlsafe_base64_decode(uidb64)), is_active=True)
    except (TypeError, ValueError, OverflowError, model.DoesNotExist, ValidationError):
        user = None
    if user is None or not default_token_generator.check_token(user, token):
        return _problem(
            request,
            "This link is not valid: it has expired or was already used. Ask a Fleet admin for a new one.",
        )
    form = SetPasswordForm(user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            services.set_password(user, form.cleaned_data["new_password1"])
        except ValidationError as exc:
            form.add_error("new_password2", exc.messages)
        else:
            return _into_console(request, user)
    return _page(request, "users/set_password.html", title="Choose your password", form=form, account=user)
