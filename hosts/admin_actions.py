"""The second step of a host-list action that asks for more (a team, a script): its page.

Django's admin posts the selection (ids, or ``select_across`` for every matching host) with the
action; the second step must post it back unchanged with ``apply``. Every such action renders
``admin/hosts/host/action_step.html`` (extended per action) with :func:`action_step_context`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest


def action_step_context(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    title: str,
    form: Any,
    action: str,
) -> dict[str, Any]:
    """What the step's template needs: the form, a glimpse of the hosts, the selection to re-post."""
    # Django always posts select_across ("0" or "1"): only "1" means every matching host.
    across = request.POST.get("select_across") == "1"
    return {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "action": action,
        "hosts": queryset[:20],
        "host_count": None if across else queryset.count(),
        "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        "select_across": "1" if across else "0",
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
