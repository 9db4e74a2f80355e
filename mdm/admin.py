"""The console's Apple MDM pages: the MDM page (state, APNs certificate, enrollment profiles),
enrolled devices, and commands (with the device's answer, and a PIN reveal for admins).

Devices and commands are read-only records; commands are sent from the host page (its MDM block,
:mod:`mdm.hostpage`) or REST, with the host's team checked (:mod:`mdm.access`). The APNs
certificate is global admins' (``hosts.console_permissions``).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from hosts.models import Host, Team
from hosts.permissions import HOST_READ_ROLES, scope_queryset
from mdm import access, conf, push_certificate, queue, services
from mdm.api import plist_preview, plist_to_json
from mdm.apns.certificate import PushCertificateError
from mdm.models import Command, Enrollment, PushCertificate

MAX_UPLOAD = 64 * 1024


class CsrForm(forms.Form):
    email = forms.EmailField(help_text="The Apple ID's email you will use at identity.apple.com.")
    organization = forms.CharField(max_length=64, initial="Fleet")


class UploadForm(forms.Form):
    certificate = forms.FileField(help_text="The .pem (or .cer) Apple issued for this server's CSR.")

    def clean_certificate(self) -> bytes:
        upload = self.cleaned_data["certificate"]
        if upload.size > MAX_UPLOAD:
            raise forms.ValidationError("This file is too large to be a certificate.")
        return upload.read()


@admin.register(PushCertificate)
class MdmPageAdmin(admin.ModelAdmin):
    """The "Apple MDM" page: one page, no rows to list."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("", view(self.page_view), name="mdm_pushcertificate_changelist"),
            path("csr/", view(self.csr_view), name="mdm_pushcertificate_csr"),
            path("upload/", view(self.upload_view), name="mdm_pushcertificate_upload"),
        ]

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        row = push_certificate.current()
        teams = [t for t in Team.objects.order_by("name") if access.may_manage_team(request.user, t)]
        return {
            **self.admin_site.each_context(request),
            "title": "Apple MDM",
            "opts": self.model._meta,
            "configured": conf.configured(),
            "certificate": row if row.certificate_pem else None,
            "pending_csr": row.pending_created_at if row.pending_csr_pem else None,
            "warning": push_certificate.warning(row),
            "may_manage": self.has_change_permission(request),
            "csr_form": CsrForm(),
            "upload_form": UploadForm(),
            "profile_url": reverse("mdm-enrollment-profile"),
            "teams": teams,
            "no_team": access.may_manage_team(request.user, None),
            "enrolled": Enrollment.objects.filter(enrolled=True).count(),
            "push_failing": Enrollment.objects.filter(enrolled=True, push_failures__gt=0).count(),
            **extra,
        }

    def page_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return TemplateResponse(request, "admin/mdm/page.html", self._context(request))

    def csr_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        form = CsrForm(request.POST)
        if not form.is_valid():
            return TemplateResponse(request, "admin/mdm/page.html", self._context(request, csr_form=form))
        csr = push_certificate.make_csr(form.cleaned_data["email"], form.cleaned_data["organization"])
        response = HttpResponse(csr, content_type="application/x-pem-file")
        response["Content-Disposition"] = 'attachment; filename="fleet-apns.csr"'
        return response

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                row = services.upload_push_certificate(form.cleaned_data["certificate"], user=request.user)
            except services.MdmError as exc:
                form.add_error("certificate", exc.message)
            except PushCertificateError as exc:
                form.add_error("certificate", str(exc))
            else:
                messages.success(request, f"Installed the APNs certificate for {row.topic}.")
                return HttpResponseRedirect(reverse("admin:mdm_pushcertificate_changelist"))
        return TemplateResponse(request, "admin/mdm/page.html", self._context(request, upload_form=form))


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _host_link(host: Host | None) -> str:
    if host is None:
        return "—"
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:hosts_host_change", args=[host.pk]), host.display_name
    )


@admin.register(Enrollment)
class EnrollmentAdmin(_ReadOnly):
    list_display = ["device", "serial_number", "host_link", "enrolled", "last_seen_at", "push_state"]
    list_filter = ["enrolled", "host__team"]
    search_fields = ["udid", "serial_number", "device_name", "host__hostname", "host__computer_name"]
    exclude = ["push_magic", "push_token"]
    readonly_fields = ["host_link"]
    list_select_related = ["host"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Enrollment]:
        rows = super().get_queryset(request)
        return scope_queryset(rows, request.user, HOST_READ_ROLES, team_field="host__team_id")

    @admin.display(description="device", ordering="device_name")
    def device(self, obj: Enrollment) -> str:
        return str(obj)

    @admin.display(description="host")
    def host_link(self, obj: Enrollment) -> str:
        return _host_link(obj.host)

    @admin.display(description="push")
    def push_state(self, obj: Enrollment) -> str:
        if obj.push_failures:
            return format_html(
                '<span class="mdm-push-failing">{} ({}×)</span>', obj.last_push_error, obj.push_failures
            )
        return "ok" if obj.last_push_at else "—"


