"""What planning needs to know: the objects already in the database and those the specs define.

Loaded once per apply (a handful of queries, whatever the number of documents), so that a pack
may refer to a query defined in the same apply, in any document order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from hosts.models import Label, Team
from packs.spec.documents import Document
from packs.spec.plan import Plan
from queries.models import Query

GLOBAL = ""  # the team name used as the scope of global queries


@dataclass
class Context:
    plan: Plan
    user: Any = None
    teams: dict[str, Team] = field(default_factory=dict)
    queries: dict[tuple[str, str], Query] = field(default_factory=dict)  # (team name or "", name)
    labels: dict[str, Label] = field(default_factory=dict)
    planned_teams: set[str] = field(default_factory=set)
    planned_queries: dict[tuple[str, str], str] = field(default_factory=dict)  # -> SQL
    planned_labels: set[str] = field(default_factory=set)
    # Enroll secrets wanted per scope (None: global, else the team's name), with their document.
    secret_scopes: dict[str | None, tuple[Document, list[str]]] = field(default_factory=dict)
    ignored: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    labels_changed: set[int] = field(default_factory=set)

    @classmethod
    def load(cls, plan: Plan, user: Any = None) -> Context:
        ctx = cls(plan=plan, user=user if getattr(user, "is_authenticated", False) else None)
        ctx.teams = {team.name: team for team in Team.objects.all()}
        for query in Query.objects.select_related("team"):
            ctx.queries[(query.team.name if query.team_id else GLOBAL, query.name)] = query
        ctx.labels = {label.name: label for label in Label.objects.all()}
        return ctx

    def error(self, doc: Document, message: str) -> None:
        self.plan.errors.append(f"{doc.where}: {message}")

    def repeated(self, seen: dict[Any, Document], key: Any, kind: str, name: str, doc: Document) -> bool:
        """Whether ``doc`` defines again what an earlier document of the file did (then an error
        naming both); otherwise ``doc`` is remembered under ``key`` as the first definition."""
        if key in seen:
            self.error(doc, f'{kind} "{name}" is also defined in {seen[key].where}')
            return True
        seen[key] = doc
        return False

    def ignore(self, kind: str, keys: set[str] | list[str]) -> None:
        """Remember spec keys this server does not use; reported once per kind, with counts."""
        self.ignored[kind].update(keys)

    def team_known(self, name: str) -> bool:
        return name in self.teams or name in self.planned_teams

    def query_sql(self, team: str, name: str) -> str | None:
        """The SQL of a saved query as it will be after this apply (None when there is none)."""
        if (team, name) in self.planned_queries:
            return self.planned_queries[(team, name)]
        existing = self.queries.get((team, name))
        return existing.query if existing else None

    def label_known(self, name: str) -> bool:
        return name in self.labels or name in self.planned_labels
