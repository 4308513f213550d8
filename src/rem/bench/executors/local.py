"""The ``local`` executor: cells one after the other in this process, or in several worker processes on
one machine (see :mod:`rem.bench.executors`).

``workers="auto"`` (the command's default) runs one worker per CPU core on a CPU device, each with one
thread, capped by the number of cells to run; a CUDA device gets one worker. The extra workers are
``rem bench`` processes of their own on the same run folder: they share the work through the store's
claims (as separately started ``rem bench`` processes do), and this process waits for them and counts
their cells. **Why:** on the two-core machine, two one-thread cells side by side finish more cells per
hour than one two-thread cell after another (``benchmarks/cell_cost.py --placement``; the figures are in
``docs/performance.md``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback

from rem.bench.cell import StartSpec, ensure_start, run_cell
from rem.bench.executors.plan import Plan
from rem.errors import ConfigError, RemError


def _pretrain_claimed(plan: Plan, spec: StartSpec, broken: dict[str, str]) -> str:
    """Claim ``spec``'s starting model and make sure it exists: "ready", "elsewhere" (another runner holds
    it) or "broken" (its pretraining failed; the traceback goes to ``broken``)."""
    from rem.progress import StepBar, chain

    store, bar, sink = plan.sink.store, plan.sink.bar, plan.sink
    if not store.claim(f"start:{spec.key}"):
        return "elsewhere"
    weight = 0.0 if spec.path(plan.run_dir).is_file() or bar is None else bar.start_weight
    if bar is not None:
        bar.describe(f"pretrain {spec.label()}")
    try:
        with StepBar(f"pretrain {spec.label()}", sink.progress, position=1) as inner:
            ensure_start(
                spec,
                plan.run_dir,
                device=plan.device,
                data_dir=plan.data_dir,
                store=store,
                on_step=chain(inner, bar.steps(weight) if bar is not None else None),
            )
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception:
        broken[spec.key] = traceback.format_exc()
        return "broken"
    finally:
        store.release(f"start:{spec.key}")
        if bar is not None:
            bar.finish(weight, cell=False)
    return "ready"


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, device, n_cells: int) -> int:
    """The number of worker processes: ``auto`` = one per core on CPU (one on an accelerator), at most
    one per cell to run, at least one."""
    from rem.runtime import pick_device

    if workers == "auto":
        n = cpu_cores() if pick_device(device).type == "cpu" else 1
    else:
        try:
            n = int(workers)
        except (TypeError, ValueError):
            raise ConfigError(f"workers must be a positive number or 'auto', got {workers!r}") from None
        if n < 1:
            raise ConfigError(f"workers must be at least 1, got {n}")
    return max(1, min(n, n_cells))


def _die_with(parent: int) -> None:
    """Make this worker die with the process that started it (Linux), so that killing ``rem bench``
    stops its workers too: their cell in progress is lost, as the single process's would be, and its claim
    is released for the next run."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)


def _worker(cells, run_dir, device, data_dir, threads: int, fail_fast: bool, ran, parent: int) -> None:
    """A spawned worker: the same cells, its own store connection, ``threads`` torch threads, no bars;
    sends the keys of the cells it ran (finished or failed) back through ``ran``."""
    from rem.bench.executors.plan import RunSummary, Sink, set_threads
    from rem.bench.store import ResultStore
    from rem.runtime import tune_allocator

    _die_with(parent)
    tune_allocator()
    set_threads(threads)
    mine: set[str] = set()
    try:
        with ResultStore.in_run_dir(run_dir) as store:
            try:
                plan = Plan(cells, run_dir, Sink(store, RunSummary(run_dir=run_dir), fail_fast), device, data_dir)
                _run_cells(plan, 2.0, mine)
            finally:
                store.release()
    finally:
        ran.put(sorted(mine))


