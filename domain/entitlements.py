"""Entitlements (R19): what a workspace may do now, for downstream services.

One pure function of the aggregate and its catalog, shared by the `entitlements` read model
and the `check-upload` / `check-feature` commands, so a check and the table never disagree.
A plan's feature `name:detail` (e.g. `submissions:1000/month`) grants `name` and shows the
detail as a limit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.catalog import Catalog, Plan
from domain.commands import SYSTEM
from domain.errors import LedgerError
from domain.subscription import Context, Subscription

WEBHOOKS = "webhooks"
LOCKED_STATUSES = ("suspended",)
"""Statuses in which only the features of the catalog's free plan stay (dunning's final action)."""


@dataclass(frozen=True)
class Entitlements:
    workspace: str
    plan: str | None
    status: str
    features: list[str]
    locked_features: list[str]
    limits: dict[str, Any]
    usage: dict[str, Any]
    storage_used_gb: Decimal
    storage_limit_gb: int
    storage_read_only: bool
    webhooks_firing: bool
    plan_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON document: amounts of storage as decimal strings."""
        return {
            "workspace": self.workspace, "plan": self.plan, "status": self.status,
            "features": self.features, "locked_features": self.locked_features,
            "limits": self.limits, "usage": self.usage,
            "storage_read_only": self.storage_read_only, "webhooks_firing": self.webhooks_firing,
        }


def feature_name(feature: str) -> str:
    return feature.split(":", 1)[0]


def _free_plan(catalog: Catalog) -> Plan | None:
    fallback = catalog.plan(catalog.policy.trial_fallback or "")
    return fallback if fallback and fallback.kind == "free" else next(
        (p for p in catalog.plans if p.kind == "free"), None)


def granted(sub: Subscription | None, catalog: Catalog) -> list[str]:
    """The plan's features while subscribed (R11: at once; R17: until the boundary; R19: they stop
    there); none without a subscription; the free plan's only while locked."""
    plan = sub.plan_of(catalog) if sub else None
    if sub is None or plan is None or not sub.subscribed:
        return []
    if sub.status in LOCKED_STATUSES:  # paid features locked (R19): the free plan's, at its limits
        free = _free_plan(catalog)
        return list(free.features) if free else []
    return list(plan.features)


def entitlements(sub: Subscription | None, catalog: Catalog, workspace: str | None = None) -> Entitlements:
    features = granted(sub, catalog)
    names = sorted({feature_name(f) for f in features})
    offered = sorted({feature_name(f) for p in catalog.plans for f in p.features})
    details = {feature_name(f): f.split(":", 1)[1] for f in features if ":" in f}
    plan = sub.plan_of(catalog) if sub and sub.subscribed else None
    tier = sub.tier_of(catalog) if sub and plan else None
    used = sub.storage_used if sub else Decimal(0)
    storage_limit = sub.storage_limit(catalog) if sub and plan else 0
    limits: dict[str, Any] = {
        "seats": sub.seat_limit(catalog) if sub and plan else None,
        "storage_gb": storage_limit,
        "teams": plan.teams if plan else None,
        "operations_per_month": tier.monthly_operations if tier else None,
        **details,
    }
    usage = {
        "members": sub.members if sub else 0,
        "storage_gb": format(used, "f"),
        "operations_remaining": sub.operations_remaining if sub else 0,
        "ai_credits": (sub.ai_granted + sub.ai_purchased) if sub else 0,
    }
    return Entitlements(
        workspace=sub.workspace_id if sub else (workspace or ""),
        plan=plan.id if plan else None,
        status=sub.status if sub else "none",
        features=names,
        locked_features=[f for f in offered if f not in names],
        limits=limits,
        usage=usage,
        storage_used_gb=used,
        storage_limit_gb=storage_limit,
        storage_read_only=used > storage_limit,
        webhooks_firing=WEBHOOKS in names,
        plan_name=plan.name if plan else None,
    )


def as_of(sub: Subscription | None, catalog: Catalog, at: datetime) -> Subscription | None:
    """The workspace at `at` on the forecast path: boundaries passed since its last event (a
    scheduled downgrade, a trial's end) apply, on a copy; nothing is recorded."""
    due = sub.next_due_at() if sub else None
    if sub is None or due is None or due > at:
        return sub
    future = copy.deepcopy(sub)
    future.process_due(Context(SYSTEM, "scheduler", at, catalog, "entitlements"), forecast=True)
    return future


def check_upload(ent: Entitlements, gb: Decimal) -> None:
    """R19: storage over the limit is read-only; an upload that would go over it is refused."""
    if ent.storage_read_only:
        raise LedgerError("storage_limit_exceeded",
                          f"storage is read-only: {ent.storage_used_gb} GB used exceeds the {ent.storage_limit_gb} GB "
                          "of the plan; delete files or add storage before uploading")
    if ent.storage_used_gb + gb > ent.storage_limit_gb:
        free = ent.storage_limit_gb - ent.storage_used_gb
        raise LedgerError("storage_limit_exceeded",
                          f"an upload of {gb} GB does not fit: {free} GB of {ent.storage_limit_gb} GB free")


def check_feature(ent: Entitlements, feature: str, catalog: Catalog | None = None) -> None:
    """R19: a feature outside the plan is plan-locked (R11: it unlocks at once on upgrade). With
    the catalog, a feature no plan of it includes is a misspelling, not a locked feature."""
    name = feature_name(feature)
    if name in ent.features:
        return
    if catalog is not None and name not in {feature_name(f) for plan in catalog.plans for f in plan.features}:
        raise LedgerError("invalid_request", f"no plan of catalog {catalog.id} includes a feature named {name!r}: "
                          "check its spelling")
    where = ent.plan_name or "a workspace without a subscription"
    if ent.status in LOCKED_STATUSES:
        where += f" while {ent.status}"
    raise LedgerError("plan_locked", f"{name} is not included in {where}")
