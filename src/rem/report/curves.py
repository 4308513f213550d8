"""The paper's Figure 5 at our scale: θ_o1 forgets while θ_o2 takes the corruption over, round by round.

For each task, one panel from a REM cell's history (the ``track_*`` figures REM records per round, for
analysis only): the dropped model's (θ_o1's) accuracy on D_f against the corrupted labels, the masked
model's accuracy on D_f, and the dropped model's healed and utility, drawn in percent. One cell per task:
the method's cell at the discovery rate closest to ``rate`` (first seed), so the curve is a single run,
not a mean.
"""

from __future__ import annotations

import io

from rem.data.tasks import KINDS
from rem.run.spec import CURVE_RATE
from rem.units import percent

SERIES = (
    ("track_acc_drop_f", "θ_o1 (dropped): acc on D_f, corrupted labels", "tab:red", "-"),
    ("track_acc_mask_f", "masked (θ_o1 + θ_o2): acc on D_f, corrupted labels", "tab:blue", "-"),
    ("track_healed", "θ_o1: healed", "tab:green", "--"),
    ("track_utility", "θ_o1: utility", "tab:gray", ":"),
)


def curve_cells(records: list[dict], method: str = "rem", rate: float = CURVE_RATE) -> dict[str, dict]:
    """task → the record whose history is drawn (the one nearest ``rate``, lowest seed), if any tracks."""
    out: dict[str, dict] = {}
    for r in records:
        rounds = [h for h in r.get("history") or [] if "round" in h and "track_healed" in h]
        if r.get("method") != method or not rounds:
            continue
        best = out.get(r["task"])
        score = (abs(float(r["rate"]) - rate), int(r.get("seed", 0)))
        if best is None or score < (abs(float(best["rate"]) - rate), int(best.get("seed", 0))):
            out[r["task"]] = r
    return out


def redirection_png(
    records: list[dict], method: str = "rem", rate: float = CURVE_RATE, *, dpi: int = 110
) -> bytes | None:
    """One PNG, a panel per task, of the per-round ``track_*`` history; None when no cell tracks it."""
    cells = curve_cells(records, method, rate)
    if not cells:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = [k for k in KINDS if k in cells]
    fig = Figure(figsize=(4.2 * len(tasks), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        rec = cells[task]
        rounds = [h for h in rec["history"] if "round" in h]
        best = next((h["best_round"] for h in rec["history"] if "best_round" in h), None)
        x = [h["round"] + 1 for h in rounds]
        for key, label, color, style in SERIES:
            ax.plot(x, [percent(h[key]) for h in rounds], style, color=color, marker="o", ms=3, label=label)
        if best is not None and best >= 0:
            ax.axvline(best + 1, color="black", lw=0.8, alpha=0.4)
        ax.set_title(
            f"{task}, rate {float(rec['rate']):g} (best round {best + 1 if best is not None else '?'})", fontsize=9
        )
        ax.set_xlabel("round (step 2 + step 3)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=7, loc="center right")
    fig.suptitle(f"{method}: redirection, round by round", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
