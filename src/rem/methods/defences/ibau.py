"""I-BAU, Implicit Backdoor Adversarial Unlearning (Zeng et al., ICLR 2022): the minimax

    min_θ  max_{‖δ‖ ≤ C}  H(δ, θ) = (1/n) Σ_i L(f_θ(x_i + δ), y_i)

over one universal perturbation δ, solved with the implicit hypergradient of the inner solution δ*(θ).

Each of ``n_rounds`` = 5 rounds:

1. **Inner maximisation.** δ starts at 0 and takes one SGD step (lr ``pert_lr`` = 10) per clean batch on
   −CE(f_θ(x + δ), ŷ) + 0.001‖δ‖², ŷ the model's own predictions on the clean x; then δ is projected onto the
   L2 ball of radius C = 10.
2. **Outer minimisation**, one step per batch: the hypergradient of the outer loss
   L_out(δ, θ) = CE(f_θ(x + δ·1[i ∈ P]), y) — δ added to a random share ``portion`` = 1 % of the batch (at
   least one sample) — through δ*(θ), the fixed point of the inner gradient-descent map
   Φ(δ, θ) = δ − η ∇_δ[−CE(f_θ(x₀ + δ), y₀) + 10⁻⁴‖δ‖²] (η = 0.1, x₀ the round's first batch):

       ∇_θ ψ = ∇_θ L_out + (∂Φ/∂θ)ᵀ v,   v = Σ_{k<K} (∂Φ/∂δ)ᵀᵏ ∇_δ L_out   (Neumann series, K = 5 terms,
                                                                       the fixed-point iteration of v)

   then one Adam step (lr 0.001) on θ.

Defaults are the paper's and the authors' MIT-licensed release (``n_rounds`` 5, ``K`` 5, Adam lr 0.001,
batch 100, the inner step sizes 10 and 0.1, the regularisers 0.001 and 0.0001, the radius 10, the 1 %
portion). δ is in [0, 1] pixel units, as the release's unnormalised images (rem's models take normalised
images: δ is divided by the data set's per-channel std on the way in); batch norm is in inference mode
throughout, as the release's ``model.eval()`` (its running statistics do not move). The release's
``defense.py`` leaves the L2 projection commented out; here it is on, as the paper's constraint ‖δ‖ ≤ C
(radius 10 in pixel units is loose: the whole image at ±0.3).

**Budget [choice]:** ``steps`` outer (hypergradient) steps in all, split evenly over the rounds, each round's
inner pass over as many batches — the release runs its rounds over the whole clean set (5,000 CIFAR-10
images, 50 batches of 100). Uses D_r as its clean data (``clean_subset=true``: truly clean, an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from rem.errors import ConfigError
from rem.methods.base import register, setting
from rem.methods.common import derived_seed
from rem.methods.defences.common import Defence, DefenceConfig, clean_pool, deployed, endless, plain_shuffled


@dataclass(frozen=True)
class IBAUConfig(DefenceConfig):
    n_rounds: int = setting(5, "rounds of (inner maximisation, outer minimisation)")
    K: int = setting(5, "terms of the Neumann series / fixed-point iterations of the hypergradient")
    outer_lr: float = setting(0.001, "Adam learning rate of the model (outer minimisation)")
    ibau_batch_size: int = setting(100, "batch size (the paper's)")
    pert_lr: float = setting(10.0, "SGD learning rate of the inner maximisation over δ")
    radius: float = setting(10.0, "L2 radius C of the universal perturbation δ")
    inner_lr: float = setting(0.1, "step η of the gradient-descent map Φ whose fixed point is δ*")
    portion: float = setting(0.01, "share of each outer batch that gets δ (at least one sample)")

    def validate(self) -> None:
        if self.n_rounds < 1 or self.K < 0 or self.ibau_batch_size < 1:
            raise ConfigError("i-bau: n_rounds and ibau_batch_size must be >= 1, K >= 0")
        if min(self.outer_lr, self.pert_lr, self.radius, self.inner_lr) <= 0:
            raise ConfigError("i-bau: outer_lr, pert_lr, radius and inner_lr must be positive")
        if not 0.0 <= self.portion <= 1.0:
            raise ConfigError(f"i-bau: portion is a share in [0, 1], got {self.portion}")


def inner_loss(model, delta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, scale) -> torch.Tensor:
    """The inner objective the fixed-point map descends: −CE(f(x + δ), y) + 10⁻⁴‖δ‖² (δ in pixel units,
    ``scale`` taking it to the normalised input space)."""
    return -F.cross_entropy(model(x + delta * scale).float(), y) + 1e-4 * delta.pow(2).sum()


def hypergradient(model, params, delta, x0, y0, outer, cfg: IBAUConfig, scale) -> list[torch.Tensor]:
    """∇_θ of ``outer(δ)`` through δ*(θ), by K fixed-point iterations (the Neumann series) of
    v ← (∂Φ/∂δ)ᵀ v + ∇_δ L_out, with Φ(δ, θ) = δ − η ∇_δ inner_loss(δ, θ)."""
    delta = delta.detach().requires_grad_(True)
    o_loss = outer(delta)
    g_delta, *g_theta = torch.autograd.grad(o_loss, [delta, *params], allow_unused=True)
    g_theta = [torch.zeros_like(p) if g is None else g for g, p in zip(g_theta, params)]
    (d_inner,) = torch.autograd.grad(inner_loss(model, delta, x0, y0, scale), delta, create_graph=True)
    mapped = delta - cfg.inner_lr * d_inner  # Φ(δ, θ), with its graph to δ and θ
    v = torch.zeros_like(delta)
    for _ in range(cfg.K):
        (jv,) = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)
        v = jv + g_delta
    cross = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [gt if c is None else gt + c for gt, c in zip(g_theta, cross)]


@register
class IBAU(Defence):
    """I-BAU (Zeng et al. 2022): minimax over a universal input perturbation, the model updated with the
    implicit hypergradient (fixed-point / Neumann approximation, K = 5), 5 rounds, Adam lr 0.001. Uses D_r as
    its clean data (``clean_subset=true``: truly clean, an upper bound). Details and budget:
    :mod:`rem.methods.defences.ibau`."""

    name = "i-bau"
    order = 42
    config_cls = IBAUConfig
    summary = "I-BAU: adversarial unlearning of a universal perturbation with the implicit hypergradient"
    uses = "D_r"

    def _unlearn(self, model, task, forget_idx, ctx, history):
        # the hypergradient differentiates twice: attention must use the math kernel (the fused ones have no
        # double backward), which computes the same function
        with sdpa_kernel([SDPBackend.MATH]):
            return self._run(model, task, forget_idx, ctx, history)

    def _run(self, model, task, forget_idx, ctx, history):
        cfg: IBAUConfig = self.config
        dev = ctx.device
        model = deployed(model).eval()  # batch norm in inference mode throughout ([choice], module doc)
        params = [p for p in model.parameters() if p.requires_grad]
        pool = clean_pool(task, forget_idx, cfg.clean_subset)
        batches = plain_shuffled(task, pool, cfg.ibau_batch_size, dev, derived_seed(cfg.seed, "ibau-data"))
        scale = 255.0 / batches.norm.std  # δ in [0, 1] pixel units, as the release's unnormalised images
        data = endless(batches)
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "ibau-portion"))
        opt = torch.optim.Adam(params, lr=cfg.outer_lr)
        per_round = max(1, math.ceil(cfg.steps / cfg.n_rounds))
        done = 0
        for rnd in range(cfg.n_rounds):
            n = min(per_round, cfg.steps - done) if cfg.steps else 0
            if n <= 0:
                break
            round_batches = [next(data) for _ in range(n)]
            delta = self._max_perturbation(model, round_batches, cfg, scale)
            x0, y0, _ = round_batches[0]
            losses = []
            for x, y, _ in round_batches:
                k = max(1, round(cfg.portion * len(x))) if cfg.portion > 0 else 0
                chosen = torch.zeros(len(x), 1, 1, 1, device=dev)
                chosen[torch.randperm(len(x), generator=gen)[:k].to(dev)] = 1.0

                def outer(d, x=x, y=y, chosen=chosen):
                    return F.cross_entropy(model(x + chosen * d * scale).float(), y)

                grads = hypergradient(model, params, delta, x0, y0, outer, cfg, scale)
                for p, g in zip(params, grads):
                    p.grad = g.detach()
                opt.step()
                opt.zero_grad(set_to_none=True)
                done += 1
                with torch.no_grad():
                    losses.append(outer(delta).item())
                ctx.step(done, cfg.steps, losses[-1])
            history.append(
                {"phase": "round", "round": rnd, "delta_norm": float(delta.norm()), "outer_loss": sum(losses) / n}
            )
        history.append({"phase": "setup", "n_pool": len(pool), "steps": done})
        return model

    @staticmethod
    def _max_perturbation(model, round_batches, cfg: IBAUConfig, scale) -> torch.Tensor:
        """The round's universal perturbation: one SGD step per batch on −CE(f(x + δ), f's predictions) +
        0.001‖δ‖², from δ = 0, then projected onto the L2 ball of radius C."""
        x_first = round_batches[0][0]
        delta = torch.zeros_like(x_first[:1], memory_format=torch.contiguous_format).requires_grad_(True)
        opt = torch.optim.SGD([delta], lr=cfg.pert_lr)
        for x, _, _ in round_batches:
            with torch.no_grad():
                pred = model(x).argmax(1)
            loss = -F.cross_entropy(model(x + delta * scale).float(), pred) + 1e-3 * delta.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            delta = delta * min(1.0, cfg.radius / max(float(delta.norm()), 1e-12))
        return delta.detach()


__all__ = ["IBAU", "IBAUConfig", "hypergradient", "inner_loss"]
