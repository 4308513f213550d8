"""The relearning check: does the healing hold when the model is re-tuned on a few corrupted samples?

Min et al. (arXiv 2410.09838, the "retuning attack") re-tune purified models on a handful of poisoned
samples: the backdoor returns for defences that only hid it, and stays away from a model trained clean.
Here, after unlearning, a copy of the healed model is fine-tuned for a fixed short budget on a re-tuning set
of :data:`POOL` = 1,000 samples (the retuning attack's), of which

- k are corrupted — the first k of the task's discovery order, so the same samples for every method
  and rate, and samples of D_f whenever k ≤ |D_f| — with their corrupted labels (triggers stamped), and
- the rest clean (a seeded draw from D_tr ∖ D_c, true labels),

then measured again. Each k of ``ks`` (default 5 and 50) gives, in the cell's ``metrics``:

- ``relearn_healed_<k>``: healed after re-tuning (:func:`rem.metrics.evaluate`);
- ``relearn_asr_<k>``: attack success after re-tuning (poison only).

The re-tuning: :data:`STEPS` = 40 SGD steps at batch :data:`BATCH` = 128 (lr 0.01, momentum 0.9, weight decay
5e-4): the retuning attack's 5 epochs of its 1,000 samples at batch 128, its lr; augmented as in pretraining,
batch norm in training mode as in any fine-tuning, the deployed model in ``drop`` mode. Fixed across methods
and profiles, so cells compare.

**[choice], measured.** The first design re-tuned on the k corrupted samples and *as many* clean ones (one
batch of 2k, batch norm in inference mode). On the ``cpu`` profile's poison task (seed 0) it destroyed a
model trained clean (``retrain`` at rate 1.0: test accuracy 71.5 → 14.7 %, ASR 2.3 → 74.9 % at k = 5): it
measured damage, not relearning, and every method read as "relearned". With the 1,000-sample set the
clean model stays clean (k = 5: ASR 3.1 %, test accuracy 68.6 %) while the backdoored starting model keeps
its backdoor (ASR 90.3 %). ``benchmarks/relearn_design.py`` measures both designs.

**Reference.** ``retrain`` at rate 1.0 never saw a corrupted sample: its relearning figures are how much a
clean model picks up from the same re-tuning. The report shows them beside every method's and the gap to
them (:func:`rem.report.relearn.relearn_table`).

**Where it enters [choice].** A grid's ``relearn`` (``rem bench --relearn 5,50``, a grid file's
``relearn = [5, 50]``; by default the profile's ``relearn``: (5, 50) on ``cpu``, off on the others, since it
costs two short fine-tunings and two evaluations per cell; ``--relearn off`` turns it off) puts
:func:`relearn_settings` into each cell's configuration, and so into its key, *only when on*: cells computed
without it keep their keys and records, and show blank relearning columns. A grid run with it computes its
own cells (their unlearning again, since healed models are not stored); the report prefers, for the same
cell, the record that has the relearning figures (:func:`rem.report.relearn.prefer_relearned`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rem.data.loader import train_batches
from rem.data.tasks import Task
from rem.errors import ConfigError
from rem.seeding import seeded_generator

STEPS = 40
BATCH = 128
POOL = 1000
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
DEFAULT_KS = (5, 50)
METRIC_PREFIXES = ("relearn_healed_", "relearn_asr_")


def parse_ks(ks) -> tuple[int, ...]:
    """``ks`` (an iterable of ints, or ``"5,50"``) as a sorted tuple of distinct positive ints; () = off."""
    if ks is None:
        return ()
    if isinstance(ks, str) and ks.strip().lower() in ("off", "none"):
        return ()
    if isinstance(ks, str):
        items = [s.strip() for s in ks.split(",") if s.strip()]
    else:
        items = list(ks)
    try:
        out = sorted({int(k) for k in items})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"relearn: expected comma-separated sample counts such as 5,50, got {ks!r}") from e
    if any(k < 1 for k in out):
        raise ConfigError(f"relearn: sample counts must be >= 1, got {out}")
    return tuple(out)


def relearn_settings(ks) -> dict:
    """What a cell's configuration carries when the check is on (it enters the cell's key)."""
    return {
        "ks": list(parse_ks(ks)),
        "steps": STEPS,
        "batch_size": BATCH,
        "pool": POOL,
        "bn": "train",
        "lr": LR,
        "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY,
    }


def metric_names(ks, poison: bool = True) -> list[str]:
    """The metric keys the check writes for ``ks``."""
    out = []
    for k in parse_ks(ks):
        out.append(f"relearn_healed_{k}")
        if poison:
            out.append(f"relearn_asr_{k}")
    return out


def retune_idx(task: Task, k: int, seed: int, pool: int = POOL) -> tuple[torch.Tensor, int]:
    """(indices, n corrupted): the first k corrupted samples of the discovery order, then clean ones up to
    ``pool`` samples in all (fewer when D_tr has fewer clean samples)."""
    corrupt = task.discovery_order[:k].cpu()
    clean_all = torch.ones(task.n_train, dtype=torch.bool)
    clean_all[task.corrupt_idx.cpu()] = False
    clean = clean_all.nonzero().squeeze(1)
    n_clean = max(0, pool - len(corrupt))
    pick = torch.randperm(len(clean), generator=seeded_generator(f"{seed}/relearn/clean"))[:n_clean]
    return torch.cat([corrupt, clean[pick]]), len(corrupt)


def sgd_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, batches, steps: int) -> int:
    """Cross-entropy steps of ``opt`` on ``model`` over ``batches`` ((x, y, idx) triples), at most ``steps``;
    returns how many were taken (fewer when ``batches`` ends first)."""
    done = 0
    if steps <= 0:
        return done
    for x, y, _ in batches:
        loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if done >= steps:
            break
    return done


def retune(
    model: torch.nn.Module,
    task: Task,
    idx: torch.Tensor,
    *,
    device,
    seed: int = 0,
    steps: int = STEPS,
    batch_size: int = BATCH,
):
    """A copy of ``model`` fine-tuned ``steps`` SGD steps on D_tr[idx] as trained: shuffled, augmented
    batches of ``batch_size``, batch norm in training mode (its statistics move, as in any fine-tuning)."""
    m = copy.deepcopy(model).to(device)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    drop = len(idx) > batch_size and len(idx) % batch_size == 1  # a last batch of one would break batch norm
    done, epoch = 0, 0
    while done < steps:
        batches = train_batches(task, idx, device=device, batch_size=batch_size, seed=seed + epoch, drop_last=drop)
        done += sgd_steps(m, opt, batches, steps - done)
        epoch += 1
    return m.eval()


def relearn_metrics(model: torch.nn.Module, task: Task, ks, *, device="cpu", seed: int = 0) -> tuple[dict, dict]:
    """The relearning figures of the healed ``model`` for each k of ``ks``: (metrics, details).

    ``metrics``: ``relearn_healed_<k>`` and (poison) ``relearn_asr_<k>``, shares in [0, 1]. ``details``: the
    settings and, per k, how many corrupted samples were used (fewer than k when |D_c| < k)."""
    import time

    from rem.metrics import evaluate

    dev = torch.device(device)
    t0 = time.perf_counter()
    metrics, used = {}, {}
    for k in parse_ks(ks):
        idx, n_corrupt = retune_idx(task, k, seed)
        after = evaluate(retune(model, task, idx, device=dev, seed=seed), task, device=dev)
        metrics[f"relearn_healed_{k}"] = after["healed"]
        if "asr" in after:
            metrics[f"relearn_asr_{k}"] = after["asr"]
        used[str(k)] = n_corrupt
    return metrics, {**relearn_settings(ks), "n_corrupt_used": used, "wall_s": time.perf_counter() - t0}


def is_relearn_metric(name: str) -> bool:
    """Whether ``name`` is a metric this check writes."""
    return name.startswith(METRIC_PREFIXES)


__all__ = [
    "DEFAULT_KS",
    "is_relearn_metric",
    "metric_names",
    "parse_ks",
    "relearn_metrics",
    "relearn_settings",
    "retune",
    "retune_idx",
]
