"""One unit inside rem: every metric, record field and history value is a **share in [0, 1]**
(``uxh`` = healed × utility is one too). Percent is only for people to read: the report, command
output and the docs convert with :func:`percent` where they show a value.
"""

from __future__ import annotations

import math

#: The metrics of :func:`rem.metrics.evaluate` that are shares (``params`` is a count).
SHARE_METRICS = ("uxh", "healed", "utility", "healed_test", "forget_acc", "asr", "test_acc", "corrupt_acc")


def percent(v, digits: int = 9):
    """A share as percent, for display: ``0.5 → 50.0``; None, NaN and non-numbers unchanged.

    Rounded to ``digits`` decimals, so the float noise of the ×100 (``0.00125 * 100`` is
    ``0.12500000000000003``) never decides a digit the display rounds to."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return v
    return round(100.0 * v, digits)


def percent_metrics(metrics: dict, digits: int = 9) -> dict:
    """``metrics`` with its shares (:data:`SHARE_METRICS`) as percent, every other entry as it is."""
    return {k: percent(v, digits) if k in SHARE_METRICS else v for k, v in metrics.items()}
