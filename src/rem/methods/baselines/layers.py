"""The layers of a model as the baselines that train or re-initialise the last ``k`` of them see them
(``cf-k``, ``eu-k``: :mod:`.simple`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from rem.errors import ConfigError


def layer_groups(model: nn.Module) -> list[list[str]]:
    """The model's layers in forward order; each layer is a list of module / parameter names.

    - ResNet-9: ``conv1, conv2, res1a, res1b, conv3, res2a, res2b, conv4, fc`` (9 layers; a conv-bn,
      its batch norm included, is one layer).
    - ViT: the embedding (``to_tokens`` with the ``cls`` token, the position embedding ``pos`` and the
      token-axis registers ``reg``), then each transformer block ``blocks.i``, then the head (``norm``, ``head``).
    - Any other model: its top-level children that hold parameters, a ``ModuleList`` counting one
      layer per item, in registration order.
    """
    arch = getattr(model, "arch", "")
    if hasattr(model, "layer_groups"):  # GenericCapacity: the wrapped user model's own layers
        return model.layer_groups()
    if arch == "resnet9":
        return [[n] for n in ("conv1", "conv2", "res1a", "res1b", "conv3", "res2a", "res2b", "conv4", "fc")]
    if arch == "vit":
        return (
            [["to_tokens", "cls", "pos", "reg"]]
            + [[f"blocks.{i}"] for i in range(len(model.blocks))]
            + [["norm", "head"]]
        )
    out: list[list[str]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            out.extend([[f"{name}.{i}"] for i, c in enumerate(child) if any(True for _ in c.parameters())])
        elif any(True for _ in child.parameters()):
            out.append([name])
    return out


def last_layers(model: nn.Module, k: int) -> list[str]:
    """Names (modules, or top-level parameters such as the ViT's ``cls``) of the last ``k`` layers.

    Layers are those of :func:`layer_groups`; a name covers every parameter and buffer under it.
    """
    groups = layer_groups(model)
    if not 1 <= k <= len(groups):
        raise ConfigError(f"k must be in [1, {len(groups)}] for this model's {len(groups)} layers, got {k}")
    return [n for g in groups[-k:] for n in g]


def under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether the parameter / buffer ``name`` belongs to one of the modules or parameters ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)
