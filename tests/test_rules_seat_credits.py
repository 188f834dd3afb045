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
