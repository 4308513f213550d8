"""Adversarial Neuron Pruning, ANP (Wu & Wang, NeurIPS 2021): find the neurons that an adversarial
perturbation of the network turns into a backdoor, and prune them.

Every batch-norm neuron k gets a mask m_k ∈ [0, 1] (start 1) and multiplicative perturbations δ_k of its
weight and ξ_k of its bias, |δ|, |ξ| ≤ ε: the neuron computes γ_k·(m_k + δ_k)·x̂ + β_k·(1 + ξ_k). ANP solves
(paper Eq. 5)

    min_m  α · L(m, 0, 0) + (1 − α) · max_{δ,ξ ∈ [−ε, ε]} L(m, δ, ξ)

on clean data: per iteration, δ and ξ start uniform in [−ε, ε] and take ``anp_steps`` = 1 gradient-ascent
step on the cross-entropy — the gradient's sign times ε / anp_steps, as the authors' code — clipped to
[−ε, ε]; then one SGD step
(lr 0.2, momentum 0.9) on the masks, clipped to [0, 1]. Afterwards every neuron with m_k < ``threshold`` =
0.2 is pruned: its batch-norm weight γ_k is set to 0 in the model (the rest of the model is unchanged).
Defaults: ε = 0.4, α = 0.2, mask lr 0.2, batch 128, threshold 0.2 (the paper and BackdoorBench's ANP
config: ``anp_eps``, ``anp_alpha``, ``anp_steps``, ``lr``, ``pruning_by: threshold``).

**[choice]** Batch norm uses batch statistics while the masks are optimised (the authors' reference code
trains the masks with the model in training mode), on a throwaway copy: the returned model keeps its own
running statistics. **Budget [choice]:** ``steps`` mask iterations (the framework's step budget; the paper
runs 2,000 — ``--set anp.steps=2000`` for the paper's count).

Needs batch-norm layers (its neurons are BN channels): a model without any (the ViT, a user's model with
LayerNorm only) is refused with a clear error. Uses D_r (``clean_subset=true``: truly clean, an upper bound).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from rem.data.loader import train_batches
from rem.errors import ConfigError
from rem.methods.base import register, setting
from rem.methods.common import cycle, derived_seed
from rem.methods.defences.common import Defence, DefenceConfig, batch_norms, clean_pool, deployed


@dataclass(frozen=True)
class ANPConfig(DefenceConfig):
    anp_batch_size: int = setting(128, "batch size of the mask optimisation (the paper's)")
    eps: float = setting(0.4, "bound ε of the neuron perturbations δ, ξ")
    alpha: float = setting(0.2, "weight α of the natural loss (1 − α: the adversarial loss)")
    anp_steps: int = setting(1, "gradient-ascent steps of the perturbation per iteration")
    mask_lr: float = setting(0.2, "SGD learning rate of the masks (momentum 0.9)")
    threshold: float = setting(0.2, "neurons whose mask ends below this are pruned")

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("anp: alpha and threshold are shares in [0, 1]")
        if self.eps < 0 or self.anp_steps < 1 or self.mask_lr <= 0 or self.anp_batch_size < 1:
            raise ConfigError("anp: eps must be >= 0, anp_steps >= 1, mask_lr > 0, anp_batch_size >= 1")


class NeuronPerturbation:
    """Masks and perturbations of every batch-norm neuron of ``model``, applied through
    :func:`torch.func.functional_call` (the model's modules are never replaced)."""

    def __init__(self, model: torch.nn.Module, eps: float) -> None:
        self.layers = batch_norms(model)
        if not self.layers:
            raise ConfigError(
                f"anp needs batch-norm layers (it masks and perturbs BN neurons); {type(model).__name__} has none"
            )
        self.model, self.eps = model, eps
        dev = next(model.parameters()).device
        self.mask = {n: torch.ones(m.num_features, device=dev, requires_grad=True) for n, m in self.layers}
        self.noise_w = {n: torch.zeros(m.num_features, device=dev, requires_grad=True) for n, m in self.layers}
        self.noise_b = {n: torch.zeros(m.num_features, device=dev, requires_grad=True) for n, m in self.layers}

    def noises(self) -> list[torch.Tensor]:
        return [*self.noise_w.values(), *self.noise_b.values()]

    def reset_noise(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            for t in self.noises():
                t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1).mul_(self.eps).to(t.device))

    def clip(self) -> None:
        with torch.no_grad():
            for t in self.noises():
                t.clamp_(-self.eps, self.eps)
            for t in self.mask.values():
                t.clamp_(0.0, 1.0)

    def __call__(self, x: torch.Tensor, perturbed: bool) -> torch.Tensor:
        params = {}
        for n, m in self.layers:
            coeff_w = self.mask[n] + self.noise_w[n] if perturbed else self.mask[n]
            coeff_b = 1.0 + self.noise_b[n] if perturbed else torch.ones_like(self.mask[n])
            params[f"{n}.weight"] = m.weight.detach() * coeff_w
            params[f"{n}.bias"] = m.bias.detach() * coeff_b
        return functional_call(self.model, params, (x,))


