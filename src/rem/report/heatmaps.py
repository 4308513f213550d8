"""The paper's Figure 1: regularity × discovery-rate heatmaps, one panel per method (SPEC §2).

Rows are the regularity of the corruption (high = poison, medium = interclass, low = random), columns
the discovery rates, each cell the mean over seeds (with its SEM over seeds below it, where there are
several, as in the paper's figures); the first column (``start``, set apart by a white
line) is the starting model before unlearning, as a reference. One figure per metric, at most three
panels per row and numbers in a 10-point font, so that they read at a normal window width; cells where
the method collapses (:func:`rem.report.tables.collapses`) are outlined in red and marked ``×``. Values
are shown in percent (the records hold shares). Drawn with matplotlib's object API on the Agg canvas
(no pyplot state, no display needed).
"""

from __future__ import annotations

import io
import math

from rem.data.tasks import KINDS, REGULARITY
from rem.report.tables import grid_stats, order_methods, rates_of
from rem.units import percent

LABELS = {
    "uxh": "uxh (healed × utility / 100)",
    "healed": "healed (%)",
    "utility": "utility (%)",
    "redirection": "REM round by round: θ_o1 forgets, θ_o2 takes the corruption over (Fig. 5)",
}


def panels(rows: list[dict]) -> list[tuple[str, str]]:
    """(method, pretraining type) pairs in report order."""
    pairs = {(r["method"], r["pretrain_type"]) for r in rows}
    ptypes = sorted({p for _, p in pairs})
    return [(m, p) for m in order_methods(m for m, _ in pairs) for p in ptypes if (m, p) in pairs]


NUMBER_FONT = 10  # points: the cell values
SEM_FONT = 8  # points: the SEM over seeds below a cell's value, where there are several seeds
PANELS_PER_ROW = 3
MAX_WIDTH_IN = 13.0  # inches at 100 dpi: about the HTML page's width, so the image is not shrunk much


def heatmap_png(
    rows: list[dict], starts: list[dict], metric: str, *, dpi: int = 100, collapsed: list[dict] | None = None
) -> bytes:
    """One PNG with a panel per (method, pretraining type) for ``metric``; ``collapsed`` (the output of
    :func:`rem.report.tables.collapses`) marks the cells where a method collapses."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    marked = {
        (e["method"], e["pretrain_type"], c["task"], float(c["rate"])) for e in collapsed or [] for c in e["collapsed"]
    }

    pairs = panels(rows)
    tasks = [k for k in KINDS if any(r["task"] == k for r in rows)]
    rates = rates_of(rows)
    multi_ptype = len({p for _, p in pairs}) > 1
    n = max(1, len(pairs))
    w = max(3.4, 0.75 * (len(rates) + 1) + 1.4)
    ncols = max(1, min(PANELS_PER_ROW, n, int(MAX_WIDTH_IN // w)))  # shown near full size in a browser
    nrows = math.ceil(n / ncols)
    height = 0.75 * len(tasks) * nrows + 1.1 * nrows + 0.8
    fig = Figure(figsize=(w * ncols + 1.0, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    im = None
    for i, (method, ptype) in enumerate(pairs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        stats = grid_stats(rows, starts, method, ptype, metric, tasks, rates)
        vals = [[percent(m) for m, _, _ in line] for line in stats]
        im = ax.imshow(vals, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for y, line in enumerate(vals):
            for x, v in enumerate(line):
                if not math.isnan(v):
                    sem = percent(stats[y][x][1])
                    color = "white" if v < 55 else "black"
                    ax.text(
                        x,
                        y - (0.13 if not math.isnan(sem) else 0.0),
                        f"{v:.0f}" + ("×" if x and (method, ptype, tasks[y], float(rates[x - 1])) in marked else ""),
                        ha="center",
                        va="center",
                        fontsize=NUMBER_FONT,
                        fontweight="bold",
                        color=color,
                    )
                    if not math.isnan(sem):  # several seeds: the SEM over them, below the mean
                        ax.text(x, y + 0.22, f"±{sem:.1f}", ha="center", va="center", fontsize=SEM_FONT, color=color)
                if x and (method, ptype, tasks[y], float(rates[x - 1])) in marked:
                    ax.add_patch(Rectangle((x - 0.46, y - 0.46), 0.92, 0.92, fill=False, edgecolor="red", linewidth=2))
        ax.axvline(0.5, color="white", linewidth=3)
        ax.set_xticks(range(len(rates) + 1), ["start"] + [f"{r:g}" for r in rates], fontsize=9)
        ax.set_yticks(
            range(len(tasks)),
            [f"{REGULARITY[t]}\n({t})" for t in tasks] if i % ncols == 0 else [""] * len(tasks),
            fontsize=9,
        )
        ax.set_title(f"{method} ({ptype})" if multi_ptype else method, fontsize=11)
        if i // ncols == nrows - 1:
            ax.set_xlabel("discovery rate", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.8, label=LABELS.get(metric, metric))
    fig.suptitle(
        f"{LABELS.get(metric, metric)}: regularity × discovery rate (start = before unlearning"
        + ("; red × = collapse)" if marked else ")"),
        fontsize=12,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
