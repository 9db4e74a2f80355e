"""Splitting long id lists into batches that every database accepts in one ``IN (...)``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
BATCH = 1000


def chunks(values: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    """``values`` in lists of ``size`` (``itertools.batched`` from Python 3.12, as lists)."""
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
