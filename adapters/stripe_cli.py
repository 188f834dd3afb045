"""`subledger stripe reconcile`: the ledger's payments against Stripe's PaymentIntents.

Mounted by adapters/cli.py; needs SUBLEDGER_PAYMENTS=stripe. Every difference is listed and
any makes the exit code 1 (adapters/cli_output.py); adapters/stripe_reconcile.py says what
counts as one.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from adapters.cli_output import OUTPUT, REFUSED, JsonFlag, fail, use_json
from domain.text import plural

stripe_app = typer.Typer(help="Stripe: reconcile the ledger's payments with Stripe's.", no_args_is_help=True)


@stripe_app.command("reconcile")
def reconcile_command(workspace: Annotated[str | None, typer.Option(help="Only this workspace.")] = None,
                      json_output: JsonFlag = False) -> None:
    """List every difference between the ledger's payments and Stripe's PaymentIntents; exit 1 on any."""
    use_json(json_output)
    from adapters.cli import open_ledger
    from adapters.stripe_gateway import StripeGateway  # stripe-python loads only when asked for
    from adapters.stripe_reconcile import reconcile
    with open_ledger() as ledger:
        if not isinstance(ledger.payments, StripeGateway):
            fail("invalid_request", "stripe reconcile needs SUBLEDGER_PAYMENTS=stripe (and STRIPE_API_KEY)")
        ledger.check_payments()  # a ledger kept on the test gateway has nothing at Stripe to compare
        if workspace is not None and ledger.get(workspace) is None:
            fail("not_found", f"{workspace}: no such workspace")
        report = reconcile(ledger, ledger.payments, workspace)
    if OUTPUT.json:
        typer.echo(json.dumps(report.as_json()))
    else:
        for d in report.differences:
            typer.echo(f"{d.workspace} {d.invoice_id}: {d.kind}: {d.detail}" + (f" [{d.payment_intent}]"
                                                                                if d.payment_intent else ""))
        if report.orphans:
            typer.echo(f"{len(report.orphans)} unconfirmed PaymentIntent(s) never recorded (no money moved): "
                       + ", ".join(report.orphans))
        typer.echo(f"{plural(len(report.differences), 'difference', none='no differences')}: "
                   f"{plural(report.payments, 'payment')} recorded, {plural(report.payment_intents, 'PaymentIntent')} "
                   "at Stripe")
    if report.differences:
        raise typer.Exit(REFUSED)
