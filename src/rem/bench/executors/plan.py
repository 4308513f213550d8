"""The plan every executor runs: the cells to compute, the run folder, where results go (:class:`Sink`),
the device and data folder; plus what :func:`~rem.bench.executors.run_grid` reports (:class:`RunSummary`)
and draws (:class:`GridBar`). An executor is one function ``run(plan, **its own options)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rem.bench.store import ResultStore
from rem.errors import RemError
from rem.run.spec import Cell


@dataclass
class RunSummary:
    """What :func:`run_grid` did."""

    run_dir: Path
    total: int = 0  # cells in the grid
    skipped: int = 0  # already in the store before this run
    done: int = 0  # finished in this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cell label, error)
    elsewhere: int = 0  # computed (or being computed) by another rem bench process on the same run folder
    wall_s: float = 0.0
    cost: dict[str, list[float]] = field(default_factory=dict)  # method → [cells, wall s, core-seconds] run now
    pretrain: list[float] = field(default_factory=lambda: [0, 0.0, 0.0])  # starting models pretrained now: same

    @staticmethod
    def _wall_core(record: dict) -> tuple[float, float]:
        wall = float(record.get("wall_s") or 0.0)
        return wall, wall * int((record.get("env") or {}).get("threads") or 1)

    def add_pretrain(self, record: dict) -> None:
        """Count a starting model pretrained during this run (its pretraining wall × threads)."""
        wall, core = self._wall_core(record)
        p = self.pretrain
        p[0], p[1], p[2] = p[0] + 1, p[1] + wall, p[2] + core

    def add_cost(self, record: dict) -> None:
        """Count a finished cell's unlearning time (wall × the threads it ran on) under its method."""
        wall, core = self._wall_core(record)
        c = self.cost.setdefault(record.get("method", "?"), [0, 0.0, 0.0])
        c[0], c[1], c[2] = c[0] + 1, c[1] + wall, c[2] + core

    def cost_table(self) -> str:
        """Per method: cells run now, their unlearning wall time and core-seconds (most expensive first);
        then the starting models pretrained during this run, and the total."""
        if not self.cost and not self.pretrain[0]:
            return ""
        rows = sorted(self.cost.items(), key=lambda kv: -kv[1][2])
        if self.pretrain[0]:
            rows.append(("(pretraining)", self.pretrain))
        width = max(len(m) for m, _ in rows)
        lines = [f"  {'method':<{width}}  cells  wall s  core-s"]
        lines += [f"  {m:<{width}}  {int(n):5d}  {w:6.0f}  {c:6.0f}" for m, (n, w, c) in rows]
        total = [sum(v[i] for _, v in rows) for i in range(3)]
        lines.append(f"  {'all':<{width}}  {int(total[0]):5d}  {total[1]:6.0f}  {total[2]:6.0f}")
        return (
            "cost of the work run now (wall × threads = core-seconds; cells: their unlearning; "
            "(pretraining): the starting models pretrained during this run):\n" + "\n".join(lines)
        )

    @property
    def complete(self) -> bool:
        return not self.failed and self.skipped + self.done + self.elsewhere == self.total and not self.elsewhere

    def __str__(self) -> str:
        s = (
            f"{self.total} cells: {self.skipped} already stored, {self.done} run now, "
            f"{len(self.failed)} failed"
            + (f", {self.elsewhere} left to another rem bench on this run folder" if self.elsewhere else "")
            + f" ({self.wall_s:.0f} s); results in {self.run_dir}"
        )
        for label, err in self.failed[:10]:
            s += f"\n  failed: {label}: {err.strip().splitlines()[-1] if err.strip() else err}"
        table = self.cost_table()
        if table:
            s += "\n" + table
        return s


class GridBar:
    """The grid's bar: cells done of the grid, with pretraining counted in the ETA.

    Its unit of work is one cell; a starting model still to pretrain counts ``start_weight`` cells (its
    samples seen, steps × batch size, over a cell's). Step callbacks (:meth:`steps`) move it *within*
    a pretraining or a cell, so it shows signs of life and a live ETA; a nested :class:`StepBar` below it
    shows the current job's own steps and loss. Nothing is drawn unless ``enabled``.
    """

    def __init__(
        self,
        total_cells: int,
        done_cells: int,
        n_starts: int,
        start_weight: float,
        *,
        enabled: bool,
        desc: str = "bench",
        file=None,
    ) -> None:
        self.total_cells, self.cells = total_cells, done_cells
        self.start_weight = start_weight
        self.base = float(done_cells)  # work finished, in cell units
        self.partial = 0.0  # of the job in progress
        self.failed = 0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=round(total_cells + n_starts * start_weight, 3),
                initial=done_cells,
                desc=desc,
                position=0,
                dynamic_ncols=True,
                file=file,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]",
            )
            self._postfix()

    @property
    def n(self) -> float:
        return self.base + self.partial

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.cells}/{self.total_cells} cells, {self.failed} failed", refresh=False)

    def _move(self, partial: float) -> None:
        self.partial = partial
        if self.bar is not None:
            self.bar.n = min(self.bar.total, round(self.base + self.partial, 6))
            self.bar.update(0)  # redraws when tqdm's refresh interval has passed

    def steps(self, weight: float):
        """An ``on_step(done, total, loss)`` moving the bar through a job worth ``weight`` cells."""

        def on_step(done: int, total: int, loss=None) -> None:
            self._move(weight * min(1.0, done / max(1, total)))

        return on_step

    def finish(self, weight: float, cell: bool, failed: bool = False) -> None:
        """A job worth ``weight`` cells ended (a cell, or a pretraining when ``cell`` is False)."""
        self._move(weight)
        self.base, self.partial = self.base + weight, 0.0
        if cell:
            self.cells += 1
            self.failed += failed
        self._postfix()
        if self.bar is not None:
            self.bar.refresh()

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Sink:
    """Writes finished and failed cells to the store and counts them."""

    def __init__(
        self,
        store: ResultStore,
        summary: RunSummary,
        fail_fast: bool,
        bar: GridBar | None = None,
        progress: bool = False,
    ) -> None:
        self.store, self.summary, self.fail_fast, self.bar = store, summary, fail_fast, bar
        self.progress = progress  # nested step bars wanted (and allowed)

    def ok(self, record: dict) -> None:
        self.store.put(record)
        self.summary.done += 1
        self.summary.add_cost(record)
        self._tick()

    def fail(self, cell: Cell, error: str) -> None:
        self.store.put_failure(cell.config(), cell.key, error)
        self.summary.failed.append((cell.label(), error))
        self._tick(failed=True)
        if self.fail_fast:
            raise RemError(f"cell {cell.label()} failed (fail-fast):\n{error}")

    def _tick(self, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.finish(1.0, cell=True, failed=failed)


@dataclass
class Plan:
    """What an executor runs: ``todo`` (cells not yet stored, claimed by the ``ray`` and ``slurm`` drivers),
    in ``run_dir``, each result or failure to ``sink``, on ``device`` with data from ``data_dir``."""

    todo: list[Cell]
    run_dir: Path
    sink: Sink
    device: str = "auto"
    data_dir: str | Path | None = None


def set_threads(n: float | int | None) -> None:
    """Torch's CPU threads = the CPUs a worker was given (results then match a local run at that count)."""
    if n:
        import torch

        torch.set_num_threads(max(1, int(n)))