def optimise_masks(model, data, cfg: ANPConfig, ctx, history) -> dict[str, torch.Tensor]:
    """ANP's min-max over ``cfg.steps`` batches of ``data``; returns the final mask per BN layer."""
    work = copy.deepcopy(model).train().requires_grad_(False)  # batch statistics; a throwaway copy
    pert = NeuronPerturbation(work, cfg.eps)
    mask_opt = torch.optim.SGD(list(pert.mask.values()), lr=cfg.mask_lr, momentum=0.9)
    noise_opt = torch.optim.SGD(pert.noises(), lr=cfg.eps / cfg.anp_steps)
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "anp-noise"))
    total = 0.0
    for step, (x, y, _) in cycle(data, cfg.steps):
        if cfg.eps > 0:  # inner maximisation over the neuron perturbations
            pert.reset_noise(gen)
            for _ in range(cfg.anp_steps):
                loss_adv = -F.cross_entropy(pert(x, perturbed=True).float(), y)
                noise_opt.zero_grad(set_to_none=True)
                loss_adv.backward()
                for t in pert.noises():  # a signed step, as the authors' code (FGSM-like, to the box's edge)
                    t.grad = t.grad.sign()
                noise_opt.step()
                pert.clip()
        loss_rob = F.cross_entropy(pert(x, perturbed=cfg.eps > 0).float(), y)
        loss_nat = F.cross_entropy(pert(x, perturbed=False).float(), y) if cfg.alpha > 0 else 0.0
        loss = cfg.alpha * loss_nat + (1 - cfg.alpha) * loss_rob
        mask_opt.zero_grad(set_to_none=True)
        loss.backward()
        mask_opt.step()
        pert.clip()
        total += loss.item()
        ctx.step(step + 1, cfg.steps, loss)
    history.append({"phase": "masks", "steps": cfg.steps, "loss": total / max(1, cfg.steps)})
    return {n: t.detach().clone() for n, t in pert.mask.items()}


def prune_(model: torch.nn.Module, masks: dict[str, torch.Tensor], threshold: float) -> dict[str, list[int]]:
    """Set the BN weight γ_k of every neuron whose mask is below ``threshold`` to 0; returns them by layer."""
    mods = dict(model.named_modules())
    pruned = {}
    with torch.no_grad():
        for n, m in masks.items():
            idx = (m < threshold).nonzero().squeeze(1)
            if idx.numel():
                mods[n].weight[idx.to(mods[n].weight.device)] = 0.0
                pruned[n] = idx.tolist()
    return pruned


@register
class ANP(Defence):
    """Adversarial Neuron Pruning (Wu & Wang 2021): learn a mask on every batch-norm neuron under
    adversarial neuron perturbations (ε = 0.4, α = 0.2), then prune the neurons whose mask is below 0.2.
    Needs batch-norm layers. Uses D_r as its clean data (``clean_subset=true``: truly clean, an upper bound).
    Details and budget: :mod:`rem.methods.defences.anp`."""

    name = "anp"
    order = 41
    config_cls = ANPConfig
    summary = "Adversarial Neuron Pruning: mask BN neurons under adversarial perturbation, prune masks < 0.2"
    uses = "D_r"
    acts_on_detection = True  # returns the model unchanged when it finds nothing to prune / patch

    def _unlearn(self, model, task, forget_idx, ctx, history):
        cfg: ANPConfig = self.config
        model = deployed(model)
        if not batch_norms(model):  # refuse before any work
            raise ConfigError(
                f"anp needs batch-norm layers (it masks and perturbs BN neurons); {type(model).__name__} has none"
            )
        pool = clean_pool(task, forget_idx, cfg.clean_subset)
        data = train_batches(
            task, pool, device=ctx.device, batch_size=cfg.anp_batch_size, seed=derived_seed(cfg.seed, "anp-data")
        )
        masks = optimise_masks(model, data, cfg, ctx, history)
        pruned = prune_(model, masks, cfg.threshold)
        history.append(
            {
                "phase": "prune",
                "threshold": cfg.threshold,
                "pruned": pruned,
                "n_pruned": sum(len(v) for v in pruned.values()),
                "n_neurons": sum(len(v) for v in masks.values()),
                "n_pool": len(pool),
            }
        )
        return model


__all__ = ["ANP", "ANPConfig", "NeuronPerturbation", "optimise_masks", "prune_"]
