"""Feature Shift Tuning, FST (Min et al., NeurIPS 2023): fine-tune the whole model with a re-initialised
linear head pushed away from the original (compromised) one, so that the features shift off the backdoor.

The head w is re-initialised (default initialisation, bias too) and the whole model is trained on

    CE(f(x; θ_e, w), y) + α · ⟨w, w_ori⟩     subject to ‖w‖ = ‖w_ori‖   (paper Eq. 3)

the constraint kept by rescaling w to the original norm after every step (and once after re-initialising).
α = 0.1 is the authors' value for CIFAR-10 BadNets (their README's command); ``alpha=0`` is FT-init, the
paper's "fine-tuning with a re-initialised head".

The tuning itself is rem's shared recipe: ``steps`` steps of SGD at the shared learning rate, batch size,
momentum and weight decay on D_r, augmented as in pretraining, as ``finetune`` — the paper tunes 10 epochs
on 2 % of the training data at lr 0.01. Uses D_r (``clean_subset=true``: truly clean, an upper bound). The
head is the model's last ``nn.Linear`` (ResNet-9's ``fc``, the ViT's ``head``, a user's classifier), which
must output the class logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rem.methods.base import register, setting
from rem.methods.common import LossLog, batches, cycle, derived_seed, optimizer_for
from rem.methods.defences.common import Defence, DefenceConfig, classifier_head, clean_pool, deployed
from rem.runtime import autocast


@dataclass(frozen=True)
class FSTConfig(DefenceConfig):
    alpha: float = setting(0.1, "weight α of the feature-shift term ⟨w, w_ori⟩ (0: FT-init)")


def reinit_head_(head: torch.nn.Linear, seed: int, norm: float) -> None:
    """Default re-initialisation of ``head`` under ``seed``, its weight rescaled to ``norm``."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        head.reset_parameters()
        head.weight.mul_(norm / head.weight.norm().clamp_min(1e-12))


@register
class FST(Defence):
    """Feature Shift Tuning (Min et al. 2023): re-initialise the linear head, fine-tune the whole model with
    CE + α·⟨w, w_ori⟩ (α = 0.1) keeping ‖w‖ = ‖w_ori‖. Uses D_r as its clean data (``clean_subset=true``:
    truly clean, an upper bound). Details: :mod:`rem.methods.defences.fst`."""

    name = "fst"
    order = 43
    config_cls = FSTConfig
    summary = "Feature Shift Tuning: re-initialised head pushed away from the original, whole model fine-tuned"
    uses = "D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: FSTConfig = self.config
        dev = ctx.device
        model = deployed(model)
        name, head = classifier_head(model, task.data.num_classes)
        w_ori = head.weight.detach().clone()
        norm = float(w_ori.norm())
        reinit_head_(head, derived_seed(cfg.seed, "fst-head"), norm)
        pool = clean_pool(task, forget_idx, cfg.clean_subset)
        data = batches(task, pool, cfg, dev)
        opt = optimizer_for(model, cfg)
        model.train()
        log = LossLog(history, len(data), phase="tune")
        for step, (x, y, _) in cycle(data, cfg.steps):
            with autocast(dev):
                ce = F.cross_entropy(model(x).float(), y)
            shift = (head.weight.float() * w_ori.float()).sum()
            loss = ce + cfg.alpha * shift
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # back onto the sphere ‖w‖ = ‖w_ori‖
                head.weight.mul_(norm / head.weight.norm().clamp_min(1e-12))
            log.add(step, loss.item(), inner=shift.item())
            ctx.step(step + 1, cfg.steps, loss)
        log.flush(cfg.steps - 1, inner=(head.weight.detach() * w_ori).sum().item())
        history.append({"phase": "setup", "head": name, "norm": norm, "n_pool": len(pool)})
        return model


__all__ = ["FST", "FSTConfig", "reinit_head_"]
