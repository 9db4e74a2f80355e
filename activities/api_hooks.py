"""REST writes become activities: a mixin for the DRF viewsets' create, update and destroy.

The hook sits on DRF's request cycle, not on ``perform_create`` and friends: viewsets override
those without calling ``super()`` (to check a team, to go through a service), and a mixin
defining ``create`` would make the router route POSTs to read-only viewsets. So:

- ``dispatch`` runs a standard write action in one transaction, so the change and its activity
  are committed together (or not at all);
- ``initial`` (after authentication and permission checks) snapshots the object an update or
  destroy is about to touch;
- ``get_serializer`` notes the input serializer, whose ``instance`` is the created or updated
  object;
- ``finalize_response`` records on a 2xx answer: ``created_*`` with the new values, ``edited_*``
  with the fields that changed, ``deleted_*`` with the values the object had.

Custom actions (``refetch``, a campaign's ``run``) are not touched: their services record what
they do. The types a standard action will record are announced first, so a service recording the
same thing underneath (creating a team goes through ``hosts.services.create_team``) stays quiet:
see ``activities.recording``.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from activities import context, recording
from activities.choices import Surface
from activities.snapshots import reload, snapshot, types_for_model

AUDITED_ACTIONS = {"create": "created", "update": "edited", "partial_update": "edited", "destroy": "deleted"}


class AuditedViewSetMixin:
    """Put first in a viewset's bases: its create/update/destroy record activities (surface rest)."""

    def _activity_verb(self) -> str | None:
        return AUDITED_ACTIONS.get(getattr(self, "action", None) or "")

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        action = (getattr(self, "action_map", None) or {}).get(request.method.lower())
        if action in AUDITED_ACTIONS:
            with transaction.atomic():
                return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        verb = self._activity_verb()
        self._activity_state: dict[str, Any] | None = None
        if verb is None:
            return
        state: dict[str, Any] = {"serializer": None}
        model = getattr(getattr(self.get_serializer_class(), "Meta", None), "model", None)  # type: ignore[attr-defined]
        if model is not None:
            for activity_type in types_for_model(model, verb):
                recording.announce(activity_type)
        if verb in ("edited", "deleted"):
            obj = self.get_object()  # type: ignore[attr-defined]  # the action fetches it too
            state["object"] = obj
            state["before"] = snapshot(obj)
        self._activity_state = state

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        serializer = super().get_serializer(*args, **kwargs)  # type: ignore[misc]
        state = getattr(self, "_activity_state", None)
        if state is not None and "data" in kwargs and state["serializer"] is None:
            state["serializer"] = serializer
        return serializer

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        state = getattr(self, "_activity_state", None)
        if state is not None and 200 <= response.status_code < 300:
            self._activity_state = None
            self._record_activity(request, state)
        return response

    def _record_activity(self, request: Request, state: dict[str, Any]) -> None:
        verb = self._activity_verb()
        who = {"actor": request.user, "surface": _surface(), "generic": True}
        if verb == "deleted":
            recording.record_deleted(state["object"], state["before"], **who)
            return
        serializer = state["serializer"]
        obj: models.Model | None = (
            getattr(serializer, "instance", None) if serializer else state.get("object")
        )
        if obj is None:
            return
        current = reload(obj) or obj
        if verb == "created":
            recording.record_created(current, **who)
        else:
            recording.record_edited(current, state["before"], after=snapshot(current), **who)


def _surface() -> str:
    """REST, unless an enclosing context says otherwise (a spec applied over REST is ``yaml``)."""
    acting = context.current()
    return acting.surface if context.has_context() and acting.surface != Surface.SYSTEM else Surface.REST
