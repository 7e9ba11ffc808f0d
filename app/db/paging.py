"""Keyset pagination for list endpoints: `limit` rows after a cursor (the last row's key), so a
page costs the same however deep it is and rows added meanwhile neither repeat nor vanish."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple, Unpack

from sqlalchemy import Select

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

DEFAULT_PAGE = 100
MAX_PAGE = 500


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_PAGE
    after: int | None = None  # the key of the last row already seen


def paged(stmt: Select[Unpack[Ts]], key: Any, page: Page, *, descending: bool = False) -> Select[Unpack[Ts]]:
    """`stmt` ordered by `key`, from just past `page.after`, one row more than the page (to know
    whether another page follows)."""
    if page.after is not None:
        stmt = stmt.where(key < page.after if descending else key > page.after)
    return stmt.order_by(key.desc() if descending else key).limit(page.limit + 1)


def cut(rows: Sequence[T], page: Page, key: Callable[[T], int]) -> tuple[list[T], int | None]:
    """(the page's rows, the cursor of the next page or None if this is the last)."""
    more = len(rows) > page.limit
    rows = list(rows[: page.limit])
    return rows, (key(rows[-1]) if more and rows else None)
