"""fc layers for the head from the trunk's own ImageNet classifier (``finetune.init = "imagenet"``).

The paper fine-tunes fc6 and fc7 from the network pretrained on ImageNet, never from random
weights: with a few thousand training images, a head learnt from scratch on the 25,600-d SPP
vector is the weak link (its fc7 is nearly low-rank; ``benchmarks/REPORT.md``). Torchvision
trunks bring an ImageNet classifier of their own, which maps onto the pyramid:

- ``alexnet``: pool5 is a 3x3/2 max-pool of the 13x13 conv5 map of a 224 input, and the
  pyramid's 6x6 level pools a 13-cell window over exactly those bins ([0,3), [2,5), ... [10,13)),
  channel-major as torchvision flattens pool5. fc6 (9216 -> 4096) reads the 6x6 level (the
  other levels start at zero weight) and fc7 (4096 -> 4096) is copied as it is, as the paper's
  SPP-net starts from its ImageNet fc layers.
- ``squeezenet1_0``: the classifier is conv10, a 1x1 convolution (512 -> 1000) then ReLU and a
  global average. fc6 (1000 units) applies conv10 to the mean of each level's bins, the levels
  weighted equally: on a window whose conv5 cells are all alike it is conv10 at one cell, the
  network's own logits for that window before the ReLU. fc7 and the classifier start random.
  On VOC this start scored below a 512-wide head from random weights (``benchmarks/REPORT.md``):
  conv10 is one map for every cell, so fc6 starts with no spatial layout to detect by.

Weights are returned for raw (unscaled) SPP vectors; the caller divides fc6's by the
fine-tuning scale, as for any pretrained fc6.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.pyramid import ordered_levels
from ..errors import ConfigError

# which trunks' classifiers map onto the pyramid, and the level each needs
SUPPORTED = {"alexnet": 6, "squeezenet1_0": None}


def _linear_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def imagenet_fc_layers(backbone_name: str, classifier: nn.Module, channels: int, levels,
                       concat_order: str) -> dict[str, torch.Tensor]:
    """``{"fc6.weight", "fc6.bias"[, "fc7.weight", "fc7.bias"]}`` from ``classifier`` (the
    torchvision model's layers after the trunk, :attr:`spp_detect.backbones.Backbone.head`), on
    SPP vectors of ``channels`` maps pooled by ``levels`` in ``concat_order`` (each level
    ``(C, n, n)`` channel-major, :mod:`spp_detect.core.spp`).

    Raises :class:`ConfigError` (naming ``finetune.init``) for a trunk whose classifier does not
    map onto these levels."""
    if backbone_name not in SUPPORTED:
        raise ConfigError(f"finetune.init: 'imagenet' needs a trunk whose ImageNet classifier maps onto the "
                          f"pyramid ({', '.join(SUPPORTED)}); backbone.name is {backbone_name!r}")
    order = ordered_levels(levels, concat_order)
    need = SUPPORTED[backbone_name]
    if need is not None and need not in order:
        raise ConfigError(f"finetune.init: 'imagenet' with {backbone_name} reads pool5 from the pyramid's "
                          f"{need}x{need} level; spp.levels is {list(levels)}")
    layers = [m.weight.detach() for m in _linear_layers(classifier)]
    biases = [m.bias.detach() for m in _linear_layers(classifier)]
    dim = channels * sum(n * n for n in order)
    offsets, at = {}, 0
    for n in order:
        offsets[n] = at
        at += channels * n * n
    if backbone_name == "squeezenet1_0":
        w10 = layers[0].reshape(layers[0].shape[0], channels)  # (1000, C) from the (1000, C, 1, 1) conv
        fc6 = torch.zeros(w10.shape[0], dim)
        for n in order:
            # each of the level's n*n bins gets conv10 / (n*n), and each level 1 / len(levels)
            block = (w10 / (n * n * len(order))).unsqueeze(2).expand(-1, -1, n * n)
            fc6[:, offsets[n] : offsets[n] + channels * n * n] = block.reshape(w10.shape[0], -1)
        return {"fc6.weight": fc6, "fc6.bias": biases[0].clone()}
    w6, w7 = layers[0], layers[1]  # alexnet: Linear(9216, 4096), Linear(4096, 4096), Linear(4096, 1000)
    if w6.shape[1] != channels * need * need:
        raise ConfigError(f"finetune.init: {backbone_name}'s fc6 reads {w6.shape[1]} values, the "
                          f"{need}x{need} level of {channels} channels has {channels * need * need}")
    fc6 = torch.zeros(w6.shape[0], dim)
    fc6[:, offsets[need] : offsets[need] + channels * need * need] = w6
    return {"fc6.weight": fc6, "fc6.bias": biases[0].clone(), "fc7.weight": w7.clone(), "fc7.bias": biases[1].clone()}


def imagenet_pretrained(backbone_name: str, weights: str, input_convention: str, channels: int, levels,
                        concat_order: str) -> dict:
    """The trunk's ImageNet fc layers in the form :func:`spp_detect.training.finetune.init_from_pretrained`
    copies (its classifier names ImageNet's 1000 classes, so only fc6 and fc7 are taken)."""
    from ..backbones import build_backbone, resolve_weights, written_by_pretrain

    kind, path = resolve_weights(weights)
    if kind == "none":
        raise ConfigError("finetune.init: 'imagenet' needs the trunk's ImageNet weights; backbone.weights is none")
    if kind == "file" and written_by_pretrain(path):
        raise ConfigError(f"finetune.init: 'imagenet' needs the trunk's ImageNet weights, but {path} was written by "
                          "'spp-detect pretrain' (no ImageNet classifier); use finetune.init = \"pretrained\"")
    backbone = build_backbone(backbone_name, weights, input_convention, keep_classifier=True)
    if backbone.head is None:
        raise ConfigError(f"finetune.init: 'imagenet' needs backbone {backbone_name} with its ImageNet classifier")
    state = imagenet_fc_layers(backbone_name, backbone.head, channels, levels, concat_order)
    return {"state_dict": state, "labels": [], "levels": list(levels), "concat_order": concat_order}
