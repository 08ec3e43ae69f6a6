"""Bounded label values: a label never takes more than ``cap`` distinct values per process.

User input (model names, role claims) must not create unbounded series: the first ``cap`` values
seen keep their own label, later ones collapse into ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

OTHER = "other"
# A label value longer than this is certainly not a model or role name worth a series.
MAX_VALUE_LENGTH = 128


class BoundedLabel:
    __slots__ = ("_lock", "cap", "fixed", "known")

    def __init__(self, cap: int, fixed: Iterable[str] = ()) -> None:
        self.cap = cap
        self.fixed = frozenset(fixed)
        self.known: set[str] = set(self.fixed)
        self._lock = threading.Lock()

    def __call__(self, value: str | None, *, admit: bool = True) -> str:
        """The label for ``value``; a new value is admitted only when ``admit`` and under the cap."""
        if value is None or value == "":
            return "none"
        if value in self.known:
            return value
        if not admit or len(value) > MAX_VALUE_LENGTH:
            return OTHER
        with self._lock:
            if len(self.known) - len(self.fixed) < self.cap:
                self.known.add(value)
                return value
        return OTHER


class ClosedLabel:
    """Only the listed values; everything else is ``other``."""

    __slots__ = ("values",)

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(values)

    def __call__(self, value: str | None, *, admit: bool = True) -> str:
        if value is None or value == "":
            return "none"
        return value if value in self.values else OTHER