def _start_workers(plan: Plan, n: int) -> tuple[list, object]:
    """``n - 1`` spawned workers on ``plan``'s cells and the queue they report their cells through; this
    process becomes the n-th (threads split evenly)."""
    from rem.bench.executors.plan import set_threads

    threads = max(1, cpu_cores() // n)
    set_threads(threads)
    ctx = multiprocessing.get_context("spawn")
    ran = ctx.SimpleQueue()
    procs = []
    for _ in range(n - 1):
        p = ctx.Process(
            target=_worker,
            args=(plan.todo, plan.run_dir, plan.device, plan.data_dir, threads, plan.sink.fail_fast, ran, os.getpid()),
        )
        p.start()
        procs.append(p)
    return procs, ran


def _collect(plan: Plan, procs: list, ran) -> None:
    """Wait for the workers, then count the cells they ran (finished or failed) as this run's."""
    theirs: set[str] = set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RemError(f"a bench worker process died (exit code {p.exitcode}); rerun to resume")
    while not ran.empty():
        theirs.update(ran.get())
    sink, summary = plan.sink, plan.sink.summary
    errors = {r.get("key"): r.get("error", "") for r in sink.store.records("failed")}
    for cell in plan.todo:
        if cell.key not in theirs:
            continue
        summary.elsewhere -= 1  # counted so when this process skipped it
        rec = sink.store.get(cell.key)
        if rec is not None:
            summary.done += 1
            summary.add_cost(rec)
        else:
            summary.failed.append((cell.label(), errors.get(cell.key) or "failed in a worker"))


def run_local(plan: Plan, *, poll_s: float = 2.0, workers: int | str = 1) -> None:
    """Cells one by one, each claimed in the store first; cells and starting models that another live
    ``rem bench`` holds are left to it (a starting model it is pretraining is waited for). With
    ``workers`` > 1 (or ``"auto"``), that many processes share the cells (see the module's docs)."""
    n = resolve_workers(workers, plan.device, len(plan.todo))
    procs, ran = _start_workers(plan, n) if n > 1 else ([], None)
    try:
        _run_cells(plan, poll_s, set())
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    if procs:
        _collect(plan, procs, ran)


def _run_cells(plan: Plan, poll_s: float, mine: set[str]) -> None:
    from rem.progress import StepBar, chain

    todo, run_dir, sink, device, data_dir = plan.todo, plan.run_dir, plan.sink, plan.device, plan.data_dir
    store, bar = sink.store, sink.bar
    ready: set[str] = set()
    broken: dict[str, str] = {}  # starting models whose pretraining failed: their cells fail at once
    pending = list(todo)
    while pending:
        progressed = False
        for cell in list(pending):
            spec = StartSpec.of(cell)
            if store.is_done(cell.key) or store.claimed_elsewhere(cell.key):
                pending.remove(cell)  # stored or being computed by another runner
                sink.summary.elsewhere += 1
                if bar is not None:
                    bar.finish(1.0, cell=True)
                continue
            if spec.key in broken:
                pending.remove(cell)
                sink.fail(cell, broken[spec.key])
                continue
            if spec.key not in ready:
                status = _pretrain_claimed(plan, spec, broken)
                if status == "elsewhere":
                    continue  # another runner is pretraining it: come back to it later
                if status == "broken":
                    pending.remove(cell)
                    sink.fail(cell, broken[spec.key])
                    continue
                ready.add(spec.key)
            if not store.claim(cell.key):
                continue  # taken by another runner in the meantime: counted on the next pass
            pending.remove(cell)
            mine.add(cell.key)
            progressed = True
            if bar is not None:
                bar.describe(cell.label())
            try:
                with StepBar(cell.method, sink.progress, position=1) as inner:
                    rec = run_cell(
                        cell,
                        run_dir,
                        device=device,
                        data_dir=data_dir,
                        on_step=chain(inner, bar.steps(1.0) if bar is not None else None),
                    )
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:
                sink.fail(cell, traceback.format_exc())
                continue
            sink.ok(rec)
        if pending and not progressed:
            time.sleep(poll_s)  # every cell left waits for a starting model another runner pretrains
