"""How well each discovery score finds the undiscovered corruption D_c \\ D_f among D_r (issue 17).

For every task × discovery rate, each score (:mod:`rem.discovery`) ranks D_r = D_tr \\ D_f of the cached
starting model of the profile; the positives are the undiscovered corrupted samples D_c \\ D_f. Printed
(and written to ``--out`` as Markdown, with the command): AUROC, precision at k = |D_c \\ D_f| (equal to
the recall at that k) and the score's wall time, one table, then the mean of each score over all cells.
With ``--thresholds``, a second table: per cell and score, how many samples of D_r score at least each
threshold (in the score's own units; the ``rem`` score's are IQRs over D_r's median), and the precision and
recall of that flagged set: what ``rem-discover``'s ``discover_threshold`` would add.

The starting models are read from ``<run-dir>/models`` as ``rem bench`` cached them
(:func:`rem.bench.cell.load_start`), **never pretrained here**: a missing one is an error naming the
``rem bench`` command that makes it. Nothing is written to the run folder.

    OMP_NUM_THREADS=1 REM_DATA_DIR=../shared/datasets python benchmarks/discovery.py --run-dir runs/cpu \\
        [--profile cpu] [--tasks poison,interclass,random] [--rates 0.1,0.3,0.5] \\
        [--scores rem,rem:feature_weight=0,features,loss,cleanlab,spectral] [--thresholds 3,5,10] \\
        [--out docs/results/cpu/discovery.md]

A score is ``NAME`` or ``NAME:KEY=VALUE[;KEY=VALUE]`` (its settings, as ``rem discover --set``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from rem.bench.cell import StartSpec, load_start
from rem.discovery import get_score
from rem.errors import RemError
from rem.methods import Context
from rem.profiles import get_profile
from rem.runtime import pick_device

DEFAULT_SCORES = "rem,rem:feature_weight=0,features,loss,cleanlab,spectral"


def parse_score(text: str) -> tuple[str, str, dict]:
    """``rem:feature_weight=0`` → (label, name, settings)."""
    name, _, rest = text.partition(":")
    settings = {}
    for item in filter(None, rest.split(";")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"discovery.py: a score setting is KEY=VALUE, got {item!r} in {text!r}")
        settings[key.strip()] = value.strip()
    get_score(name.strip(), **settings)  # unknown names and bad settings fail before any work
    return text, name.strip(), settings


def run(args) -> list[dict]:
    profile = get_profile(args.profile)
    dev = pick_device(args.device)
    scores = [parse_score(s) for s in args.scores.split(",") if s.strip()]
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    for kind in args.tasks.split(","):
        spec = StartSpec(profile, args.pretrain_type, kind, args.seed)
        model, _, task = load_start(spec, spec.path(args.run_dir), device=dev, data_dir=args.data_dir)
        for rate in rates:
            forget_idx = task.forget_idx(rate)
            hidden = task.corrupt_idx[~torch.isin(task.corrupt_idx, forget_idx)]  # D_c \ D_f
            for label, name, settings in scores:
                ranking = get_score(name, **settings).rank(model, task, forget_idx, Context(device=dev))
                q = ranking.evaluate(hidden)
                row = {"task": kind, "rate": rate, "score": label, **q, "wall_s": ranking.wall_s, "info": ranking.info}
                row["at_threshold"] = [flagged_at(ranking, hidden, t) for t in args.threshold_values]
                rows.append(row)
                print(
                    f"{kind:10s} {rate:.1f} {label:24s} AUROC {q['auroc']:.3f}  P@k {q['precision_at_k']:.3f} "
                    f"(k={q['k']})  {ranking.wall_s:6.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def flagged_at(ranking, positives: torch.Tensor, threshold: float) -> dict:
    """The samples of D_r scoring at least ``threshold``: how many, and their precision and recall on ``positives``."""
    flagged = ranking.idx[ranking.score >= threshold]
    hits = int(torch.isin(flagged, positives).sum())
    n = len(flagged)
    return {
        "threshold": threshold,
        "flagged": n,
        "precision": hits / n if n else float("nan"),
        "recall": hits / len(positives) if len(positives) else float("nan"),
    }


def threshold_table(rows: list[dict]) -> str:
    """Per cell and score: flagged / precision / recall at each threshold ("–" for a precision of nothing)."""
    ts = [a["threshold"] for a in rows[0]["at_threshold"]]
    lines = [
        "| task | rate | score | undiscovered | " + " | ".join(f"≥ {t:g}" for t in ts) + " |",
        "|---|---|---|---:|" + "---:|" * len(ts),
    ]
    for r in rows:
        cells = []
        for a in r["at_threshold"]:
            prec = "–" if a["flagged"] == 0 else f"{a['precision']:.2f}"
            cells.append(f"{a['flagged']} / {prec} / {a['recall']:.2f}")
        lines.append(f"| {r['task']} | {r['rate']:g} | `{r['score']}` | {r['k']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """One Markdown table: a row per task × rate, a column per score (AUROC / P@k / wall s), then means."""
    labels = list(dict.fromkeys(r["score"] for r in rows))
    cells = list(dict.fromkeys((r["task"], r["rate"]) for r in rows))
    by = {(r["task"], r["rate"], r["score"]): r for r in rows}
    head = "| task | rate | k | " + " | ".join(f"`{s}`" for s in labels) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(labels)]
    for kind, rate in cells:
        k = by[(kind, rate, labels[0])]["k"]
        vals = [by[(kind, rate, s)] for s in labels]
        lines.append(
            f"| {kind} | {rate:g} | {k} | "
            + " | ".join(f"{v['auroc']:.3f} / {v['precision_at_k']:.2f} / {v['wall_s']:.0f} s" for v in vals)
            + " |"
        )

    def mean(s, key):
        vs = [r[key] for r in rows if r["score"] == s]
        return sum(vs) / len(vs)

    lines.append(
        "| **mean** | | | "
        + " | ".join(
            f"**{mean(s, 'auroc'):.3f}** / **{mean(s, 'precision_at_k'):.2f}** / {mean(s, 'wall_s'):.0f} s"
            for s in labels
        )
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="run folder whose models/ holds the cached starting models")
    ap.add_argument("--profile", default="cpu", help="profile of the starting models (default cpu)")
    ap.add_argument("--pretrain-type", default="capacity-0.5", help="pretraining type (default capacity-0.5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the task and starting model (default 0)")
    ap.add_argument("--tasks", default="poison,interclass,random", help="comma-separated tasks")
    ap.add_argument("--rates", default="0.1,0.3,0.5", help="comma-separated discovery rates")
    ap.add_argument("--scores", default=DEFAULT_SCORES, help=f"comma-separated scores (default {DEFAULT_SCORES})")
    ap.add_argument(
        "--thresholds",
        default="",
        help="comma-separated score thresholds: also count, per cell, the samples scoring at least each (and how "
        "many of them are corrupted)",
    )
    ap.add_argument("--data-dir", default=None, help="data folder (default $REM_DATA_DIR)")
    ap.add_argument("--device", default="auto", help="compute device (default auto)")
    ap.add_argument("--out", default=None, help="also write the table as Markdown here (and the rows as .json)")
    args = ap.parse_args(argv)
    try:
        args.threshold_values = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--thresholds takes comma-separated numbers, got {args.thresholds!r}")
    t0 = time.time()
    try:
        rows = run(args)
    except RemError as e:
        print(f"discovery.py: error: {e}", file=sys.stderr)
        return 2
    text = table(rows)
    if args.threshold_values:
        text += (
            "\n\nAt a threshold (the score's own units): samples of D_r scoring at least it / their precision on "
            "D_c \\ D_f / its recall.\n\n" + threshold_table(rows)
        )
    cmd = "python benchmarks/discovery.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    note = (
        f"{torch.get_num_threads()} thread(s), device {pick_device(args.device)}, "
        f"{time.time() - t0:.0f} s in all. Cells: AUROC / precision at k = |D_c \\ D_f| (= recall at k) / wall "
        "time of the score."
    )
    print(text)
    print(note)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"Command: `{cmd}`\n\n{text}\n\n{note}\n")
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
