"""Cursor pagination as Stripe does it: `limit` (1-100, default 10) and `starting_after` (the
id of the last object of the previous page) in; `{"object": "list", "data", "has_more"}` out.
Lists are in the ledger's order (oldest first), so a cursor stays valid as objects are added."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel

from domain.errors import LedgerError


class Page(BaseModel):
    limit: int = 10
    starting_after: str | None = None


def page(limit: Annotated[int, Query(ge=1, le=100, description="Objects per page, 1 to 100.")] = 10,
         starting_after: Annotated[str | None, Query(max_length=300, description=(
             "The id of the last object of the previous page: this page starts after it."))] = None) -> Page:
    return Page(limit=limit, starting_after=starting_after)


PageQuery = Annotated[Page, Depends(page)]


def paginate(items: Iterable[Any], key: Callable[[Any], str], chosen: Page) -> dict[str, Any]:
    """One page of `items` (in list order); `key` gives an object's id. Reads `items` only up to
    the end of the page (one more, to know has_more), so a generator is read no further."""
    data: list[Any] = []
    found = chosen.starting_after is None
    for item in items:
        if not found:
            found = key(item) == chosen.starting_after
            continue
        if len(data) == chosen.limit:
            return {"object": "list", "data": data, "has_more": True}
        data.append(item)
    if not found:
        raise LedgerError("invalid_request", f"starting_after: no object {chosen.starting_after!r} in this list")
    return {"object": "list", "data": data, "has_more": False}
