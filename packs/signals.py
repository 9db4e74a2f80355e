"""Invalidate the served osquery configs whenever one of their inputs changes.

Signals rather than calls in each write path, so that the console, REST, ``manage.py apply`` and
plain ORM code (tests, shells) all keep configs fresh. The inputs: saved queries (scheduled ones
form the ``Global``/``team-<id>`` packs), packs, scheduled queries, pack targets, teams (agent
options) and the Fleet settings (global agent options). Label *membership* is not here: it
travels in each host's cached state (``hosts.nodekeys``), which is part of the config's key.

Deleting a label or team also removes its pack-target rows, and Django sends no signal for
those (auto-created through models), so label and team deletions invalidate too. Host deletions
do not need to: a deleted host never asks for a config again and ids are never reused (SQLite
tables use AUTOINCREMENT, MySQL 8 persists its counters), so a stale id in the cached set of
directly targeted hosts is harmless, and bulk host deletes stay free of per-host signal work.

Each change invalidates at once and again after the commit, so a config rendered from data read
before the commit is never served afterwards (``packs.config`` explains the generation).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from hosts.models import FleetSettings, Label, Team
from packs import config
from packs.models import Pack, ScheduledQuery
from queries.models import Query

_TARGETS = (Pack.target_hosts.through, Pack.target_labels.through, Pack.target_teams.through)


def config_inputs_changed(**kwargs: Any) -> None:
    config.invalidate()
    transaction.on_commit(config.invalidate, robust=True)


def _targets_changed(action: str, **kwargs: Any) -> None:
    if action.startswith("post_"):
        config_inputs_changed()


def connect() -> None:
    """Called once from ``PacksConfig.ready``."""
    for model in (Query, Pack, ScheduledQuery, Team, FleetSettings):
        post_save.connect(config_inputs_changed, sender=model, dispatch_uid=f"cfg-save-{model._meta.label}")
    for model in (Query, Pack, ScheduledQuery, Team, FleetSettings, Label):
        post_delete.connect(config_inputs_changed, sender=model, dispatch_uid=f"cfg-del-{model._meta.label}")
    for through in _TARGETS:
        m2m_changed.connect(_targets_changed, sender=through, dispatch_uid=f"cfg-m2m-{through._meta.label}")
