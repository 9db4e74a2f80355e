"""Console writes become activities, for every ModelAdmin, without editing each one.

Django's admin calls ``log_addition``, ``log_change`` and ``log_deletions`` on the ModelAdmin
after every add and change and before every delete (the change form, the delete page, the
"delete selected" action, inlines included). :class:`AuditedModelAdmin` extends those three: a
snapshot of the object is taken when the change form loads it for a POST (``get_object``) and
again after the save, and the difference is recorded, with Django's change message (which names
inline rows added, changed or deleted).

Three ways to apply it, all idempotent:

- ``class MySiteAdmin(ActivityLoggingSiteMixin, AdminSite)``: every ModelAdmin registered on the
  site is audited (the site subclasses the ModelAdmin class at ``register`` time; nothing is
  patched);
- ``install_admin_hooks(site)``: re-registers what a site already holds as audited subclasses
  (``activities.apps`` does this for the default site once every app's admin is loaded);
- ``class MyAdmin(AuditedModelAdmin, admin.ModelAdmin)`` for one admin.

Writes that go through a service which records explicitly (moving hosts, deleting hosts,
creating a team) are recorded once: see ``activities.recording``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import ModelAdmin
from django.db import models
from django.http import HttpRequest

from activities import recording
from activities.choices import Surface
from activities.snapshots import reload, snapshot, types_for_model

_BEFORE_ATTR = "_activity_before"
_audited_classes: dict[type, type] = {}


def _key(obj: models.Model) -> tuple[str, str]:
    return obj._meta.label_lower, str(obj.pk)


class AuditedModelAdmin:
    """ModelAdmin mixin: the console's adds, changes and deletes are recorded as activities."""

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is not None and request.method == "POST":
            # Kept per object: the same request may load several (a custom view, an inline).
            before = getattr(request, _BEFORE_ATTR, None)
            if before is None:
                before = {}
                setattr(request, _BEFORE_ATTR, before)
            before.setdefault(_key(obj), snapshot(obj))
        return obj

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        obj = super().save_form(request, form, change)  # type: ignore[misc]
        for activity_type in types_for_model(type(obj), "edited" if change else "created"):
            recording.announce(activity_type)  # the save's own service records are this one
        return obj

    def log_addition(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        recording.record_created(
            reload(obj) or obj,
            details={"change_message": message} if message else None,
            generic=True,
            actor=request.user,
            surface=Surface.CONSOLE,
        )
        return entry

    def log_change(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        before = (getattr(request, _BEFORE_ATTR, None) or {}).get(_key(obj))
        current = reload(obj) or obj
        details = {"change_message": message} if message else None
        if before is None:  # a custom view that did not load the object through get_object
            before = after = {}
        else:
            after = snapshot(current)
        recording.record_edited(
            current, before, after=after, details=details, generic=True,
            actor=request.user, surface=Surface.CONSOLE,
        )  # fmt: skip
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        entries = super().log_deletions(request, queryset)  # type: ignore[misc]
        recording.record_deleted_many(
            list(queryset), generic=True, actor=request.user, surface=Surface.CONSOLE
        )
        return entries


def audited(admin_class: type) -> type:
    """``admin_class`` with :class:`AuditedModelAdmin` mixed in (the class itself if it has it)."""
    if issubclass(admin_class, AuditedModelAdmin):
        return admin_class
    found = _audited_classes.get(admin_class)
    if found is None:
        found = type(
            admin_class.__name__,
            (AuditedModelAdmin, admin_class),
            {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
        )
        found.__qualname__ = admin_class.__qualname__
        _audited_classes[admin_class] = found
    return found


class ActivityLoggingSiteMixin:
    """AdminSite mixin: every ModelAdmin registered on the site records console writes."""

    def register(self, model_or_iterable: Any, admin_class: type | None = None, **options: Any) -> None:
        super().register(model_or_iterable, audited(admin_class or ModelAdmin), **options)  # type: ignore[misc]


def install_admin_hooks(site: Any) -> int:
    """Make every ModelAdmin already registered on ``site`` audited; returns how many changed."""
    changed = 0
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, AuditedModelAdmin):
            continue
        site.unregister(model)
        site.register(model, audited(type(model_admin)))
        changed += 1
    return changed
