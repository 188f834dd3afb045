"""The what-if form: a built-in catalog and policy overrides chosen from the catalog Policy's
own fields, turned into replay/what_if.py's Pricing. Only built-in catalog names are accepted:
`load_catalog` would read any path it is given."""

from __future__ import annotations

import re
import typing
from datetime import datetime
from typing import Any

from domain.catalog import BUILT_IN, Policy, load_catalog
from domain.errors import LedgerError
from domain.ledger import Ledger
from replay.what_if import Pricing, parse_policy, what_if


def policy_fields() -> list[dict[str, Any]]:
    """Each policy field a person can choose: its name, help and choices (free number input
    when it has none)."""
    out = []
    for name, info in Policy.model_fields.items():
        annotation = info.annotation
        choices: list[str] | None
        if typing.get_origin(annotation) is typing.Literal:
            choices = [str(c) for c in typing.get_args(annotation)]
        elif annotation is bool:
            choices = ["true", "false"]
        elif annotation is int:
            choices = None
        else:
            continue  # free text (trial_fallback names a plan): left to the CLI
        out.append({"name": name, "label": name.replace("_", " "), "help": info.description or "",
                    "choices": choices, "default": str(info.default).lower() if isinstance(info.default, bool)
                    else str(info.default)})
    return out


def pricing_of(catalog: str | None, choices: dict[str, str], start: datetime | None,
               end: datetime | None) -> Pricing | None:
    """The pricing the form asks for, None when it asks for nothing yet."""
    fields = {f["name"]: f for f in policy_fields()}
    pairs = []
    for name, value in choices.items():
        if name not in fields or not value:
            continue
        allowed = fields[name]["choices"]
        if allowed is not None and value not in allowed:
            raise LedgerError("invalid_request", f"{name}: one of {', '.join(allowed)}")
        if allowed is None and not value.lstrip("-").isdigit():
            raise LedgerError("invalid_request", f"{name}: a whole number")
        pairs.append(f"{name}={value}")
    if catalog and catalog not in BUILT_IN:
        raise LedgerError("invalid_request", f"catalog: one of {', '.join(sorted(BUILT_IN))}")
    if not catalog and not pairs:
        return None
    return Pricing(load_catalog(catalog) if catalog else None, parse_policy(pairs), start, end)


def as_fields(message: str) -> str:
    """Replay's refusals name the command line's `--policy` and the catalog's `policy.` block;
    the form's fields are the policy's own names."""
    return re.sub(r"\bpolicy\.", "", message.removeprefix("--policy: "))


def report_for(ledger: Ledger, workspace: str, pricing: Pricing) -> dict[str, Any]:
    return what_if(ledger, pricing, [workspace])["workspaces"][0]
