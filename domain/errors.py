"""Stable error codes. A refused command records nothing and raises one of these."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

CODES = {
    "not_authorized": "R2",
    "already_on_plan": "R4",
    "seat_limit_exceeded": "R5",
    "storage_limit_exceeded": "R6",
    "plan_locked": "R19",
    "payment_method_required": "R7",
    "open_invoice": "R8",
    "contact_sales": "R9",
    "payment_failed": "R12",
    "payment_pending": "R12",
    "payment_action_required": "R12",
    "team_choice_required": "R18",
    "trial_used": "R15",
    "unknown_plan": "",
    "invalid_request": "",
    "no_scheduled_change": "R17",
    "not_subscribed": "",
    "already_subscribed": "",
    "no_open_invoice": "R8",
    "no_pending_payment": "R12",
    "idempotency_conflict": "",
    "insufficient_credits": "R23",
    "operations_limit_exceeded": "R19",
    "workspace_suspended": "R19",
    "concurrency_conflict": "",
    "not_found": "",
    "invalid_catalog": "",
    "catalog_conflict": "",
    "catalog_mismatch": "",
    "clock_conflict": "",
    "payments_conflict": "",
    "event_chain_broken": "",
    "read_models_damaged": "",
    "unauthenticated": "",
    "forbidden": "R1",
    "quote_stale": "R25",
    "unavailable": "",
    "read_models_behind": "",
    "position_ahead": "",
    "internal_error": "",
}
"""`unauthenticated` (no or unknown API token) and `forbidden` (a token acting outside its role or
workspace) come from the HTTP adapter. `unavailable`: the database cannot be reached, refused the login, is missing, read-only or busy
(adapters report it; the domain never does). `read_models_behind`: the HTTP API's read models have not
reached a read's `min_position` in time (retry); `position_ahead`: the `min_position` is beyond the
ledger's last recorded position (no write returned it). `catalog_mismatch`: a fact names a catalog
the ledger does not hold, or records another content for it (replay refuses to price with it).
`read_models_damaged`: a read model holds rows past the position it recorded (its tracking row
rewound or removed by hand); `project rebuild` mends it. `internal_error`: a bug, reported without a traceback."""


class LedgerError(Exception):
    """A refusal: a stable machine code (see CODES) and a message for a person."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unregistered error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its code and message, so a refusal raised in another process (a projection
        partition's event_chain_broken) arrives as itself, not as an internal error."""
        return LedgerError, (self.code, self.message)

    @property
    def rule(self) -> str:
        return CODES[self.code]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"LedgerError({self.code!r}, {self.message!r})"


DECISION_ERRORS = (LedgerError, ArithmeticError, AssertionError, AttributeError, LookupError, RuntimeError,
                   StopIteration, TypeError, ValueError)
"""What deciding or recording one workspace's due items can raise that is about that workspace
(a refusal, or a bug its history or catalog meets), not about the database, which every other
workspace would meet too. See `about_the_workspace`."""


def about_the_workspace(error: BaseException) -> bool:
    """A refusal, or a bug of this code's (it raises the built-in classes). A library's own error
    classes (a stored event that does not decode, a database error) subclass some of them too:
    those are about the infrastructure, and every workspace would meet them."""
    return isinstance(error, LedgerError) or (isinstance(error, DECISION_ERRORS)
                                              and type(error).__module__ == "builtins")


def each_workspace(workspaces: Iterable[str], step: Callable[[str], Any]) -> tuple[dict[str, Any], dict[str, Exception]]:
    """`step` on every workspace, passing over one whose error is about it alone (a history
    broken by hand, a refusal): what each step returned, and workspace -> error. Any other
    error (the database's) stops the walk, as every workspace would meet it."""
    done: dict[str, Any] = {}
    failed: dict[str, Exception] = {}
    for ws in workspaces:
        try:
            done[ws] = step(ws)
        except DECISION_ERRORS as e:
            if not about_the_workspace(e):
                raise
            failed[ws] = e
    return done, failed


def failure(error: BaseException) -> dict[str, str]:
    """An error as a refusal is reported: a bug's class and message as an internal error."""
    return error.as_dict() if isinstance(error, LedgerError) else \
        {"code": "internal_error", "message": f"{type(error).__name__}: {error}"}


class AdvanceIncomplete(LedgerError):
    """Some workspaces' due items (or pending payments) could not be recorded; every other
    workspace's were (`done`), so one workspace's failure never stops renewals for the rest.
    `failed`: workspace -> error."""

    def __init__(self, done: dict[str, list[Any]], failed: dict[str, BaseException],
                 rest: str = "every other workspace was advanced") -> None:
        self.done, self.failed = done, failed
        (first_ws, first), more = next(iter(self.failures().items())), len(failed) - 1
        others = f" (and {more} more workspace{'s' if more > 1 else ''})" if more else ""
        super().__init__(first["code"], f"{first_ws}: {first['message']}{others}: {rest}")

    def failures(self) -> dict[str, dict[str, str]]:
        """Each failed workspace's error as a refusal is reported."""
        return {ws: failure(e) for ws, e in self.failed.items()}
