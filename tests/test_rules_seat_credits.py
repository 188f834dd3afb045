"""R21 through plan changes: a plan change credits unused time only for what the policy keeps
paid. Seats removed without a credit stay paid until the period ends (they can be added back for
free), so a plan change credits them only as far as they move into the new plan; an upgrade or a
downgrade never turns them into billing credit."""

from __future__ import annotations

from tests.support import D, VISA, catalog_variant, lines, only_invoice, workspace_on


def test_R21_seat_removal_is_not_credited_through_an_upgrade(book):
    """The audit's case: Team 40 seats (320.00), set-seats 2 (no credit), change-plan business:
    the upgrade credits the 2 seats it takes along (16.00) against 30.00, not all 40 (-320.00,
    which left 290.00 of billing credit). Back to Team credits the Business time just bought."""
    b = workspace_on(book, plan="team", seats=40)
    removed = b.do("ws", "set-seats", seats=2)
    assert removed.ok and removed.invoices() == []
    up = only_invoice(b.do("ws", "change-plan", plan="business"))
    assert lines(up) == [("plan_credit", D("-16.00")), ("plan_charge", D("30.00"))]
    assert (up.amount_due, b.sub("ws").billing_credit) == (D("14.00"), D("0"))
    down = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(down) == [("plan_credit", D("-30.00")), ("plan_charge", D("16.00"))]
    assert b.sub("ws").billing_credit == D("14.00")  # the 14.00 just paid, nothing of the 38 removed seats


def test_R21_seat_removal_is_not_credited_through_a_downgrade(book):
    """Business 40 -> 2 seats, then Team 2 at once (immediate_credit): 2 Business seats are
    credited (30.00), not 40 (600.00)."""
    b = workspace_on(book, plan="business", seats=40)
    assert b.do("ws", "set-seats", seats=2).ok
    down = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(down) == [("plan_credit", D("-30.00")), ("plan_charge", D("16.00"))]
    assert b.sub("ws").billing_credit == D("14.00")


def test_R21_seat_removal_is_not_credited_through_an_interval_change(book):
    """Team 40 -> 2 seats, then annual: the month's credit covers the 2 seats moving to the year."""
    b = workspace_on(book, plan="team", seats=40)
    assert b.do("ws", "set-seats", seats=2).ok
    year = only_invoice(b.do("ws", "change-plan", plan="team", interval="year"))
    assert lines(year) == [("plan_credit", D("-16.00")), ("plan_charge", D("160.00"))]


def test_R21_removed_seats_taken_into_the_new_plan_keep_their_value(book):
    """Team 40 -> 2 seats, then Business for 30 seats: 30 of the 40 seats paid for April move
    along, so they are credited (240.00) against Business 30 (450.00): no seat is paid twice."""
    b = workspace_on(book, plan="team", seats=40)
    assert b.do("ws", "set-seats", seats=2).ok
    up = only_invoice(b.do("ws", "change-plan", plan="business", seats=30))
    assert lines(up) == [("plan_credit", D("-240.00")), ("plan_charge", D("450.00"))]


def test_R21_seats_credited_on_removal_are_not_credited_again_by_a_plan_change(book, tmp_path):
    """With `seat_removal_credit = true` the removal itself is credited; the upgrade then credits
    only the seats still held."""
    b = book(catalog_variant(tmp_path, "workspace", "workspace-seat-credit", seat_removal_credit="true"))
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "subscribe", plan="team", seats=40).ok
    assert lines(only_invoice(b.do("ws", "set-seats", seats=2))) == [("seat_credit", D("-304.00"))]
    up = only_invoice(b.do("ws", "change-plan", plan="business"))
    assert lines(up) == [("plan_credit", D("-16.00")), ("plan_charge", D("30.00"))]
    assert (up.subtotal, up.credit_applied, up.amount_due) == (D("14.00"), D("14.00"), D("0.00"))
    assert b.sub("ws").billing_credit == D("304.00") - D("14.00")


# ------------------------------------------------------------------ R5/R17/R21 a scheduled downgrade's seats


def period_end_workspace(book, tmp_path, plan="business", seats=10):
    """A per-seat catalog whose downgrades wait for the period end (R17)."""
    b = book(catalog_variant(tmp_path, "workspace", "workspace-period-end", downgrade_timing='"period_end"'))
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "subscribe", plan=plan, seats=seats).ok
    return b


def test_R5_R17_R21_scheduled_downgrade_starts_with_the_seats_held_at_the_boundary(book, tmp_path):
    """The audit's case: Business 10 seats, a downgrade to Team 10 seats scheduled; members grow
    to 18 and set-seats 20 charges for 20. At the boundary Team starts with those 20 seats (before
    the fix: 10, and the 10 seats just bought vanished)."""
    b = period_end_workspace(book, tmp_path)
    assert b.do("ws", "change-plan", plan="team", seats=10).ok
    assert b.sub("ws").scheduled["seats"] == 10
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "set-members", members=18).ok
    bought = b.do("ws", "set-seats", seats=20)
    assert lines(only_invoice(bought)) == [("seat_charge", D("100.00"))]  # 15.00 x 10 x 20/30
    (changed,) = [e for e in bought.events if type(e).__name__ == "SeatsChanged"]
    assert changed.scheduled_seats == 20
    assert b.sub("ws").scheduled["seats"] == 20
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.seats, sub.members) == ("team", 20, 18)
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert lines(renewal) == [("plan_charge", D("160.00"))]


def test_R17_R24_members_grown_after_scheduling_show_the_over_seat_warning_at_the_boundary(book, tmp_path):
    """Without seats bought, the scheduled 10 seats stand: the 18 members raise the R24 warning."""
    b = period_end_workspace(book, tmp_path)
    assert b.do("ws", "change-plan", plan="team", seats=10).ok
    assert b.do("ws", "set-members", members=18).ok
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.seats) == ("team", 10)
    assert sub.members > sub.seat_limit(b.ledger.catalog_for(sub))  # over_seat: R24


def test_R17_R21_fewer_seats_chosen_after_scheduling_are_the_next_period_quantity(book, tmp_path):
    b = period_end_workspace(book, tmp_path, seats=12)
    assert b.do("ws", "change-plan", plan="team", seats=10).ok
    assert b.do("ws", "set-seats", seats=6).ok
    b.at("2026-05-01T00:00:00")
    assert (b.sub("ws").plan, b.sub("ws").seats) == ("team", 6)


def test_R17_R24_forms_scheduled_downgrade_to_a_flat_plan_warns_at_the_boundary(book):
    """Forms (flat plans): Team -> Pro (3 seats) scheduled with 3 members; 5 members at the
    boundary: Pro applies with the R24 over-seat warning, nothing is bought."""
    from tests.support import forms_on, state

    b = forms_on(book, plan="team")
    assert b.do("ws", "set-members", members=3).ok
    assert b.do("ws", "change-plan", plan="pro").ok
    assert b.do("ws", "set-members", members=5).ok
    b.at("2026-05-01T00:00:00")
    s = state(b, "ws")
    assert (s["plan"], s["seats"], s["members"], s["over_seat"]) == ("pro", 3, 5, True)
