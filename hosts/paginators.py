"""Paginators for big host tables: they never run a full ``COUNT(*)``.

Counting 100,000 hosts (filtered, joined) on every page load costs more than fetching the page.
Both paginators here count only a bounded window of rows starting at the current page, with a
``LIMIT``-ed subquery::

    SELECT COUNT(*) FROM (SELECT id FROM hosts_host ... LIMIT <window + 1> OFFSET <offset>)

so the count is exact for small results and otherwise reads "at least ``offset + window``"
(``count_is_exact`` is then false). Moving forward through pages keeps extending the window, so
every page stays reachable; filters and search narrow big lists down to exact counts.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

COUNT_WINDOW = 10_000


def capped_count(queryset: QuerySet, offset: int = 0, window: int = COUNT_WINDOW) -> tuple[int, bool]:
    """Rows in ``queryset``, counting at most ``window`` past ``offset``: ``(count, exact)``.

    Any row at or beyond ``offset`` proves the ``offset`` rows before it exist, so only the
    window needs counting. Past the end, the rows before ``offset`` are counted (bounded too).
    """
    rows = queryset.order_by().values("pk")
    ahead = rows[offset : offset + window + 1].count()
    if ahead > window:
        return offset + window, False
    if ahead == 0 and offset > 0:
        return rows[:offset].count(), True
    return offset + ahead, True


class CappedCountPaginator(Paginator):
    """A ``Paginator`` whose ``count`` is ``capped_count`` from the requested page on (console)."""

    count_window = COUNT_WINDOW

    def __init__(
        self,
        object_list: Any,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
        *,
        page_number: int = 1,
        window: int | None = None,
    ) -> None:
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.page_number = max(1, page_number)
        self.window = max(window or self.count_window, int(per_page))
        self.count_is_exact = True

    @cached_property
    def count(self) -> int:
        offset = (self.page_number - 1) * self.per_page
        total, self.count_is_exact = capped_count(self.object_list, offset, self.window)
        return total


class CappedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` pagination with a capped ``count`` and a ``count_is_exact`` flag (REST)."""

    max_limit = 1000
    count_window = COUNT_WINDOW
    count_is_exact = True

    def paginate_queryset(self, queryset: QuerySet, request: Any, view: Any = None) -> list | None:
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.offset = self.get_offset(request)
        window = max(self.count_window, self.limit)
        self.count, self.count_is_exact = capped_count(queryset, self.offset, window)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        if self.count == 0 or self.offset >= self.count:
            return []
        return list(queryset[self.offset : self.offset + self.limit])

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "count": self.count,
                "count_is_exact": self.count_is_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["description"] = (
            f"Exact when count_is_exact; otherwise a lower bound (at most {self.count_window} rows past "
            "the offset are counted)."
        )
        response["properties"]["count_is_exact"] = {"type": "boolean", "example": True}
        response["required"] = [*response["required"], "count_is_exact"]
        return response


class CappedPaginationAdminMixin:
    """A ModelAdmin whose list never counts a big table (``CappedCountPaginator``), with the page
    number read as ASCII digits (``?p=²`` or 5,000 digits is page 1, not a 500)."""

    def get_paginator(
        self,
        request: Any,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> CappedCountPaginator:
        from fleet.numbers import parse_id

        page = parse_id(request.GET.get("p", "1")) or 1
        return CappedCountPaginator(queryset, per_page, orphans, allow_empty_first_page, page_number=page)

