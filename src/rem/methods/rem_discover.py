"""``rem-discover``: REM whose shared mask and removal term grow to include the samples it discovers.

REM has no detection: the undiscovered corrupted samples D_c \\ D_f keep their own random masks, so the
redirect step re-teaches their corruption to θ_o1 through them; the oracle ``rem-ideal`` (all of D_c
shares the mask and is in the removal term) measures what that costs. ``rem-discover`` closes part of
the gap with a discovery score (:mod:`rem.discovery`, ``rem`` by default):

- at the start of each of the first ``discover_rounds`` rounds, before step 2, it ranks D_r with the
  score on the current model (round 0: the starting model) and adds the best-ranked samples not yet
  added, at most ``discover_k`` in all (default |D_f|) and only those scoring at least
  ``discover_threshold`` (if set), to the samples that share D_f's mask (steps 1 and 3, the reference's
  logits included) and to the removal term of step 3;
- step 2 (NPO) stays on D_f alone and model selection keeps its proxy on D_f, so a wrongly flagged clean
  sample costs little: it is fitted through the shared mask and pushed out of θ_o1 in step 3 only,
  one sample among all of D_tr;
- the round's record says what was added (``discover_added``, with ``discover_scores``), how many share
  the mask now (``discover_shared``) and what the score found (``discover_info``, ``discover_wall_s``).

With ``discover_k=0`` nothing is scored and nothing added: the run *is* ``rem`` (same weights, bit for
bit). The ``rem`` score gets rem-discover's own REM settings (β, p, r, learning rate, batch size, γ,
seed, ...), so in round 0 it runs exactly REM's step 2 of that round on a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from rem.errors import ConfigError
from rem.methods.base import Context, register, setting
from rem.methods.rem import REM, REMConfig
from rem.methods.rem_reset import REMReinit, REMReinitConfig


@dataclass(frozen=True)
class REMDiscoverConfig(REMConfig):
    """REM's settings and the discovery budget."""

    discover_k: int | None = setting(
        None, "budget: at most this many samples of D_r join D_f's shared mask and removal term (None: |D_f|; 0: none)"
    )
    discover_threshold: float | None = setting(
        None, "only samples scoring at least this join, in the score's units (rem: IQRs over D_r's median)"
    )
    discover_score: str = setting("rem", "the discovery score ranking D_r (see `rem discover --help`)")
    discover_rounds: int = setting(1, "rounds at whose start D_r is ranked again and the budget's rest added (>= 1)")

    def validate(self) -> None:
        super().validate()
        if self.discover_k is not None and self.discover_k < 0:
            raise ConfigError(f"rem-discover: discover_k must be >= 0 (or None for |D_f|), got {self.discover_k}")
        if self.discover_rounds < 1:
            raise ConfigError(f"rem-discover: discover_rounds must be >= 1, got {self.discover_rounds}")
        if self.ideal:
            raise ConfigError("rem-discover: ideal (the oracle's whole D_c) leaves nothing to discover")
        from rem.discovery.base import score_names

        if self.discover_score not in score_names():
            raise ConfigError(
                f"rem-discover: unknown discover_score {self.discover_score!r}; registered: {', '.join(score_names())}"
            )


@register
class REMDiscover(REM):
    """REM that adds the best-ranked samples of D_r (a discovery score) to D_f's shared mask and removal term."""

    name = "rem-discover"
    order = 3
    config_cls = REMDiscoverConfig
    summary = "REM + discovery: the top of a discovery ranking of D_r joins D_f's shared mask and removal term"
    uses = "D_f, D_tr"

    @classmethod
    def _tags(cls, config: dict) -> list[str]:
        """REM's tags, and a budget, threshold, score or number of rounds other than the method's default:
        ``rem-discover (k=40)``."""
        tags = super()._tags(config)
        default = {f.name: f.default for f in fields(cls.config_cls)}

        def changed(key):
            return config.get(key, default[key]) != default[key]

        if changed("discover_k"):
            tags.append(f"k={config['discover_k']}")
        if changed("discover_threshold"):
            tags.append(
                "no threshold"
                if config["discover_threshold"] is None
                else f"threshold={config['discover_threshold']:g}"
            )
        if changed("discover_score"):
            tags.append(config["discover_score"])
        if changed("discover_rounds"):
            tags.append(f"{config['discover_rounds']} rounds")
        return tags

    def _scorer(self):
        """The discovery score, with rem-discover's own values of the settings it shares (REM's, the seed)."""
        from rem.discovery.base import SCORES, get_score

        cfg: REMDiscoverConfig = self.config
        own = {f.name for f in fields(SCORES[cfg.discover_score].config_cls)}
        return get_score(cfg.discover_score, **{k: getattr(cfg, k) for k in own if hasattr(cfg, k)})

    def _budget(self, forget_idx, shared) -> int:
        """How many samples of D_r may join in all: ``discover_k``, or |D_f| when it is None."""
        k = self.config.discover_k
        return len(forget_idx) if k is None else k

    def _grow(self, rnd, model, task, forget_idx, shared, removal, ctx) -> dict:
        cfg: REMDiscoverConfig = self.config
        budget = self._budget(forget_idx, shared)
        n_added = int(shared.sum()) - len(forget_idx)
        if budget == 0 or rnd >= cfg.discover_rounds or n_added >= budget:
            return {}
        ranking = self._scorer().rank(
            model,  # the expanded model: the rem score's reference is REM's own θ_ref in round 0
            task,
            forget_idx,
            Context(device=ctx.device, pretrain_type=ctx.pretrain_type, pretrain_recipe=ctx.pretrain_recipe),
        )
        fresh = ~shared.cpu()[ranking.idx]
        idx, score = ranking.idx[fresh], ranking.score[fresh]
        take = min(budget - n_added, len(idx))
        idx, score = idx[:take], score[:take]
        if cfg.discover_threshold is not None:
            keep = score >= cfg.discover_threshold
            idx, score = idx[keep], score[keep]
        dev_idx = idx.to(shared.device)
        shared[dev_idx] = True
        removal[dev_idx] = 1.0
        return {
            "discover_added": idx.tolist(),
            "discover_scores": [round(float(s), 6) for s in score],
            "discover_shared": int(shared.sum()),
            "discover_wall_s": ranking.wall_s,
            "discover_info": ranking.info,
        }


