"""Plan a set of spec documents against the database and, unless it is a dry run, apply them.

Everything happens in one transaction: the plan is made from what the database holds inside
it, every document is checked before anything is written, and any error (in any document)
means nothing is applied. A dry run makes the same plan and rolls back.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from activities.events import applying_spec
from packs.spec.context import Context
from packs.spec.documents import UNSUPPORTED_KINDS, Document, document_problem
from packs.spec.labels import plan_labels
from packs.spec.packs import plan_packs
from packs.spec.plan import Plan, Skipped
from packs.spec.queries import plan_queries
from packs.spec.tasks import plan_destinations, plan_tasks
from packs.spec.teams import plan_config, plan_global_secrets, plan_secret_changes, plan_teams


class SpecError(Exception):
    """The specs cannot be applied; ``errors`` holds one message per problem (nothing was applied)."""

    def __init__(self, errors: list[str], plan: Plan | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.plan = plan


def _sort(documents: list[Document], plan: Plan) -> dict[str, list[Document]]:
    by_kind: dict[str, list[Document]] = defaultdict(list)
    for doc in documents:
        problem = document_problem(doc)
        if problem:
            plan.errors.append(f"{doc.where}: {problem}")
        elif doc.kind in UNSUPPORTED_KINDS:
            where = f"{doc.source}, document {doc.index}"
            plan.skipped.append(Skipped(doc.raw_kind, doc.name, where, UNSUPPORTED_KINDS[doc.kind]))
        else:
            by_kind[doc.kind].append(doc)
    return by_kind


def _plan(by_kind: dict[str, list[Document]], ctx: Context) -> None:
    # Order matters: later kinds refer to earlier ones (queries to teams, packs to all, tasks to
    # teams and labels).
    plan_teams(by_kind["team"], ctx)
    plan_global_secrets(by_kind["enroll_secret"], ctx)
    plan_secret_changes(ctx)
    plan_config(by_kind["config"], ctx)
    plan_queries(by_kind["query"], ctx)
    plan_labels(by_kind["label"], ctx)
    plan_packs(by_kind["pack"], ctx)
    plan_destinations(by_kind["metric_destination"], ctx)
    plan_tasks(by_kind["task"], ctx)
    for kind, keys in ctx.ignored.items():
        if keys:
            listed = ", ".join(f"{key} ({count})" for key, count in sorted(keys.items()))
            ctx.plan.warnings.append(f"{kind} specs: keys this server does not use, ignored: {listed}")


def _invalidate(ctx: Context) -> None:
    """Drop what agents are served from caches, now and again once the transaction commits.

    The shared write paths (and ``packs.signals``) already do this for what they save; this is
    the safety net for everything else an apply touches (teams, agent options, secrets).
    """
    from hosts import labels as host_labels
    from packs import config as osquery_config

    osquery_config.invalidate()
    transaction.on_commit(osquery_config.invalidate)
    if ctx.labels_changed:
        host_labels.invalidate()


def apply_documents(documents: list[Document], *, dry_run: bool = False, user: Any = None) -> Plan:
    """Plan ``documents``; apply them unless ``dry_run``. Raises :class:`SpecError` on any problem."""
    plan = Plan()
    by_kind = _sort(documents, plan)
    try:
        with transaction.atomic():
            ctx = Context.load(plan, user)
            _plan(by_kind, ctx)
            if plan.errors:
                raise SpecError(plan.errors, plan)
            if dry_run:
                transaction.set_rollback(True)
                return plan
            with applying_spec(plan, user):  # one activity per kind changed, surface yaml
                for step in plan.steps:
                    step()
            if plan.has_changes:
                _invalidate(ctx)
    except ValidationError as exc:
        raise SpecError([f"nothing was applied: {' '.join(exc.messages)}"], plan) from exc
    except DatabaseError as exc:
        raise SpecError([f"nothing was applied: the database refused a change ({exc})"], plan) from exc
    plan.applied = True
    return plan
