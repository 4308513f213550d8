"""Signs of life: one step callback that every training loop calls, and the bars fed by it.

Every loop that can take more than a few seconds (pretraining, each method's updates) calls
``on_step(done, total, loss)`` after each step: ``done`` steps of ``total`` finished, ``loss`` the
step's loss (a float or a 0-d tensor, read only when shown, so a GPU is not synchronised every step;
``None`` when there is none). :class:`StepBar` turns those calls into a tqdm bar with the step count,
the loss and an ETA; :func:`chain` lets a grid feed its own bar from the same calls.

Bars are drawn only when asked for *and* stderr is a terminal (``--quiet`` or a redirected stderr
keep the output clean); ``REM_PROGRESS=1`` forces them on (for logs), ``REM_PROGRESS=0`` off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

StepFn = Callable[[int, int, object], None]


def bars_enabled(requested: bool) -> bool:
    """Whether to draw bars: requested, and stderr is a terminal (``REM_PROGRESS`` overrides the check)."""
    if not requested:
        return False
    force = os.environ.get("REM_PROGRESS", "").strip()
    if force in ("0", "1"):
        return force == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def say(message: str) -> None:
    """One line to stderr that does not break a live bar (tqdm.write when tqdm is there)."""
    try:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(message, file=sys.stderr)


class StepBar:
    """A tqdm bar fed by ``on_step(done, total, loss)`` calls; a no-op when bars are off.

    ``position`` nests it under an outer bar (the grid's is at 0); it disappears when closed.
    """

    def __init__(self, desc: str, enabled: bool = True, position: int = 0, unit: str = "step") -> None:
        self.bar = None
        self.desc, self.position, self.unit = desc, position, unit
        self.enabled = enabled
        self.done = 0

    def __call__(self, done: int, total: int, loss=None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc=self.desc, position=self.position, leave=False, dynamic_ncols=True, unit=self.unit
            )
        if total != self.bar.total:
            self.bar.total = total
        if done > self.done:
            self.bar.update(done - self.done)
        self.done = done
        if loss is not None and (done % 10 == 0 or done == total):
            value = loss.detach() if hasattr(loss, "detach") else loss
            self.bar.set_postfix(loss=f"{float(value):.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.done = 0

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chain(*fns: StepFn | None) -> StepFn | None:
    """One step callback calling each of ``fns`` (``None`` entries skipped); ``None`` if there are none."""
    live = [f for f in fns if f is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def call(done: int, total: int, loss=None) -> None:
        for f in live:
            f(done, total, loss)

    return call
