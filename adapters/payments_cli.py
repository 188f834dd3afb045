"""`subledger payments`: pending charges after a crash, 3-D Secure, and the test gateway.

Mounted by adapters/cli.py. `resolve` asks the gateway, by each pending charge's key, what
happened and records it (docs/payments.md); it is what to run after a process died between
a charge and its record, and what every later command and `advance` also do on their own.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from adapters.cli_output import OUTPUT, JsonFlag, catch_up_after, fail, passed_over, use_json
from domain.errors import AdvanceIncomplete, each_workspace, failure

payments_app = typer.Typer(help="Pending charges: list, resolve after a crash, confirm or abandon 3-D Secure.",
                           no_args_is_help=True)
Workspace = Annotated[str | None, typer.Argument(help="Workspace id (default: every workspace).", show_default=False)]
Invoice = Annotated[str | None, typer.Option(help="Only this invoice's pending charge.")]


def _open_ledger() -> Any:
    from adapters.cli import open_ledger  # the shared --db/--catalog options live there
    return open_ledger()


@payments_app.command("pending")
def pending(workspace: Workspace = None, json_output: JsonFlag = False) -> None:
    """Charges decided but not yet settled, and what each waits for."""
    use_json(json_output)
    with _open_ledger() as ledger:
        if workspace:
            sub = ledger.get(workspace)
            if sub is None:
                fail("not_found", f"{workspace}: no such workspace")
            found, failed = {workspace: sub}, {}
        else:  # a workspace whose history fails to load is named at the end, after the others' charges
            found, failed = each_workspace(ledger.workspaces(), ledger.get)
    rows = [{"workspace": ws, "invoice_id": charge["invoice_id"], "amount": str(charge["amount"]),
             "currency": charge["currency"], "purpose": charge["purpose"], "charge_key": charge["charge_key"],
             "waiting_for": "customer (3-D Secure)" if charge["action_required"] else "provider"}
            for ws, sub in found.items() if sub is not None for charge in sub.pending_charges.values()]
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": not failed, "pending": rows,
                               "failed": {ws: failure(e) for ws, e in failed.items()}}))
    else:
        if not rows and not failed:
            typer.echo("no pending charges")
        for r in rows:
            typer.echo(f"{r['workspace']}: {r['invoice_id']} {r['amount']} {r['currency']} ({r['purpose']}), "
                       f"key {r['charge_key']}, waiting for the {r['waiting_for']}")
    if code := passed_over(failed, "not listed"):
        raise typer.Exit(code)


@payments_app.command("resolve")
def resolve(workspace: Workspace = None, json_output: JsonFlag = False) -> None:
    """Ask the gateway for every pending charge's outcome and record it (after a crash)."""
    use_json(json_output)
    with _open_ledger() as ledger:
        if workspace is not None and ledger.get(workspace) is None:
            fail("not_found", f"{workspace}: no such workspace")
        failed: dict[str, BaseException] = {}
        try:
            done = ledger.resolve_payments(workspace)
        except AdvanceIncomplete as e:  # every other workspace's charges were resolved
            done, failed = e.done, e.failed
        if done:
            catch_up_after(ledger)
    _report(done, failed)
    if code := passed_over(failed, "not resolved"):
        raise typer.Exit(code)


@payments_app.command("confirm")
def confirm(workspace: Annotated[str, typer.Argument(help="Workspace id.")], invoice: Invoice = None,
            json_output: JsonFlag = False) -> None:
    """Test gateway only: the customer completes 3-D Secure; the change then applies."""
    from adapters.payments import TestPaymentGateway
    use_json(json_output)
    with _open_ledger() as ledger:
        if not isinstance(ledger.payments, TestPaymentGateway):
            fail("invalid_request", "confirm simulates the customer: only with SUBLEDGER_PAYMENTS=test")
        ledger.check_clock()  # and the gateway: a Stripe ledger's charge is never confirmed at the test one
        sub = ledger.get(workspace)
        if sub is None:
            fail("not_found", f"{workspace}: no such workspace")
        waiting = [c for c in sub.pending_charges.values()
                   if c["action_required"] and invoice in (None, c["invoice_id"])]
        if not waiting:
            fail("no_pending_payment", f"no payment awaiting authentication on {workspace}")
        for charge in waiting:
            ledger.payments.confirm(charge["charge_key"])
        done = ledger.resolve_payments(workspace)
        catch_up_after(ledger)
    _report(done)


@payments_app.command("abandon")
def abandon(workspace: Annotated[str, typer.Argument(help="Workspace id.")], invoice: Invoice = None,
            json_output: JsonFlag = False) -> None:
    """Give up a charge awaiting the customer: cancelled at the gateway, the change dropped (R12)."""
    use_json(json_output)
    with _open_ledger() as ledger:
        events = ledger.abandon_payment(workspace, invoice)
        catch_up_after(ledger)
    _report({workspace: events})


def _report(done: dict[str, list[Any]], failed: dict[str, BaseException] | None = None) -> None:
    from projections.views import event_types
    if OUTPUT.json:
        out: dict[str, Any] = {"ok": not failed, "recorded": {ws: event_types(ev) for ws, ev in done.items()}}
        if failed is not None:
            out["failed"] = {ws: failure(e) for ws, e in failed.items()}
        typer.echo(json.dumps(out))
        return
    if not done and not failed:
        typer.echo("nothing to record")
    for ws, events in done.items():
        typer.echo(f"{ws}: {', '.join(event_types(events))}")