@dataclass(frozen=True)
class REMReinitDiscoverConfig(REMDiscoverConfig, REMReinitConfig):
    """rem-discover's budget and rem-reinit's reset (θ_ref frozen after the reset, as in rem-reinit)."""


@register
class REMReinitDiscover(REMDiscover, REMReinit):
    """**[beyond]** ``rem-discover`` and ``rem-reinit`` together: what the starting model memorised and a
    discovery score finds joins D_f's shared mask and removal term; then θ_o1's last ``reinit_k`` layers are
    re-initialised, so what it memorised and nobody found is forgotten too.

    Round 0's ranking runs on the expanded *starting* model, before the reset (a reset model has forgotten
    the memorised samples the score looks for): the samples added are ``rem-discover``'s. Later rounds
    (``discover_rounds`` > 1) rank the model being trained. With ``discover_k=0`` it is ``rem-reinit``.
    """

    name = "rem-reinit-discover"
    order = 3
    config_cls = REMReinitDiscoverConfig
    init_name = "rem-reinit"  # rem-reinit's fresh initialisation: with discover_k=0 the run is rem-reinit's
    summary = "[beyond] rem-discover + rem-reinit: grow D_f by discovery, then re-initialise theta_o1's last k layers"

    def _grow_before_reset(self) -> bool:
        return True


@dataclass(frozen=True)
class REMReinitOutlierConfig(REMReinitDiscoverConfig):
    """rem-reinit-discover's settings; the samples that join are the outliers of the score, not a budget."""

    discover_k: int | None = setting(
        None, "cap on the samples of D_r that join D_f's shared mask (None: no cap, the threshold alone decides)"
    )
    discover_threshold: float | None = setting(
        3.0, "the outlier test: samples scoring at least this join (rem score: robust z units over D_r)"
    )

    def validate(self) -> None:
        super().validate()
        if self.discover_threshold is None:
            raise ConfigError(
                "rem-reinit-outlier: discover_threshold is its outlier test and cannot be None "
                "(without it every sample of D_r would join; rem-reinit-discover takes a budget instead)"
            )


@register
class REMReinitOutlier(REMReinitDiscover):
    """**[beyond]** ``rem-reinit-discover`` whose discovery is an outlier test instead of a budget: every sample
    of D_r whose score (on the expanded starting model) reaches ``discover_threshold`` joins D_f's shared
    mask and removal term, however many that is; then θ_o1's last ``reinit_k`` layers are re-initialised.

    Regular corruption (a backdoor) stands out of the score and is routed through the shared mask in bulk,
    far more of it than |D_f| at a low discovery rate; irregular corruption (a class swap, random labels)
    does not, few samples pass, and the run is close to ``rem-reinit``, whose reset forgets what nobody
    found. With a threshold above every score it is ``rem-reinit``; with ``discover_k`` set it is
    ``rem-reinit-discover`` at that budget and threshold (same draws, bit for bit).
    """

    name = "rem-reinit-outlier"
    order = 3
    config_cls = REMReinitOutlierConfig
    summary = (
        "[beyond] rem-reinit-discover by an outlier test: every sample of D_r scoring >= the threshold joins D_f's "
        "shared mask, then theta_o1's last k layers are re-initialised"
    )

    def _budget(self, forget_idx, shared) -> int:
        k = self.config.discover_k
        return len(shared) if k is None else k


__all__ = [
    "REMDiscover",
    "REMDiscoverConfig",
    "REMReinitDiscover",
    "REMReinitDiscoverConfig",
    "REMReinitOutlier",
    "REMReinitOutlierConfig",
]