@admin.register(Command)
class CommandAdmin(_ReadOnly):
    list_display = [
        "request_type",
        "uuid",
        "host_link",
        "state",
        "requested_by_name",
        "created_at",
        "result_at",
    ]
    list_filter = ["request_type", "status", "raw"]
    search_fields = ["uuid", "request_type", "enrollment__udid", "enrollment__serial_number"]
    list_select_related = ["enrollment__host"]
    fields = [
        "uuid",
        "request_type",
        "host_link",
        "state",
        "status",
        "priority",
        "raw",
        "requested_by_name",
        "created_at",
        "delivered_at",
        "delivery_count",
        "not_now_count",
        "result_at",
        "errors",
        "sent",
        "answer",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Command]:
        rows = super().get_queryset(request).defer("payload", "result")
        return access.visible_commands(rows, request.user)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Command | None:
        return Command.objects.filter(pk__in=self.get_queryset(request).values("pk"), pk=object_id).first()

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/pin/", view(self.pin_view), name="mdm_command_pin"),
            path("host/<int:host_id>/send/", view(self.send_view), name="mdm_command_host_send"),
            *super().get_urls(),
        ]

    @admin.display(description="host")
    def host_link(self, obj: Command) -> str:
        return _host_link(obj.enrollment.host)

    @admin.display(description="error chain")
    def errors(self, obj: Command) -> str:
        if not obj.error_chain:
            return "—"
        return "; ".join(
            f"{e.get('ErrorDomain', '')} {e.get('ErrorCode', '')}: "
            f"{e.get('USEnglishDescription') or e.get('LocalizedDescription', '')}"
            for e in obj.error_chain
        )

    @admin.display(description="command sent")
    def sent(self, obj: Command) -> str:
        return format_html("<pre class='mdm-plist'>{}</pre>", plist_preview(obj))

    @admin.display(description="device's answer")
    def answer(self, obj: Command) -> str:
        report = queue.result_plist(obj)
        if report is None:
            return "—"
        for secret_key in ("PushMagic", "Token", "UnlockToken"):
            report.pop(secret_key, None)
        return format_html(
            "<pre class='mdm-plist'>{}</pre>", json.dumps(plist_to_json(report), indent=2)[:200_000]
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ):
        command = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if command is not None and command.sealed_pin:
            host = command.enrollment.host
            extra["pin_url"] = (
                reverse("admin:mdm_command_pin", args=[command.pk])
                if access.may_send_raw(request.user, host.team_id if host else None)
                else None
            )
        return super().change_view(request, object_id, form_url, extra)

    def pin_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Reveal a PIN (POST, admins of the host's team; audited)."""
        if request.method != "POST":
            raise PermissionDenied
        command = self.get_object(request, str(pk))
        if command is None:
            raise PermissionDenied
        host = command.enrollment.host
        if not access.may_send_raw(request.user, host.team_id if host else None):
            raise PermissionDenied
        try:
            pin = services.reveal_pin(command, user=request.user)
        except services.MdmError as exc:
            messages.error(request, exc.message)
        else:
            messages.info(request, f"The PIN of {command.request_type} {command.uuid} is {pin}.")
        target = request.POST.get("next", "")
        if not target.startswith("/admin/"):
            target = reverse("admin:mdm_command_change", args=[command.pk])
        return HttpResponseRedirect(target)

    def send_view(self, request: HttpRequest, host_id: int) -> HttpResponse:
        """The host page's "Send" (a named command) and, for admins, a raw command."""
        if request.method != "POST":
            raise PermissionDenied
        visible = scope_queryset(Host.objects.all(), request.user, HOST_READ_ROLES)
        host = get_object_or_404(visible, pk=host_id)
        raw = request.POST.get("raw", "").strip() or None
        allowed = access.may_send_raw if raw else access.may_command
        if not allowed(request.user, host.team_id):
            raise PermissionDenied
        try:
            sent = services.send([host], request.POST.get("request_type", ""), user=request.user, raw=raw)
        except services.MdmError as exc:
            messages.error(request, exc.message)
        except services.commands.CommandError as exc:
            messages.error(request, str(exc))
        else:
            if sent.commands:
                messages.success(request, f"Queued {sent.commands[0].request_type} for {host.display_name}.")
            else:
                messages.error(request, f"Not sent: {next(iter(sent.skipped.values()))}.")
        return HttpResponseRedirect(reverse("admin:hosts_host_change", args=[host.pk]) + "#host-mdm")


from mdm import profiles_admin  # noqa: E402, F401  (configuration profiles: their own module)
