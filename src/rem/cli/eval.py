"""``rem eval``: the metrics of a checkpoint on its own task (or another task of the same data)."""

from __future__ import annotations

from pathlib import Path

from rem.cli.args import TASKS, add_common, shown


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="metrics of a checkpoint on its task (or another task)",
        description="Evaluate a checkpoint: healed, healed_test, utility, uxh, forget_acc, asr (printed in "
        "percent; --out writes them as shares in [0, 1], as every file rem writes).",
    )
    p.add_argument("--checkpoint", required=True, help="a .safetensors file written by rem")
    p.add_argument(
        "--task",
        default=None,
        choices=TASKS,
        help="evaluate on this task instead of the checkpoint's own (default: its own)",
    )
    p.add_argument("--out", default=None, help="write the metrics (shares) to this JSON file (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from contextlib import nullcontext

    from rem.output import Output
    from rem.runtime import pick_device

    dev = pick_device(args.device)
    out = None
    if args.out:
        out = Output([Path(args.out)], overwrite=args.overwrite, what="--out", inputs={args.checkpoint: "checkpoint"})
    with out or nullcontext() as result:
        _evaluate(args, dev, result)
    return 0


def _evaluate(args, dev, result) -> None:
    import json

    import torch

    from rem.checkpoint import load_checkpoint
    from rem.cli.inputs import checkpoint_task
    from rem.metrics import evaluate

    model, meta = load_checkpoint(args.checkpoint, dev)
    _, task = checkpoint_task(meta, args.data_dir, not args.no_download, kind=args.task)
    fi = torch.tensor(meta["forget_idx"]) if "forget_idx" in meta else None
    metrics = evaluate(model, task, fi, device=dev)
    if result is not None:
        record = {"checkpoint": str(args.checkpoint), "task": task.config.as_dict(), "metrics": metrics}
        result.write({result.paths[0]: json.dumps(record, indent=2, sort_keys=True, default=str)})
    print("metrics (%):", shown(metrics))
