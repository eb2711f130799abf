"""Conv trunks cut at total stride 16, and what the rest of the pipeline needs to know about them.

A :class:`Backbone` wraps a trunk (an ``nn.Module`` from image to conv5 map) with:

- ``out_channels``: channels of its output map;
- ``stride`` and ``offset``: conv cell ``j`` is centred on input pixel ``offset + stride * j``
  (0-based pixel coordinates, pixel ``i``'s centre at ``i``), and ``receptive_field`` (pixels).
  All three are computed by walking the trunk's Conv2d / MaxPool2d / AvgPool2d layers
  (kernel, stride, padding, dilation) in order (:func:`layer_ops`, :func:`ops_geometry`);
  nothing is typed in. The tests check them against the response of the real network to
  one-hot inputs;
- ``input_convention``: how uint8 RGB pixels become the tensor the weights expect (channel
  order, 0..1 or 0..255, mean, std), with :meth:`Backbone.preprocess`.

Backbones (``--backbone``): ``zf5`` (the paper's ZF-5 as released: conv1 96 7x7/2 pad 1,
within-channel LRN, ceil-mode 3x3/2 pooling, conv2 256 5x5/2 pad 0, ..., conv5 256; stride 16,
offset 20, i.e. the released code's 1-based "16*(i-1) + 21"; ``width`` and ``batch_norm``
make the CPU-sized variants, see :func:`zf5_trunk`), and from torchvision
``alexnet`` (through conv5 + ReLU, 256 ch), ``vgg16`` (through conv5_3 + ReLU, 512 ch),
``squeezenet1_0`` (the whole ``features``, 512 ch) and ``resnet50`` (through ``layer3``,
1024 ch).

Weights (``--weights``): ``none`` (random init), ``imagenet`` (torchvision's published
weights, downloaded the normal way), a state_dict file (torchvision key names, or this
project's ``backbone.pt``), or a run folder (``RUN/pretrain/backbone.pt``, written by
``spp-detect pretrain``). A file that does not fit is an :class:`ArtifactError` listing the
first mismatching keys.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import BACKBONE_NAMES
from .errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

BACKBONES: tuple[str, ...] = BACKBONE_NAMES  # the names backbone.name accepts (spp_detect/config.py)
BACKBONE_FORMAT = "spp-detect-backbone"  # the "format" key of a backbone.pt this project writes
BACKBONE_FORMAT_VERSION = 1
PRETRAIN_FILE = ("pretrain", "backbone.pt")  # RUN/pretrain/backbone.pt


# ---------------------------------------------------------------------------------------------
# input conventions


@dataclass(frozen=True)
class InputConvention:
    """How uint8 RGB pixels are turned into a network input.

    ``x = (pixel * max_value / 255 - mean) / std`` per channel, after reordering the channels
    to ``channel_order``; ``mean`` and ``std`` are given in that channel order and in units of
    the 0..``max_value`` range.
    """

    name: str
    channel_order: str  # "RGB" | "BGR"
    max_value: float  # 1.0: pixels scaled to 0..1; 255.0: raw 0..255
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def preprocess(self, images, device=None, dtype=torch.float32) -> torch.Tensor:
        """uint8 RGB images -> float (N, 3, H, W) in this convention.

        ``images``: one (H, W, 3) array or tensor, an (N, H, W, 3) batch, or a list of
        same-size (H, W, 3) arrays. Values must be uint8 (as :func:`spp_detect.datasets.load_image`
        returns them).
        """
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("preprocess got an empty list of images")
            shapes = {tuple(np.shape(im)) for im in images}
            if len(shapes) != 1:
                raise ValueError(f"images in one batch must share a size, got {sorted(shapes)}")
            images = np.stack([np.asarray(im) for im in images]) if not torch.is_tensor(images[0]) else torch.stack(list(images))
        x = torch.as_tensor(images) if not torch.is_tensor(images) else images
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB images of shape (H, W, 3) or (N, H, W, 3), got {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels (0..255), got dtype {x.dtype}")
        x = x.to(device=device).permute(0, 3, 1, 2).to(dtype)
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        x = x * (self.max_value / 255.0)
        return ((x - mean) / std).contiguous()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputConvention:
        return cls(
            name=str(d["name"]),
            channel_order=str(d["channel_order"]),
            max_value=float(d["max_value"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


CONVENTIONS: dict[str, InputConvention] = {
    # torchvision's ImageNet weights: RGB, 0..1, ImageNet mean and std
    "torchvision": InputConvention("torchvision", "RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Caffe ImageNet models (e.g. ../shared/weights/squeezenet1_0-imagenet-caffe.pth): BGR, 0..255
    "caffe": InputConvention("caffe", "BGR", 255.0, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0)),
    # the SPP-net released detection code: BGR, 0..255, minus a constant 128
    "released": InputConvention("released", "BGR", 255.0, (128.0, 128.0, 128.0), (1.0, 1.0, 1.0)),
}


def get_convention(name: str) -> InputConvention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ConfigError(
            f"backbone.input_convention: unknown value {name!r}; use auto or one of {', '.join(CONVENTIONS)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# layer arithmetic


@dataclass(frozen=True)
class LayerOp:
    """One layer that moves or resamples the grid, per axis (rows, columns)."""

    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def out_len(self, n: int, axis: int) -> int:
        """Output length along ``axis`` for an input of ``n`` cells (PyTorch's formulas); 0 if none."""
        k = self.dilation[axis] * (self.kernel[axis] - 1) + 1
        s, p = self.stride[axis], self.padding[axis]
        span = n + 2 * p - k
        if not self.ceil_mode:
            return max(0, span // s + 1)
        # ceil mode keeps a last window that runs past the end (even one larger than the input),
        # as long as it starts inside the input or the left padding (PyTorch and Caffe agree)
        out = -(-span // s) + 1
        if out > 0 and (out - 1) * s >= n + p:
            out -= 1
        return max(0, out)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _op_from_module(name: str, m: nn.Module) -> LayerOp:
    padding = m.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:
            raise ValueError(f"layer {name}: padding={padding!r} is not supported by the geometry walk")
    dilation = getattr(m, "dilation", 1)
    return LayerOp(
        name=name,
        kernel=_pair(m.kernel_size),
        stride=_pair(m.stride if m.stride is not None else m.kernel_size),
        padding=_pair(padding),
        dilation=_pair(dilation),
        ceil_mode=bool(getattr(m, "ceil_mode", False)),
    )


# Leaf layers that keep every cell where it is (pointwise, per-channel, or same-size local ops).
_GRID_PRESERVING = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish,
    nn.BatchNorm2d, nn.GroupNorm, nn.LocalResponseNorm, nn.Dropout, nn.Dropout2d, nn.Identity,
)


def _parallel(name: str, branches: list[list[LayerOp]]) -> list[LayerOp]:
    """Branches whose outputs are added or concatenated must share their grid.

    Returns the branch with the widest receptive field, which is the block's receptive field.
    """
    geoms = [(ops_geometry(b, 0)[:2], ops_geometry(b, 1)[:2]) for b in branches]
    sizes = [[_out_size(b, n, n) for n in range(1, 65)] for b in branches]
    if any(g != geoms[0] for g in geoms) or any(s != sizes[0] for s in sizes):
        raise ValueError(f"block {name}: parallel branches have different grids {geoms}")
    return max(branches, key=lambda b: ops_geometry(b, 0)[2])


def layer_ops(module: nn.Module, name: str = "") -> list[LayerOp]:
    """The grid-changing layers of a trunk, in the order an input meets them.

    Containers are walked in registration order; torchvision's branchy blocks (SqueezeNet
    ``Fire``, ResNet ``Bottleneck`` / ``BasicBlock``) are walked along their main path after
    checking that the parallel branch has the same grid. A leaf layer of unknown effect is an
    error rather than a silent guess.
    """
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return [_op_from_module(name, module)]
    kind = type(module).__name__
    if kind == "Fire":
        squeeze = layer_ops(module.squeeze, f"{name}.squeeze")
        expand = _parallel(name, [layer_ops(module.expand1x1, f"{name}.expand1x1"), layer_ops(module.expand3x3, f"{name}.expand3x3")])
        return squeeze + expand
    if kind in ("Bottleneck", "BasicBlock"):
        main = []
        for part in ("conv1", "conv2", "conv3"):
            if hasattr(module, part):
                main += layer_ops(getattr(module, part), f"{name}.{part}")
        side = layer_ops(module.downsample, f"{name}.downsample") if module.downsample is not None else []
        return _parallel(name, [main, side])
    children = list(module.named_children())
    if not children:
        if isinstance(module, _GRID_PRESERVING) or getattr(module, "preserves_grid", False):
            return []
        raise ValueError(f"layer {name or kind} ({kind}): unknown effect on the grid; cannot derive stride and offset")
    ops = []
    for child_name, child in children:
        ops += layer_ops(child, f"{name}.{child_name}" if name else child_name)
    return ops


def ops_geometry(ops: list[LayerOp], axis: int) -> tuple[int, float, int]:
    """(total stride, centre of cell 0 in input pixels, receptive field) along ``axis``.

    Walking in order with ``jump`` (input pixels per cell) and ``centre``: a layer of kernel
    ``k`` (dilated), stride ``s`` and padding ``p`` puts its output cell 0 on its input position
    ``(k - 1) / 2 - p``, so ``centre += ((k - 1) / 2 - p) * jump``, then ``jump *= s``.
    """
    jump, centre, rf = 1, 0.0, 1
    for op in ops:
        k = op.dilation[axis] * (op.kernel[axis] - 1) + 1
        centre += ((k - 1) / 2 - op.padding[axis]) * jump
        rf += (k - 1) * jump
        jump *= op.stride[axis]
    return jump, centre, rf


def _out_size(ops: list[LayerOp], h: int, w: int) -> tuple[int, int]:
    for op in ops:
        h, w = op.out_len(h, 0), op.out_len(w, 1)
        if h < 1 or w < 1:
            return 0, 0
    return h, w


# ---------------------------------------------------------------------------------------------
# the wrapper


class Backbone(nn.Module):
    """A trunk from image to conv5 map, with its channels, grid geometry and input convention."""

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        out_channels: int,
        input_convention: InputConvention,
        head: nn.Module | None = None,
        width: float = 1.0,
        batch_norm: bool = False,
        channels: tuple[int, ...] = (),
    ):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.out_channels = int(out_channels)
        self.input_convention = input_convention
        self.width = float(width)
        self.batch_norm = bool(batch_norm)
        self.channels = tuple(int(c) for c in channels)  # zf5's explicit conv widths; () = from width
        self.head = head  # the ImageNet classifier after the cut, only when asked for
        self.trunk.to(memory_format=torch.channels_last)
        self.ops = layer_ops(trunk)
        (sy, oy, ry), (sx, ox, rx) = ops_geometry(self.ops, 0), ops_geometry(self.ops, 1)
        if (sy, oy) != (sx, ox):
            raise ValueError(f"backbone {name}: rows and columns have different grids ({sy}, {oy}) vs ({sx}, {ox})")
        self.stride: int = int(sx)
        self.offset: float = float(ox)
        self.receptive_field: int = int(max(ry, rx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed input -> (N, out_channels, map_h, map_w) conv5 (after ReLU).

        Runs in channels-last layout: on the CPU the convolutions and poolings are 1.5 to 2
        times faster than channels-first, the max-pooling ten times.
        """
        return self.trunk(x.contiguous(memory_format=torch.channels_last))

    def preprocess(self, images, device=None, dtype=torch.float32) -> torch.Tensor:
        """uint8 RGB (H, W, 3) / (N, H, W, 3) images -> the float NCHW input this trunk expects."""
        return self.input_convention.preprocess(images, device=device, dtype=dtype)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(map_h, map_w) of the conv5 map for an ``h x w`` input; (0, 0) if it is too small."""
        return _out_size(self.ops, int(h), int(w))

    def min_input_size(self) -> int:
        """The smallest square input giving at least a 1x1 map."""
        n = 1
        while self.output_size(n, n)[0] < 1:
            n += 1
        return n

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits through the torchvision model's own layers after the cut."""
        if self.head is None:
            raise RuntimeError(f"backbone {self.name} was built without its classifier (keep_classifier=False)")
        return self.head(self.trunk(x))

    def describe(self) -> dict:
        """What a saved backbone records about itself (JSON-friendly)."""
        return {
            "backbone": self.name,
            "width": self.width,
            **({"channels": list(self.channels)} if self.channels else {}),
            "batch_norm": self.batch_norm,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "offset": self.offset,
            "receptive_field": self.receptive_field,
            "input_convention": self.input_convention.to_dict(),
        }

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, out_channels={self.out_channels}, stride={self.stride}, "
            f"offset={self.offset}, input_convention={self.input_convention.name!r}"
        )


# ---------------------------------------------------------------------------------------------
# ZF-5


class WithinChannelLRN(nn.Module):
    """Caffe's LRN with ``norm_region: WITHIN_CHANNEL``, as in the released ZF-5.

    ``x / (1 + alpha * mean_{size x size}(x^2)) ^ beta``, the mean over a spatial window of the
    same channel, zero-padded and always divided by ``size^2`` (Caffe's average pooling counts
    the padding). Keeps the grid.
    """

    preserves_grid = True

    def __init__(self, size: int = 3, alpha: float = 5e-5, beta: float = 0.75):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"LRN size must be odd, got {size}")
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _WithinChannelLRNFunction.apply(x, self.size, self.alpha, self.beta)
        return _lrn_inference(x, self.size, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


def within_channel_lrn_reference(x: torch.Tensor, size: int = 3, alpha: float = 5e-5, beta: float = 0.75) -> torch.Tensor:
    """The LRN spelled out with autograd ops: what :class:`WithinChannelLRN` is tested against."""
    mean_sq = F.avg_pool2d(x * x, size, stride=1, padding=(size - 1) // 2, count_include_pad=True)
    return x / (1.0 + alpha * mean_sq).pow(beta)


STRIPE_BYTES = 1 << 20  # inference LRN: rows per stripe so that one stripe's temporaries are ~1 MB


def _lrn_inference(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """The LRN without autograd, in horizontal stripes of rows.

    At detection the first LRN runs on the largest map of the trunk (96 x 600 x 800 at scale
    1200); computed whole, its five full-size temporaries made it cost more than conv1 and vary
    2x from image to image with memory faults. Stripes of a few rows (plus the (size-1)/2 halo
    rows the window needs) keep the temporaries in cache: 1.5-2x faster, same values up to
    float rounding (tested against the reference).
    """
    n, c, h, w = x.shape
    pad = (size - 1) // 2
    y = torch.empty_like(x)
    rows = max(size, STRIPE_BYTES // max(1, n * c * w * x.element_size()))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        lo, hi = max(0, r0 - pad), min(h, r1 + pad)
        part = x[:, :, lo:hi]
        # zero rows beyond the map's top and bottom, as the whole-map pooling's padding; inner
        # stripes read their neighbours' real rows instead
        sq = F.pad(part * part, (0, 0, pad - (r0 - lo), pad - (hi - r1)))
        d = F.avg_pool2d(sq, size, stride=1, padding=(0, pad), count_include_pad=True)
        d.mul_(alpha).add_(1.0)
        out = y[:, :, r0:r1]
        if beta == 0.75:
            d.rsqrt_()  # d^-0.75 = rsqrt(d) * sqrt(rsqrt(d))
            torch.mul(x[:, :, r0:r1], d, out=out)
            out.mul_(d.sqrt_())
        else:
            torch.mul(x[:, :, r0:r1], d.pow_(-beta), out=out)
    return y


class _WithinChannelLRNFunction(torch.autograd.Function):
    """y = x * d^-beta, d = 1 + alpha * mean(x^2), with a hand-written backward.

    Autograd through the spelled-out formula spends most of a ZF-5 training step on the CPU in
    the LRNs (two powers, a division and their backward passes); here one power and one
    pooling run each way. Backward: dy_j/dx_i = t_i [i = j] - (2 alpha beta / n^2) x_i x_j t_j / d_j
    for i in the window of j, so grad = g t - 2 alpha beta x * mean_window(g x t / d), the
    window mean being its own adjoint (zero padding, constant divisor).
    """

    @staticmethod
    def forward(ctx, x, size, alpha, beta):
        pad = (size - 1) // 2
        d = F.avg_pool2d(x * x, size, stride=1, padding=pad, count_include_pad=True).mul_(alpha).add_(1.0)
        if beta == 0.75:
            # d^-0.75 = rsqrt(d) * sqrt(rsqrt(d)): five times cheaper than pow on the CPU
            t = torch.rsqrt(d)
            t.mul_(t.sqrt())
        else:
            t = d.pow(-beta)
        ctx.save_for_backward(x, d, t)
        ctx.params = (size, alpha, beta)
        return x * t

    @staticmethod
    def backward(ctx, grad):
        x, d, t = ctx.saved_tensors
        size, alpha, beta = ctx.params
        u = (grad * x).mul_(t).div_(d)
        v = F.avg_pool2d(u, size, stride=1, padding=(size - 1) // 2, count_include_pad=True)
        return grad * t - v.mul_(x).mul_(2.0 * alpha * beta), None, None, None


# (name, out channels at width 1, kernel, stride, pad) of the released model-defs/Zeiler_conv5
_ZF5_CONVS = (("conv1", 96, 7, 2, 1), ("conv2", 256, 5, 2, 0), ("conv3", 384, 3, 1, 1), ("conv4", 384, 3, 1, 1), ("conv5", 256, 3, 1, 1))


def zf5_channels(width: float = 1.0, channels: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Output channels of ZF-5's conv1..conv5: ``channels`` when given, else the paper's times ``width``.

    ``channels`` gives every layer's width at once (e.g. a net wider at the top than at the
    bottom, where the pixels are many and a channel costs most), so ``width`` must then stay 1.0.
    """
    if not (0 < width <= 4):
        raise ConfigError(f"backbone.width must be in (0, 4], got {width}")
    if len(channels) == 0:
        return tuple(max(1, int(round(c * width))) for _, c, *_ in _ZF5_CONVS)
    if len(channels) != len(_ZF5_CONVS) or any(int(c) != c or c < 1 for c in channels):
        raise ConfigError(f"backbone.channels must be 5 positive integers (conv1..conv5), got {list(channels)}")
    if width != 1.0:
        raise ConfigError(
            f"backbone.channels ({list(channels)}) gives every conv's width, so backbone.width must stay 1.0 "
            f"(it is {width}); set one of the two"
        )
    return tuple(int(c) for c in channels)


def zf5_trunk(width: float = 1.0, batch_norm: bool = False, channels: tuple[int, ...] = ()) -> tuple[nn.Sequential, int]:
    """ZF-5 conv1..conv5 (after ReLU); ``width`` multiplies every layer's channels, or
    ``channels`` gives them (see :func:`zf5_channels`).

    Returns ``(trunk, out_channels)``. Layer names follow the released prototxt (``conv1``,
    ``norm1``, ``pool1``...), so state_dict keys read ``conv1.weight``. Kaiming init (fan-in,
    ReLU), zero biases. ``batch_norm`` puts a BatchNorm (``bn1``..``bn5``) between each conv and
    its ReLU: not the paper's network, but from-scratch training on a CPU budget learns several
    times faster with it, and with frozen statistics it is a per-channel affine map at detection.
    With BatchNorm the two LRNs are left out: they divide by ``(1 + 5e-5 * mean(x^2))^0.75``, a
    real normalisation on the raw-scale activations of the paper's net but a factor within 0.2%
    of 1 on BatchNorm's unit-scale ones (measured on the demo's trained net), while costing 30% of
    a CPU training step. Neither has weights, so saved backbones load either way.
    """
    widths = zf5_channels(width, channels)
    layers: list[tuple[str, nn.Module]] = []
    c_in = 3
    for (name, _, k, s, p), c_out in zip(_ZF5_CONVS, widths, strict=True):
        conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        idx = name[-1]
        layers.append((name, conv))
        if batch_norm:
            layers.append((f"bn{idx}", nn.BatchNorm2d(c_out)))
        layers.append((f"relu{idx}", nn.ReLU(inplace=True)))
        if name in ("conv1", "conv2"):
            if not batch_norm:
                layers.append((f"norm{idx}", WithinChannelLRN(3, 5e-5, 0.75)))
            layers.append((f"pool{idx}", nn.MaxPool2d(3, 2, ceil_mode=True)))
        c_in = c_out
    return nn.Sequential(OrderedDict(layers)), c_in


# ---------------------------------------------------------------------------------------------
# torchvision trunks


def _torchvision_model(name: str, weights=None) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=weights)


def _cut_torchvision(name: str, model: nn.Module) -> tuple[nn.Module, int, nn.Module]:
    """(trunk at stride 16, its channels, the rest of the classifier) sharing ``model``'s modules."""
    if name == "alexnet":
        # features[:12] ends with conv5's ReLU; features[12] is pool5 (stride 32)
        head = nn.Sequential(model.features[12], model.avgpool, nn.Flatten(1), model.classifier)
        return model.features[:12], 256, head
    if name == "vgg16":
        # features[:30] ends with conv5_3's ReLU; features[30] is pool5
        head = nn.Sequential(model.features[30], model.avgpool, nn.Flatten(1), model.classifier)
        return model.features[:30], 512, head
    if name == "squeezenet1_0":
        return model.features, 512, nn.Sequential(model.classifier, nn.Flatten(1))
    if name == "resnet50":
        trunk = nn.Sequential(
            OrderedDict(
                (k, getattr(model, k)) for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
            )
        )
        return trunk, 1024, nn.Sequential(model.layer4, model.avgpool, nn.Flatten(1), model.fc)
    raise AssertionError(name)  # pragma: no cover - names are checked by build_backbone


# ---------------------------------------------------------------------------------------------
# weights


def _describe_shape(t) -> str:
    return "x".join(str(d) for d in t.shape) if hasattr(t, "shape") else type(t).__name__


def check_state_dict(source: str, got: dict, expected: dict, required: set[str], what: str) -> None:
    """Raise :class:`ArtifactError` listing the first mismatches between a file and a model.

    ``got``: the file's tensors by key. ``expected``: the model's tensors by key (keys not in
    ``expected`` are unexpected). ``required``: the keys that must be present.
    """
    missing = [k for k in expected if k in required and k not in got]
    unexpected = [k for k in got if k not in expected]
    reshaped = [k for k in got if k in expected and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    lines = [f"missing {k} (model expects {_describe_shape(expected[k])})" for k in missing[:4]]
    lines += [f"{k}: file has {_describe_shape(got[k])}, model expects {_describe_shape(expected[k])}" for k in reshaped[:4]]
    lines += [f"unexpected {k} ({_describe_shape(got[k])})" for k in unexpected[:4]]
    raise ArtifactError(
        f"{source}: does not fit {what}: {len(missing)} missing keys, {len(reshaped)} with another shape, "
        f"{len(unexpected)} unexpected; first: " + "; ".join(lines)
    )


def _read_torch_file(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: weights file not found") from None
    except Exception as exc:  # torch raises many kinds for a file that is not a torch pickle
        raise ArtifactError(f"{path}: cannot be read as a PyTorch weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a state_dict (a dict of tensors), found a {type(obj).__name__}")
    return obj


def _plain_state_dict(path: Path, obj: dict) -> dict:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints and DataParallel prefixes."""
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise ArtifactError(f"{path}: not a state_dict: value of key {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _is_optional(key: str) -> bool:
    # BatchNorm restores a missing counter itself; old published files lack it
    return key.endswith("num_batches_tracked")


def resolve_weights(weights: str | Path) -> tuple[str, Path | None]:
    """``none`` | ``imagenet`` | a state_dict file | a run folder -> (kind, path)."""
    text = str(weights).strip()
    if text.lower() in ("none", ""):
        return "none", None
    if text.lower() == "imagenet":
        return "imagenet", None
    path = Path(text)
    if path.is_dir():
        file = path.joinpath(*PRETRAIN_FILE)
        if not file.is_file():
            raise ArtifactError(
                f"{file}: no pretrained backbone in run folder {path}; run 'spp-detect pretrain --run {path}' first"
            )
        return "file", file
    if path.is_file():
        return "file", path
    raise ConfigError(
        f"backbone.weights: {text!r} is not none, imagenet, an existing state_dict file or a run folder"
    )


def _auto_convention(kind: str, path: Path | None) -> InputConvention:
    if kind == "file" and path is not None and "caffe" in path.name.lower():
        log.info("%s: name says Caffe, so inputs use the caffe convention (BGR, 0..255, mean 104/117/123)", path)
        return CONVENTIONS["caffe"]
    if kind == "file":
        log.info("%s: assuming torchvision's input convention; set backbone.input_convention if not", path)
    # none: from-scratch training wants unit-variance inputs, which Kaiming init assumes
    return CONVENTIONS["torchvision"]


def build_backbone(
    name: str,
    weights: str | Path = "none",
    input_convention: str = "auto",
    width: float = 1.0,
    keep_classifier: bool = False,
    batch_norm: bool = False,
    channels: tuple[int, ...] = (),
) -> Backbone:
    """Build a backbone by name and load its weights (on the CPU, in eval mode).

    ``name``: one of :data:`BACKBONES`. ``weights``: ``none`` | ``imagenet`` | a state_dict file
    | a run folder. ``input_convention``: ``auto`` (per weight source: torchvision's for
    ``imagenet`` and ``none``, the stored one for a file this project wrote, ``caffe`` for a
    file whose name says caffe, else torchvision's) or a name in :data:`CONVENTIONS`.
    ``width``: ZF-5's channel multiplier (1.0 = the paper's ZF-5); ``channels``: ZF-5's five
    conv widths given outright instead (:func:`zf5_channels`); ``batch_norm``: ZF-5 with
    BatchNorm after each conv (see :func:`zf5_trunk`). ``keep_classifier``: also
    keep the torchvision model's ImageNet classifier after the cut (:meth:`Backbone.classify`).
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    if name != "zf5" and width != 1.0:
        raise ConfigError(f"backbone.width applies to zf5 only; {name} has a fixed width (got width={width})")
    if name != "zf5" and len(channels):
        raise ConfigError(f"backbone.channels applies to zf5 only; {name} has fixed widths (got {list(channels)})")
    channels = tuple(channels)
    # a bad width or channel list fails here, before any file is read
    widths = zf5_channels(width, channels) if name == "zf5" else None
    if name != "zf5" and batch_norm:
        raise ConfigError(f"backbone.batch_norm applies to zf5 only; {name} has its own layers")
    kind, path = resolve_weights(weights)
    convention = None if input_convention == "auto" else get_convention(input_convention)

    saved = None
    state = None
    if kind == "file":
        obj = _read_torch_file(path)
        if obj.get("format") == BACKBONE_FORMAT:
            saved = obj
            version = int(saved.get("format_version", -1))
            if version != BACKBONE_FORMAT_VERSION:
                raise ArtifactError(f"{path}: backbone format version {version}, this spp-detect reads {BACKBONE_FORMAT_VERSION}")
            if saved.get("backbone") != name:
                raise ConfigError(f"{path}: holds a {saved.get('backbone')!r} backbone, but backbone.name is {name!r}")
            saved_width = float(saved.get("width", 1.0))
            if name == "zf5":
                have = zf5_channels(saved_width, tuple(saved.get("channels", ())))
                if have != widths:
                    raise ConfigError(
                        f"{path}: holds a zf5 with conv widths {list(have)} (width {saved_width}), but "
                        f"backbone.width {width} and backbone.channels {list(channels)} give {list(widths)}"
                    )
            saved_bn = bool(saved.get("batch_norm", False))
            if name == "zf5" and saved_bn != batch_norm:
                raise ConfigError(f"{path}: holds a zf5 with batch_norm={saved_bn}, but backbone.batch_norm is {batch_norm}")
            stored = InputConvention.from_dict(saved["input_convention"])
            if convention is not None and convention != stored:
                log.warning("%s: trained with input convention %s, but %s was asked for", path, stored.name, convention.name)
            convention = convention or stored
        else:
            state = _plain_state_dict(path, obj)
    if convention is None:
        convention = _auto_convention(kind, path)

    # random init under a fixed seed: every process (torchrun ranks) and every rerun builds the
    # same network, so caches keyed on the weights stay valid
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trunk, out_channels, head = _build_trunk(name, kind, path, state, width, keep_classifier, batch_norm, channels)
    if saved is not None:
        got = saved["state_dict"]
        expected = trunk.state_dict()
        check_state_dict(str(path), got, expected, {k for k in expected if not _is_optional(k)}, f"backbone {name}")
        trunk.load_state_dict(got, strict=False)
    backbone = Backbone(name, trunk, out_channels, convention, head=head, width=width, batch_norm=batch_norm,
                        channels=channels)
    return backbone.eval()


def backbone_from_config(b, weights) -> Backbone:
    """:func:`build_backbone` with a :class:`~spp_detect.config.BackboneConfig`'s settings and
    ``weights`` resolved by the caller (a run's pretrained backbone or the configured source)."""
    return build_backbone(b.name, weights, b.input_convention, width=b.width, batch_norm=b.batch_norm, channels=b.channels)


def _build_trunk(name: str, kind: str, path: Path | None, state: dict | None, width: float, keep_classifier: bool,
                 batch_norm: bool = False, channels: tuple[int, ...] = ()):
    """The trunk (and the ImageNet head when asked) with ``state`` loaded, if any."""
    if name == "zf5":
        if kind == "imagenet":
            raise ConfigError(
                "backbone.weights: zf5 has no published ImageNet weights; use none, a run folder "
                "pretrained with 'spp-detect pretrain', or a state_dict file"
            )
        trunk, channels = zf5_trunk(width, batch_norm, channels)
        head = None
        if state is not None:
            expected = trunk.state_dict()
            check_state_dict(str(path), state, expected, set(expected), "backbone zf5")
            trunk.load_state_dict(state, strict=True)
    else:
        model = _load_torchvision(name, kind, path, state, keep_classifier)
        trunk, channels, head = _cut_torchvision(name, model)
        if not keep_classifier:
            head = None
    return trunk, channels, head


def _load_torchvision(name: str, kind: str, path: Path | None, state: dict | None, keep_classifier: bool) -> nn.Module:
    if kind == "imagenet":
        import torchvision

        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
        try:
            return _torchvision_model(name, weights=weights_enum)
        except Exception as exc:  # no network, proxy, corrupt cache: all end here
            raise ArtifactError(
                f"could not get torchvision's ImageNet weights for {name} ({type(exc).__name__}: {exc}); "
                f"without a network, download {weights_enum.url} elsewhere and pass --weights PATH"
            ) from None
    model = _torchvision_model(name, weights=None)
    if state is not None:
        trunk, _, head = _cut_torchvision(name, model)
        keep = {id(t) for t in trunk.state_dict(keep_vars=True).values()}
        if keep_classifier:
            keep |= {id(t) for t in head.state_dict(keep_vars=True).values()}
        expected = model.state_dict(keep_vars=True)
        required = {k for k, t in expected.items() if id(t) in keep and not _is_optional(k)}
        check_state_dict(str(path), state, expected, required, f"torchvision {name}")
        model.load_state_dict(state, strict=False)
    return model


def save_backbone(backbone: Backbone, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``backbone`` (trunk state_dict + :meth:`Backbone.describe` + ``extra``) atomically.

    The file is what ``--weights PATH`` and ``--weights RUN`` read back.
    """
    from .artifacts.files import atomic_path

    payload = {
        "format": BACKBONE_FORMAT,
        "format_version": BACKBONE_FORMAT_VERSION,
        **backbone.describe(),
        "state_dict": {k: v.detach().cpu() for k, v in backbone.trunk.state_dict().items()},
        **(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def written_by_pretrain(path: str | Path) -> bool:
    """Whether ``path`` is a backbone file written by ``spp-detect pretrain`` (not a plain state_dict)."""
    return _read_torch_file(Path(path)).get("format") == BACKBONE_FORMAT


def pretrained_head(weights: str | Path) -> dict | None:
    """The fc head saved beside a backbone by ``spp-detect pretrain``, or None (any other weights).

    Returns ``{"state_dict": {"fc6.weight", ...}, "labels": [...], "levels": [...], "concat_order"}``:
    fc6 -> fc7 -> fc8 as :func:`spp_detect.pretrain.train.build_classifier` names them, on raw
    (unscaled) SPP vectors, ``labels`` the fc8 outputs in order.
    """
    kind, path = resolve_weights(weights)
    if kind != "file":
        return None
    obj = _read_torch_file(path)
    if obj.get("format") != BACKBONE_FORMAT or "head_state_dict" not in obj:
        return None
    spp = obj.get("spp", {})
    return {"state_dict": obj["head_state_dict"], "labels": list(obj.get("classes", [])),
            "levels": list(spp.get("levels", [])), "concat_order": spp.get("concat_order")}


def measured_map_size(backbone: Backbone, h: int, w: int) -> tuple[int, int]:
    """(map_h, map_w) by running the trunk on zeros: the ground truth for :meth:`Backbone.output_size`."""
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, h, w))
    return int(out.shape[2]), int(out.shape[3])
