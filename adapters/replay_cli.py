"""`subledger replay`: explain an invoice, a workspace as of an instant, what-if repricing,
invoice verification, and read-model rebuilds (docs/replay.md). Everything reads the events;
only `rebuild` writes, and only read-model tables.

Mounted by adapters/cli.py. Exit codes: 0 done, 1 a difference found (verify, rebuild
--verify), a refusal (rebuild on a broken chain) or nothing found, 2 invalid input.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from adapters.cli_output import OUTPUT, JsonFlag, fail, use_json
from adapters.instants import given_instant
from domain.errors import LedgerError
from domain.text import plural

replay_app = typer.Typer(help="Replay the events: explain a charge, as-of, what-if, verify invoices, "
                         "rebuild read models (docs/replay.md).", no_args_is_help=True)
Format = Annotated[str, typer.Option("--format", help="text or json.")]
Instant = Annotated[str | None, typer.Option(help="ISO-8601 instant (UTC unless an offset is given).",
                                             show_default=False)]


def _cli() -> Any:
    from adapters import cli  # the shared options, ledger opening and failure exits live there
    return cli


def _format(fmt: str, allowed: tuple[str, ...], json_output: bool) -> str:
    """The output format: `--json` (before or after the sub-command) is `--format json`."""
    use_json(json_output)
    if OUTPUT.json:
        return "json"
    if fmt not in allowed:
        _fail("invalid_request", f"--format: one of {', '.join(allowed)}")
    return fmt


def _fail(code: str, message: str) -> NoReturn:
    fail(code, message)


def _echo_json(data: Any) -> None:
    from projections.store import dumps
    typer.echo(json.dumps(json.loads(dumps(data)), indent=2))


@replay_app.command("explain")
def explain(invoice_id: Annotated[str, typer.Argument(help="Invoice id, e.g. in_acme_0002.", show_default=False)],
            line: Annotated[int | None, typer.Option(help="Only this line (1-based).")] = None,
            fmt: Annotated[str, typer.Option("--format", help="text, json or md (a support reply).")] = "text",
            json_output: JsonFlag = False) -> None:
    """Why an invoice says what it says: each line's recorded arithmetic, the events and command
    that produced it, the catalog version, hash and prices, and the rule ids."""
    from replay import explain_format
    from replay.explain import explain as explain_invoice
    fmt = _format(fmt, ("text", "json", "md"), json_output)
    with _cli().open_ledger() as ledger:
        try:
            doc = explain_invoice(ledger, invoice_id, line)
        except LedgerError as e:
            _fail(e.code, e.message)
    if fmt == "json":
        _echo_json(doc)
    else:
        typer.echo(explain_format.markdown(doc) if fmt == "md" else explain_format.text(doc))


@replay_app.command("as-of")
def as_of(workspace: Annotated[str, typer.Argument(help="Workspace id.", show_default=False)],
          at: Instant = None,
          version: Annotated[int | None, typer.Option(help="The workspace after this many events.")] = None,
          recorded_before: Instant = None, fmt: Format = "text", json_output: JsonFlag = False) -> None:
    """The workspace's full state at --at or --version, from its events only; --recorded-before
    keeps only what the ledger had recorded by then."""
    from replay.as_of import document, as_of as find_as_of
    from adapters import render
    fmt = _format(fmt, ("text", "json"), json_output)
    if (at is None) == (version is None):
        _fail("invalid_request", "give one of --at or --version")
    with _cli().open_ledger() as ledger:
        try:
            found = find_as_of(ledger, workspace, at=given_instant(at, "--at"), version=version,
                               recorded_before=given_instant(recorded_before, "--recorded-before"))
            doc = document(ledger, found)
        except LedgerError as e:
            _fail(e.code, e.message)
    if fmt == "json":
        _echo_json(doc)
        return
    con = render.console()
    last = doc["last_event"]
    con.print(f"{workspace} at version {doc['version']}" + (f" (last event {last['id']} {last['type']} at {last['at']})"
                                                            if last else ": nothing recorded by then"), markup=False)
    if last:
        con.print(f"  {render.state_line(doc['state'])}", markup=False)
        for inv in doc["open_invoices"]:
            con.print(f"  open invoice {inv['invoice_id']}: {inv['amount_due']} due", markup=False)
        for charge in doc["pending_charges"]:
            con.print(f"  pending charge {charge['invoice_id']}: {charge['amount']} ({charge['waiting_for']})",
                      markup=False)
        if doc["upcoming_renewal"]:
            up = doc["upcoming_renewal"]
            final = up["purpose"] == "final"
            con.print(f"  {'final invoice, as billing ends,' if final else 'renewal'} forecast then: {up['amount_due']} "
                      f"{up['currency']} on {up['due_at']}", markup=False)
            for text in render.invoice_lines(up, due="due at the period end" if final else "due at renewal")[1:]:
                con.print(text, markup=False)


@replay_app.command("what-if")
def what_if(workspace: Annotated[str | None, typer.Argument(help="Workspace id (or --all).", show_default=False)]
            = None,
            all_: Annotated[bool, typer.Option("--all", help="Every workspace billed on the catalog's id.")] = False,
            catalog: Annotated[str | None, typer.Option("--catalog", help="The other catalog: a built-in name or a TOML "
                                                        "file (default: the one each event recorded).")] = None,
            policy: Annotated[list[str] | None, typer.Option("--policy", help="Policy override key=value (repeat).")]
            = None,
            start: Annotated[str | None, typer.Option("--from", help="Re-price from this instant on.")] = None,
            end: Annotated[str | None, typer.Option("--to", help="Leave out what was recorded from this instant on.")]
            = None,
            fmt: Annotated[str, typer.Option("--format", help="text, json or csv.")] = "text",
            json_output: JsonFlag = False,
            csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write the invoice CSV here.")] = None,
            ) -> None:
    """Re-price the recorded history under another catalog or policy, writing nothing: what would
    differ, invoice by invoice, per workspace and in total."""
    from domain.catalog import CatalogError, load_catalog
    from replay.what_if import Pricing, parse_policy, what_if as reprice, write_csv
    fmt = _format(fmt, ("text", "json", "csv"), json_output)
    if (workspace is None) == (not all_):
        _fail("invalid_request", "give a WORKSPACE or --all")
    if catalog is None and not policy:
        _fail("invalid_request", "give --catalog and/or --policy: the pricing to compare with")
    try:
        other = load_catalog(catalog) if catalog else None
        pricing = Pricing(other, parse_policy(policy or []), given_instant(start, "--from"), given_instant(end, "--to"))
    except CatalogError as e:
        _fail("invalid_request", f"--catalog: {e}")
    except LedgerError as e:
        _fail(e.code, e.message)
    with _cli().open_ledger() as ledger:
        try:
            report = reprice(ledger, pricing, [workspace] if workspace else None)
        except LedgerError as e:
            _fail(e.code, e.message)
    if csv_file is not None:
        with csv_file.open("w", newline="") as out:
            write_csv(out, report)
    if fmt == "json":
        _echo_json(report)
    elif fmt == "csv":
        write_csv(sys.stdout, report)
    else:
        typer.echo("\n".join(what_if_text(report)))


def _v(amount: str | None) -> str:
    return "none" if amount is None else amount


WORDS = {"credit_issued": "billing credit issued", "credit_forfeited": "credit forfeited"}


def what_if_text(report: dict[str, Any]) -> list[str]:
    out = [f"what-if: catalog {report['catalog']}" + (f", policy {report['policy']}" if report["policy"] else "")
           + (f", from {report['from']}" if report["from"] else "") + (f", to {report['to']}" if report["to"] else "")]
    for ws in report["workspaces"]:
        s = ws["summary"]
        due = s["totals"]["amount_due"]
        out.append(f"{ws['workspace']}: {s['invoices']} invoices, {s['differences']} would differ "
                   f"({s['changed']} changed, {s['new']} new, {s['gone']} gone); due {due['recorded']} -> "
                   f"{due['what_if']} ({due['delta']})")
        for i in (i for i in ws["invoices"] if i["status"] != "same"):
            a = i["amount_due"]
            name = i["invoice_id"] or f"(new as {i['what_if_invoice_id']})"
            out.append(f"  {name} {i['purpose']} {i['issued_at']}: {i['status']}, due {_v(a['recorded'])} -> "
                       f"{_v(a['what_if'])} ({a['delta']})")
            for line in i["lines"]:
                out.append(f"    line {line['n']} {line['kind']}: {_v(line['recorded'])} -> {_v(line['what_if'])}")
                out += [f"      {side}: {line[f'{side}_formula']}" for side in ("recorded", "what_if")
                        if line[f"{side}_formula"]]
            for name in ("credit_issued", "credit_forfeited"):
                credit = i[name]
                if Decimal(credit["delta"]):
                    out.append(f"    {WORDS[name]} {_v(credit['recorded'])} -> {_v(credit['what_if'])}")
        out += [f"  refused now: {', '.join(r['command']) or 'a scheduled step'} at {r['at']}: {r['message']} "
                f"[{r['code']}]" for r in ws["refused"]]
    out += [f"skipped {s['workspace']}: {s['reason']}" for s in report["skipped"]]
    total = report["summary"]["totals"]["amount_due"]
    out.append(f"total: {report['summary']['differences']} of {report['summary']['invoices']} invoices would differ; "
               f"due {total['recorded']} -> {total['what_if']} ({total['delta']})")
    return out


@replay_app.command("verify")
def verify(workspace: Annotated[str | None, typer.Option(help="Only this workspace.")] = None,
           fmt: Format = "text", json_output: JsonFlag = False) -> None:
    """Recompute every issued invoice from its events with the engine as it is now; exit 1,
    naming each invoice, on any difference."""
    from replay.invoice_verify import verify_invoices
    fmt = _format(fmt, ("text", "json"), json_output)
    with _cli().open_ledger() as ledger:
        try:
            report = verify_invoices(ledger, workspace)
        except LedgerError as e:
            _fail(e.code, e.message)
    if fmt == "json":
        _echo_json(report)
    elif not report["differences"]:  # a workspace not verified is named below
        verified = report["workspaces"] - len(report["unverified"])
        typer.echo(f"verify: {plural(report['invoices'], 'invoice')} of {plural(verified, 'workspace')} "
                   "recomputed, all as recorded")
    for found in report["differences"]:
        first, last = found["decided_by_versions"]
        lines = [f"{found['invoice_id']} ({found['workspace']}, versions {first}-{last}) differs:"]
        lines += [f"  {p['field']}: recorded {p['recorded']}, recomputed {p['recomputed']}" for p in found["problems"]]
        typer.echo("\n".join(lines), err=fmt == "json")
    for ws, error in report["unverified"].items():
        typer.echo(f"{ws}: not verified: {error['message']} [{error['code']}]", err=True)
    if not report["ok"]:
        raise typer.Exit(1)


@replay_app.command("rebuild")
def rebuild(projection: Annotated[list[str] | None, typer.Option("--projection", help="Read model(s) to rebuild.")]
            = None,
            verify: Annotated[bool, typer.Option("--verify", help="Compare rebuilt and live tables row by row.")]
            = False,
            force: Annotated[bool, typer.Option("--force", help="Rebuild even if the event chain is broken.")] = False,
            fmt: Format = "text", json_output: JsonFlag = False) -> None:
    """Replay the events into fresh read-model tables and swap them in, with a progress bar on a
    terminal; --verify reports every difference from the live tables (exit 1)."""
    from adapters.app import read_models
    from adapters.project_cli import waiting_for_another
    from adapters.schema import schema_lock
    from replay import rebuild as rebuilding
    fmt = _format(fmt, ("text", "json"), json_output)
    with _cli().open_ledger() as ledger:
        try:
            projections = read_models(ledger)  # set up first: that takes the same lock when it must
        except LedgerError as e:
            _fail(e.code, e.message)
        with projections, schema_lock(ledger.env, on_wait=waiting_for_another):
            projections.follow_registry()  # another rebuild may have swapped while this one waited
            unknown = set(projection or ()) - set(projections.models)
            if unknown:
                _fail("invalid_request", f"--projection: unknown read model(s) {', '.join(sorted(unknown))}; known: "
                      f"{', '.join(sorted(projections.models))}")
            chosen = list(projection) if projection else None
            with progress_bar(projections.head(), chosen or list(projections.models)) as progress:
                try:
                    report = rebuilding.rebuild(projections, chosen, verify=verify, force=force, progress=progress)
                except LedgerError as e:
                    _fail(e.code, e.message)
    if fmt == "json":
        _echo_json(report)
    else:
        typer.echo("\n".join(rebuilding.summary(report)))
    if not report["ok"]:
        raise typer.Exit(1)


class progress_bar:  # noqa: N801 (a context manager read as a phrase)
    """A rich progress bar per read model (events/s, ETA) when stderr is a terminal; else nothing."""

    def __init__(self, head: int, families: list[str]) -> None:
        self.head, self.families = head, families
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty() or not self.head:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        speed = TextColumn("{task.fields[rate]} events/s")
        self.bar = Progress(TextColumn("{task.description:<17}"), BarColumn(), MofNCompleteColumn(), speed,
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.tasks = {f: self.bar.add_task(f, total=self.head, rate="-", start=False) for f in self.families}
        self.bar.__enter__()

        def advance(family: str, position: int) -> None:
            task = self.tasks[family]
            self.bar.start_task(task)
            self.bar.update(task, completed=min(position, self.head))
            rate = self.bar.tasks[task].speed
            self.bar.update(task, rate=f"{rate:,.0f}" if rate else "-")
        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
