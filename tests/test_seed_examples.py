"""The worked examples of the seeds, exactly."""

from decimal import Decimal



def lines(result):
    (invoice,) = result.invoices()
    return [(line["kind"], line["amount"]) for line in invoice.lines], invoice.amount_due


def test_R13_pro_to_team_ten_days_into_thirty_day_cycle(book):
    b = book("forms", "2026-04-01T00:00:00")
    b.do("ws", "add-payment-method", payment_method="pm_card_visa")
    assert b.do("ws", "subscribe", plan="pro", interval="month").ok
    b.at("2026-04-11T00:00:00")
    got, due = lines(b.do("ws", "change-plan", plan="team"))
    assert got == [("plan_credit", Decimal("-12.67")), ("plan_charge", Decimal("32.67"))]
    assert due == Decimal("20.00")
    assert b.sub("ws").plan == "team"
