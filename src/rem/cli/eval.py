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
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from rem.checkpoint import load_checkpoint
    from rem.cli.inputs import checkpoint_task
    from rem.metrics import evaluate
    from rem.paths import check_output_file, write_json_atomic
    from rem.runtime import pick_device

    dev = pick_device(args.device)
    if args.out:
        check_output_file(args.out)
    model, meta = load_checkpoint(args.checkpoint, dev)
    _, task = checkpoint_task(meta, args.data_dir, not args.no_download, kind=args.task)
    fi = torch.tensor(meta["forget_idx"]) if "forget_idx" in meta else None
    metrics = evaluate(model, task, fi, device=dev)
    if args.out:
        write_json_atomic(
            Path(args.out), {"checkpoint": str(args.checkpoint), "task": task.config.as_dict(), "metrics": metrics}
        )
    print("metrics (%):", shown(metrics))
    return 0
