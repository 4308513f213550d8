"""The ``local`` executor: cells one after the other in this process (see :mod:`rem.bench.executors`)."""

from __future__ import annotations

import time
import traceback

from rem.bench.cell import StartSpec, ensure_start, run_cell
from rem.bench.executors.plan import Plan


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


def run_local(plan: Plan, *, poll_s: float = 2.0) -> None:
    """Cells one by one, each claimed in the store first; cells and starting models that another live
    ``rem bench`` holds are left to it (a starting model it is pretraining is waited for)."""
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
