"""rem: corrective machine unlearning for image classifiers (REM, Schoepf et al., ICLR 2026).

Python API::

    import rem
    model, meta = rem.load_checkpoint("model.safetensors")
    task = rem.task_of(meta)          # the checkpoint's own data and corruption
    healed, history = rem.unlearn(model, task, task.forget_idx(0.5), method="rem")  # rem.Unlearned
    print(rem.evaluate(healed, task))  # healed, utility, uxh, ...: shares in [0, 1]

    ranking = rem.discover(model, task, task.forget_idx(0.5))  # D_r, most likely corrupted first

    # your own classifier (any nn.Module) on your own images and labels:
    healed, history = rem.unlearn(my_model, (images, labels), found_idx, method="rem")

Every metric, record field and history value is a share in [0, 1] (uxh = healed × utility too); only
reports and command output show percent (:mod:`rem.units`).

"SPEC §N" in the code's documentation refers to section N of ``docs/spec.md`` (the specification of
what rem implements, in this repository and on the documentation site).
"""

from rem.api import check_match, discover, task_of, unlearn
from rem.checkpoint import load_checkpoint, save_checkpoint
from rem.data.datasets import ImageData, load_dataset, make_generated
from rem.data.tasks import Task, TaskConfig, Trigger, make_task
from rem.data.user import Preprocess, user_task
from rem.discovery import Ranking
from rem.heal import heal
from rem.methods import REGISTRY as METHODS
from rem.methods import Unlearned, get_method
from rem.metrics import evaluate
from rem.models import build_model, expand, resnet9, shrink
from rem.models.generic import GenericCapacity
from rem.train import Recipe, pretrain
from rem.version import __version__

__all__ = [
    "METHODS",
    "GenericCapacity",
    "ImageData",
    "Preprocess",
    "Ranking",
    "Recipe",
    "Task",
    "TaskConfig",
    "Trigger",
    "Unlearned",
    "build_model",
    "check_match",
    "discover",
    "evaluate",
    "expand",
    "get_method",
    "heal",
    "load_checkpoint",
    "load_dataset",
    "make_generated",
    "make_task",
    "pretrain",
    "resnet9",
    "save_checkpoint",
    "shrink",
    "task_of",
    "unlearn",
    "user_task",
    "__version__",
]
