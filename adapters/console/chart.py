"""A step chart as inline SVG geometry: a balance holds its value until the next event changes
it, so the line moves in steps. Pure arithmetic; the template draws it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

WIDTH, HEIGHT, PAD_X, PAD_Y = 640, 180, 56, 22


def step_chart(points: list[tuple[datetime, Decimal | int]], label: str, unit: str) -> dict[str, Any] | None:
    """The path, axis ticks and a text summary of one series; None when there is nothing."""
    if not points:
        return None
    times = [p[0].timestamp() for p in points]
    values = [Decimal(p[1]) for p in points]
    t0, t1 = times[0], times[-1]
    low, high = min(values + [Decimal(0)]), max(values + [Decimal(0)])
    span_t = (t1 - t0) or 1.0
    span_v = (high - low) or Decimal(1)

    def x(t: float) -> float:
        return round(PAD_X + (t - t0) / span_t * (WIDTH - 2 * PAD_X), 1)

    def y(v: Decimal) -> float:
        return round(HEIGHT - PAD_Y - float((v - low) / span_v) * (HEIGHT - 2 * PAD_Y), 1)

    path = f"M{x(times[0])},{y(values[0])}"
    for t, v in zip(times[1:], values[1:]):
        path += f" H{x(t)} V{y(v)}"
    path += f" H{WIDTH - PAD_X}"
    dots = [{"x": x(t), "y": y(v), "title": f"{p[0]:%Y-%m-%d %H:%M} UTC: {v} {unit}"}
            for t, v, p in zip(times, values, points)]
    return {"label": label, "unit": unit, "width": WIDTH, "height": HEIGHT, "path": path, "dots": dots,
            "top": {"y": y(high), "text": f"{high}"}, "bottom": {"y": y(low), "text": f"{low}"},
            "left": f"{points[0][0]:%Y-%m-%d}", "right": f"{points[-1][0]:%Y-%m-%d}",
            "x0": PAD_X, "x1": WIDTH - PAD_X, "y_base": HEIGHT - PAD_Y,
            "summary": f"{label}: from {values[0]} to {values[-1]} {unit} over {len(points)} changes, "
                       f"lowest {min(values)}, highest {max(values)}"}
