"""The explanation of an invoice (replay/explain.py) as text for a terminal and as markdown
for a support reply. JSON is the document itself."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def text(doc: dict[str, Any]) -> str:
    cmd, cat, void = doc["command"], doc["catalog"], doc["void"]
    out = [f"Invoice {doc['invoice_id']} ({doc['purpose']}) for workspace {doc['workspace']}, "
           + (f"VOID, requested {doc['issued_at']}" if void else f"issued {doc['issued_at']}")
           + f", in {doc['currency']}",
           *([void["reason"]] if void else []),
           f"Recorded by {cmd['name']}, command {cmd['id'] or '(recorded before command ids)'}, by "
           f"{cmd['actor']['id']} ({cmd['actor']['role']}) via {cmd['channel']} at {cmd['at']}"
           + (f", reason: {cmd['reason']}" if cmd["reason"] else ""),
           f"Catalog {cat['version']}, content {cat['content_hash']}"
           + ("" if cat["hash_recorded"] else " (hash of the published catalog: the facts predate recorded hashes)")]
    if cat["prices"]:
        out.append("  prices: " + ", ".join(f"{p['item']} {p['price']}" for p in cat["prices"]))
    out.append("")
    for line in doc["lines"]:
        out.append(f"Line {line['n']}  {line['kind']}  {line['amount']}  {line['description']}")
        out.append(f"  {line['derivation']}")
        out.append(f"  from events {', '.join(line['events'])}")
    out.append("")
    out += doc["totals"]["derivation"]
    if doc["facts"]:
        out += ["", "Also recorded by this command:"] + [f"  - {f}" for f in doc["facts"]]
    out += ["", f"Collection: {doc['collection']['status']}"] + [f"  - {a}" for a in doc["collection"]["attempts"]]
    out += ["", "Events of the command:"]
    for e in doc["events"]:
        out.append(f"  {e['id']:<14} {e['type']:<28} {e['at']}  {e['actor']} ({e['role']}) via {e['channel']}: "
                   f"{e['summary']}")
    return "\n".join(out)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict[str, Any]) -> str:
    """A block support pastes into a reply: the lines with their arithmetic, the totals, and
    where it all comes from in small print."""
    t, cmd, cat, void = doc["totals"], doc["command"], doc["catalog"], doc["void"]
    out = [f"**Invoice `{doc['invoice_id']}`**: {doc['purpose']} for workspace `{doc['workspace']}`, "
           + (f"**void**, requested {doc['issued_at']}" if void else f"issued {doc['issued_at']}")
           + f" ({doc['currency']})", "",
           *([f"_{void['reason'][:1].upper()}{void['reason'][1:]}._", ""] if void else []),
           "| # | Line | Amount | How it was calculated | Rules |", "|--:|------|-------:|------|------|"]
    for line in doc["lines"]:
        out.append(f"| {line['n']} | {_cell(line['description'])} | {line['amount']} | {_cell(line['formula'])} | "
                   f"{', '.join(line['rules'])} |")
    out.append(f"| | **Subtotal** | **{t['subtotal']}** | {' + '.join(line['amount'] for line in doc['lines'])} | |")
    out.append(f"| | Credit applied | {t['credit_applied']} | never more than the bill | R27 |")
    out.append(f"| | Would have been due | {t['amount_due']} | not owed: void | R12 |" if void
               else f"| | **Due** | **{t['amount_due']}** | | |")
    if Decimal(t["credit_issued"]):
        out.append(f"| | Billing credit issued | {t['credit_issued']} | kept as account balance, never cash | R10, R27 |")
    if Decimal(t["credit_forfeited"]):
        out.append(f"| | Credit forfeited | {t['credit_forfeited']} | the catalog drops a credit beyond its bill | R27 |")
    if doc["facts"]:
        out += [""] + [f"- {_cell(f)}" for f in doc["facts"]]
    out += ["", f"**Collection: {doc['collection']['status']}**"] + [f"- {_cell(a)}" for a in doc["collection"]["attempts"]]
    first, last = doc["events"][0]["id"], doc["events"][-1]["id"]
    out += ["", f"<sub>{cmd['name']} by {cmd['actor']['id']} ({cmd['actor']['role']}) via {cmd['channel']} at "
                f"{cmd['at']}; command `{cmd['id'] or 'recorded before command ids'}`; "
                f"catalog {cat['version']} (`{cat['content_hash'][:19]}...`); "
                f"events {first} to {last}</sub>"]
    return "\n".join(out)
