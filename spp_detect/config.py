"""The one configuration of a pipeline: frozen dataclasses, one per stage.

Every default lives here with its meaning and units. A pipeline file (``pipelines/*.toml``)
has one table per section (``[extract]``, ``[svm]``...) and is merged strictly: an unknown
section or key, or a value of the wrong type, is a :class:`ConfigError` naming it and listing
the valid choices. Command-line options and ``--set section.key=value`` override on top, and
the resolved config is saved next to every output (``config.toml`` in the run folder) so a run
can be repeated with ``spp-detect run RUN/config.toml``.

Stage code never receives the whole config: the CLI turns a section into plain arguments.
Where the paper and its released code differ, the default is the paper's and the comment
names the released code's value.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from .core.pyramid import DEFAULT_LEVELS
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# ---------------------------------------------------------------------------------------------
# what each field accepts, declared with the field and checked whenever a config is merged

BACKBONE_NAMES = ("zf5", "alexnet", "vgg16", "squeezenet1_0", "resnet50")  # what spp_detect.backbones builds
# the trunks whose ImageNet classifier gives the head's fc6 (finetune.init = "imagenet"), and its width
IMAGENET_FC6_WIDTH = {"alexnet": 4096, "squeezenet1_0": 1000}


def one_of(default: str, *others: str):
    """A string field: ``default`` or one of ``others``."""
    return field(default=default, metadata={"choices": (default, *[o for o in others if o != default])})


def matching(default: str, pattern: str, says: str):
    """A string field matching the regular expression ``pattern`` (``says`` words it for errors)."""
    return field(default=default, metadata={"pattern": pattern, "says": says})


def at_least(default, low):
    """A number field ``>= low``."""
    return field(default=default, metadata={"low": low})


def within(default, low, high, low_open: bool = False, high_open: bool = False):
    """A number field in ``[low, high]`` (either end open when asked)."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "high_open": high_open})


def each_at_least(default: tuple, low, nonempty: bool = False):
    """A list field whose every item is ``>= low`` (and that has one at least when ``nonempty``)."""
    return field(default=default, metadata={"low": low, "each": True, "nonempty": nonempty})


def check_value(where: str, value, rule: dict) -> None:
    """Raise :class:`ConfigError` naming ``where`` and ``value`` if ``value`` breaks ``rule``."""
    import re

    if "choices" in rule and value not in rule["choices"]:
        raise ConfigError(f"{where}: unknown value {value!r}; use one of {', '.join(rule['choices'])}")
    if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
        raise ConfigError(f"{where}: unknown value {value!r}; use {rule['says']}")
    if rule.get("each"):
        if rule.get("nonempty") and not value:
            raise ConfigError(f"{where}: needs at least one value, got []")
        for i, item in enumerate(value):
            check_value(f"{where}[{i}]", item, {k: v for k, v in rule.items() if k not in ("each", "nonempty")})
        return
    low, high = rule.get("low"), rule.get("high")
    if low is not None and (value <= low if rule.get("low_open") else value < low):
        raise ConfigError(f"{where}: {value!r} is out of range; it must be {'>' if rule.get('low_open') else '>='} {low}"
                          + (f" and {'<' if rule.get('high_open') else '<='} {high}" if high is not None else ""))
    if high is not None and (value >= high if rule.get("high_open") else value > high):
        raise ConfigError(f"{where}: {value!r} is out of range; it must be {'<' if rule.get('high_open') else '<='} {high}"
                          + (f" and {'>' if rule.get('low_open') else '>='} {low}" if low is not None else ""))


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synth"  # voc2007 | voc2012 | synth | a VOC-style folder | a COCO .json
    data_root: str = ""  # where named datasets live; "" = $SPP_DATA or data/
    image_dir: str = ""  # COCO only: image folder ("" = guessed from the JSON's path)
    train_split: str = "train"  # used by finetune, train-svm, train-bbox (and pretrain, unless pretrain_split)
    pretrain_split: str = ""  # what the pretrain stage learns from ("" = train_split); the paper
    #   pretrains on ImageNet, far more images than the detector trains on
    val_split: str = "val"  # model selection during fine-tuning and pretraining (never test)
    test_split: str = "test"  # detect and eval
    skip_bad: bool = False  # per-image errors become warnings with a count at the end
    synth_train: int = 300  # 'spp-detect run' writes the synthetic dataset when it is missing:
    synth_val: int = 60  #   images per split
    synth_test: int = 150
    synth_pretrain: int = 0  #   and images made for pretraining only: split "pretrain" holds the
    #   training images and these (set pretrain_split = "pretrain" to use it)
    synth_seed: int = 0

    @property
    def pretraining_split(self) -> str:
        """The split the pretrain stage learns from."""
        return self.pretrain_split or self.train_split


@dataclass(frozen=True)
class ProposeConfig:
    method: str = one_of("opencv", "uijlings")  # opencv: OpenCV's selective search run as tuned recipes
    #   (spp_detect/proposals/selective_search.py) | uijlings: the paper's selective search (proposals/uijlings.py)
    mode: str = one_of("fast", "lite", "fast", "quality")  # fast (the paper's mode) | quality | lite: opencv: 4 coarse
    #   passes (CPU demo); uijlings: the paper's single strategy (HSV, k = 100, colour+texture+size+fill)
    max_proposals: int = at_least(2000, 1)  # kept per image, in rank order
    min_size: int = at_least(20, 1)  # boxes narrower or shorter than this many pixels are dropped
    workers: int = at_least(0, 0)  # worker processes; 0 = all cores
    resize_to: int = at_least(0, 0)  # run selective search on an image with this shorter side (0 = original)
    # a box whose IoU with a better-ranked kept box exceeds this is dropped, so the
    # max_proposals budget is not spent on near-copies (1.0 = keep them; exact copies always go)
    near_duplicate_iou: float = within(0.9, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class BackboneConfig:
    name: str = one_of("zf5", *BACKBONE_NAMES)  # zf5 | alexnet | vgg16 | squeezenet1_0 | resnet50
    weights: str = "none"  # none | imagenet | a state_dict path | a run folder (pretrained here)
    input_convention: str = one_of("auto", "torchvision", "caffe", "released")  # auto | torchvision | caffe: how pixels are normalised
    # (also "released": the SPP-net code's BGR 0..255 minus 128; auto picks per weight source)
    width: float = within(1.0, 0.0, 64.0, low_open=True)  # zf5 only: channel multiplier (0.25 -> 24..64 channels, for CPU demos); 1.0 = the paper's ZF-5
    channels: tuple[int, ...] = each_at_least((), 1)  # zf5 only: conv1..conv5 output channels given outright, e.g. wider at
    #   the top than width allows; () = the paper's times width (which must then stay 1.0)
    batch_norm: bool = False  # zf5 only: BatchNorm after each conv, and no LRN (not the paper's; trains from scratch much faster)


@dataclass(frozen=True)
class PretrainConfig:
    mode: str = one_of("crops", "windows")  # crops (the paper's: object crops warped to a size) | windows (windows of whole
    #   images pooled from their conv5 map at the extraction's scales, as the detector sees them;
    #   spp_detect/pretrain/windows.py)
    sizes: tuple[int, ...] = each_at_least((224, 180), 16, nonempty=True)  # crops mode: crop sizes, one epoch per size, alternating
    epochs: int = at_least(10, 0)
    batch_size: int = at_least(64, 1)
    lr: float = within(0.01, 0.0, math.inf, low_open=True)  # SGD, cosine-decayed to 0
    momentum: float = within(0.9, 0.0, 1.0, high_open=True)
    weight_decay: float = at_least(5e-4, 0.0)
    crops_per_image: int = at_least(4, 0)  # object crops per training image per epoch
    background_crops: int = at_least(1, 0)  # background crops per image (the extra "background" class)
    eval_sizes: tuple[int, ...] = each_at_least((224, 180, 200), 16)  # crops mode: sizes validation top-1 is reported at
    #   (windows mode: every extraction scale)
    workers: int = at_least(0, 0)  # data-loading worker processes
    seed: int = 0
    fc_dim: int = at_least(4096, 1)  # width of the classification head's fc6 and fc7 (paper: 4096)
    dropout: float = within(0.5, 0.0, 1.0, high_open=True)  # after fc6 and fc7
    context: float = at_least(0.1, 0.0)  # object crops extend each side by this fraction of the box (training: 0..2x, random)
    background_iou: float = within(0.3, 0.0, 1.0)  # background crops have IoU below this with every object
    distractor_classes: bool = False  # also name the dataset's annotated distractors (the synthetic
    #   dataset's look-alikes, <distractor> in its XML), each kind a class of its own, as ImageNet
    #   names far more kinds of thing than the detector; detection datasets only
    windows_per_image: int = at_least(32, 1)  # windows mode: windows drawn per image and step
    fg_fraction: float = within(0.25, 0.0, 1.0)  # windows mode: fraction of them on an object
    fg_iou: float = within(0.5, 0.0, 1.0, low_open=True)  # windows mode: IoU with an object for its label; below it with all: background
    warmup: float = within(0.05, 0.0, 1.0)  # fraction of the steps with a linear lr ramp from 0 (no BatchNorm in ZF-5)
    optimizer: str = one_of("sgd", "adamw")  # sgd (momentum, the paper's) | adamw (momentum = beta1; learns much faster
    #   from scratch in a few CPU minutes, with lr about 1e-3)
    device: str = matching("auto", r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")  # auto | cpu | cuda


@dataclass(frozen=True)
class SppConfig:
    levels: tuple[int, ...] = each_at_least(DEFAULT_LEVELS, 1, nonempty=True)  # pyramid levels n (n x n bins each)
    concat_order: str = one_of("coarse_first", "as_given")  # coarse_first (released network: 1,2,3,6) | as_given


@dataclass(frozen=True)
class ExtractConfig:
    scales: tuple[int, ...] = each_at_least((480, 576, 688, 864, 1200), 16, nonempty=True)  # shorter side; released code: 874 for 864
    max_size: int = at_least(2000, 0)  # cap on the longer side after resizing (0 = no cap)
    target_size: int = at_least(224, 1)  # window scale choice: closest to target^2 area (released code: 208)
    projection: str = one_of("paper", "released")  # paper (floor/ceil rule) | released (centre snapping)
    cache: str = one_of("conv5", "pooled", "warped")  # conv5 (maps per image and scale, pooled on demand) | pooled (vectors
    #   at the best scale) | warped (R-CNN, the baseline: each window warped to warp_size and run
    #   through the trunk alone; its vector stored; scales then unused)
    warp_size: int = at_least(224, 16)  # warped: the trunk's input size (R-CNN's AlexNet: 227)
    flip: bool = False  # also extract horizontally flipped images (training splits)
    device: str = one_of("auto", "cpu", "cuda")  # auto | cpu | cuda
    workers: int = at_least(0, 0)  # processes decoding and resizing images ahead of the trunk (0 = the
    #   trunk's own process, best on a small CPU; on a GPU a few keep it busy); the features do not change
    precision: str = one_of("float32", "bfloat16", "float16")  # the trunk's arithmetic: float32, or autocast
    #   to bfloat16 / float16 (CUDA only); the cache stores float16 either way (benchmarks/REPORT.md measures the change)
    norm_sample_images: int = at_least(200, 1)  # images sampled to estimate the mean feature norm
    norm_sample_windows: int = at_least(200, 1)  # windows per sampled image
    norm_target: float = within(20.0, 0.0, math.inf, low_open=True)  # features are scaled to this mean L2 norm
    seed: int = 0


@dataclass(frozen=True)
class FinetuneConfig:
    fc_dim: int = at_least(4096, 1)  # width of fc6 and fc7
    # pretrained (fc layers of 'spp-detect pretrain' when their shapes fit) | random | imagenet (fc6, and fc7
    #   where it has one, from the trunk's ImageNet classifier: alexnet (fc_dim 4096), squeezenet1_0 (conv10 on
    #   every bin: fc_dim 1000); spp_detect/training/imagenet_head.py)
    init: str = one_of("pretrained", "random", "imagenet")
    dropout: float = within(0.5, 0.0, 1.0, high_open=True)
    iterations: int = at_least(300000, 1)
    lr: float = within(1e-4, 0.0, math.inf, low_open=True)  # paper: 1e-4 for 250k iterations then 1e-5; released code: 1e-3
    lr_steps: tuple[int, ...] = each_at_least((250000,), 1)  # iterations at which lr is divided by 10
    momentum: float = within(0.9, 0.0, 1.0, high_open=True)
    weight_decay: float = at_least(5e-4, 0.0)
    batch_size: int = at_least(128, 1)  # windows per batch
    images_per_batch: int = at_least(16, 1)  # a batch's windows come from this many images (conv5 maps read per step)
    fg_fraction: float = within(0.25, 0.0, 1.0)
    fg_iou: float = within(0.5, 0.0, 1.0, low_open=True)  # foreground: max IoU with a ground-truth box >= this
    bg_iou_low: float = within(0.1, 0.0, 1.0, high_open=True)  # background: max IoU in [bg_iou_low, fg_iou)
    flip: bool = True  # training images plus horizontal flips
    random_scale: bool = True  # training picks a random scale per window
    val_every: int = at_least(10000, 1)  # iterations between validations (model selection) and checkpoints
    val_images: int = at_least(100, 1)  # validation windows come from this many val images (fixed sample)
    # RAM for training windows: their pooled vectors when they all fit (pooled once and kept);
    # else a fixed sample of each image's windows is pooled once into a float16 file beside
    # head.pt (read through the page cache, removed when done); 0 = pool them on every step
    memory_mb: int = at_least(4096, 0)
    fg_per_image: int = at_least(16, 1)  # the sample: foreground windows per image and mirror
    bg_per_image: int = at_least(48, 1)  #   and background windows
    workers: int = at_least(0, 0)
    device: str = one_of("auto", "cpu", "cuda")  # auto | cpu | cuda: where the head trains
    seed: int = 0


@dataclass(frozen=True)
class SvmConfig:
    features: str = one_of("fc7", "pool")  # fc7 (fine-tuned head) | pool (the SPP vector, no fine-tuning)
    classifier: str = one_of("svm", "softmax")  # svm: one linear SVM per class, hard-negative mining (the
    #   paper) | softmax: no mining; each class scored by the fine-tuned head's own classifier, its logit minus
    #   background's (Fast R-CNN's choice; needs features = "fc7"). Either way RUN/models/svm.h5 holds one linear
    #   model per class on the scaled fc7, and detect reads it the same way
    C: float = within(0.001, 0.0, math.inf, low_open=True)
    positive_weight: float = within(2.0, 0.0, math.inf, low_open=True)
    bias_feature: float = at_least(10.0, 0.0)
    solver: str = one_of("dcd", "liblinear")  # dcd: liblinear's dual coordinate descent, started from the
    #   last fit's dual variables (spp_detect/training/dual_cd.py) | liblinear: liblinear itself (scikit-learn),
    #   from zero every fit; the same objective and stopping rule
    tol: float = within(0.1, 0.0, math.inf, low_open=True)  # liblinear's stopping tolerance (largest violation of
    #   the dual's optimality conditions); 0.1 is liblinear's default for this solver, as R-CNN ran it
    negative_iou: float = within(0.3, 0.0, 1.0, low_open=True)  # negatives: IoU < this with every ground-truth box of the class
    hard_threshold: float = -1.0001  # after the first image, negatives scoring above are added
    evict_threshold: float = -1.2  # after each retrain, cached negatives scoring below are dropped
    retrain_every: int = at_least(2000, 1)  # retrain when this many new negatives have been added
    max_negatives: int = at_least(20000, 1)  # per class, cached negatives kept after a retrain (the hardest);
    #   with retrain_every this bounds the caches' memory (spp_detect/training/svm.py)
    memory_mb: int = at_least(4096, 1)  # RAM for the fits running at once (a fit copies its rows: about
    #   12 bytes per non-zero feature value with dcd, 36 with liblinear); a fit larger than this runs alone
    workers: int = at_least(0, 0)  # classes trained at once (dcd: threads; liblinear: processes); 0 = all cores
    device: str = one_of("auto", "cpu", "cuda")  # auto | cpu | cuda: where features are pooled and fc7 computed (the fits: CPU)
    fc7_precision: str = one_of("float32", "bfloat16", "auto")  # fc6 and fc7's arithmetic when mining and
    #   detecting (svm.features = "fc7"): bfloat16 inputs and weights, float32 sums; about 2x faster fc6 on a CPU
    #   with AVX512-BF16 or AMX (slower without); auto: bfloat16 where svm.device multiplies it in hardware (those
    #   CPUs, a CUDA GPU), float32 elsewhere. What ran is recorded in svm.h5, so detect computes fc7 as the SVMs saw it
    cache: str = one_of("memory", "disk")  # memory | disk: where the cached hard negatives live (disk: a file in
    #   RUN/models that the system pages in and out; at VOC size with the 25,600-d SPP vector they take gigabytes)
    checkpoint_minutes: float = at_least(10.0, 0.0)  # mining saves its state this often (RUN/models/svm.ckpt.h5):
    #   a killed train-svm goes on from there when run again (0: after every image)
    select: str = one_of("last", "val")  # last: each class keeps its last retrain's model (the paper) | val: the
    #   retrain model with the best AP on data.val_split's cached windows (scored as detect does, without box
    #   regression; spp_detect/training/svm_select.py): a class whose later fits drift towards the trivial model
    #   keeps an earlier one. Needs data.val_split and its features (spp-detect extract --split VAL)
    select_significance: float = within(0.05, 0.0, 1.0, low_open=True)  # svm.select = "val": a class leaves its
    #   last model only when a paired bootstrap over the validation images (1,000 resamples, max-T over the class's
    #   candidates) puts its best candidate's gain beyond chance at this level; 1: the best on validation, no test
    #   (with many working candidates and a few hundred images that picks noise: benchmarks/REPORT.md)
    seed: int = 0


@dataclass(frozen=True)
class BboxConfig:
    min_iou: float = within(0.6, 0.0, 1.0, low_open=True)  # training windows: IoU >= this with a ground-truth box (released: 0.5)
    ridge_lambda: float = at_least(1000.0, 0.0)  # released code: 4000 with target whitening


@dataclass(frozen=True)
class DetectConfig:
    score_floor: float = -1.5  # per-class score floor before NMS (released code)
    nms_iou: float = within(0.3, 0.0, 1.0, low_open=True)
    max_per_class: int = at_least(100, 1)  # boxes per class per image
    bbox_regression: bool = True
    score_threshold: float = 0.0  # loose-image mode: boxes drawn and written above this score
    device: str = one_of("auto", "cpu", "cuda")  # auto | cpu | cuda: where windows are pooled and scored


@dataclass(frozen=True)
class EvalConfig:
    metric: str = one_of("voc07", "voc10", "coco")  # voc07 (11-point) | voc10 (area) | coco (pycocotools)


@dataclass(frozen=True)
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    propose: ProposeConfig = field(default_factory=ProposeConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    spp: SppConfig = field(default_factory=SppConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    svm: SvmConfig = field(default_factory=SvmConfig)
    bbox: BboxConfig = field(default_factory=BboxConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: str = "runs/default"  # the run folder every stage writes into
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# strict merging


def _coerce(value, tp, where: str):
    """Check ``value`` (parsed TOML) against the annotation ``tp``; return it in that type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def merge(obj, updates: dict, where: str = ""):
    """Return a copy of dataclass ``obj`` with ``updates`` (nested dicts) applied strictly."""
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}{key}"
        if key not in known:
            raise ConfigError(f"unknown key '{path}'; valid keys here: {', '.join(sorted(known))}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"'{path}' is a section; expected a table, got {value!r}")
            changes[key] = merge(current, value, f"{path}.")
        else:
            changes[key] = _coerce(value, hints[key], path)
            rule = next(f.metadata for f in fields(obj) if f.name == key)
            if rule:
                check_value(path, changes[key], rule)
    return replace(obj, **changes)


def parse_override(text: str) -> dict:
    """``section.key=value`` -> nested dict; the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if isinstance(value, str) and "," in value and not raw.strip().startswith(("'", '"')):
        # scales=480,576 on a command line reads as a list of numbers
        try:
            value = [tomllib.loads(f"v = {v}")["v"] for v in value.split(",")]
        except tomllib.TOMLDecodeError:
            pass
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> PipelineConfig:
    """Defaults, then the pipeline file (if any), then ``overrides`` (``section.key=value``)."""
    cfg = PipelineConfig()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: pipeline file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        try:
            cfg = merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        cfg = merge(cfg, parse_override(text))
    try:
        check_combinations(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return cfg


def check_combinations(cfg: PipelineConfig) -> None:
    """Settings that are each valid but not together (ConfigError naming both)."""
    if cfg.svm.classifier == "softmax" and cfg.svm.features != "fc7":
        raise ConfigError(f"svm.classifier = 'softmax' scores fc7 with the fine-tuned head's classifier; it needs "
                          f"svm.features = 'fc7', got {cfg.svm.features!r}")
    if cfg.svm.select == "val" and cfg.svm.classifier == "svm" and not cfg.data.val_split:
        raise ConfigError("svm.select = 'val' chooses each class's SVM on the validation split: data.val_split "
                          "must name one (it is empty); or svm.select = 'last'")
    if cfg.finetune.init == "imagenet":
        width = IMAGENET_FC6_WIDTH.get(cfg.backbone.name)
        if width is None:
            raise ConfigError(f"finetune.init = 'imagenet' takes fc layers from the trunk's ImageNet classifier: "
                              f"backbone.name must be one of {', '.join(IMAGENET_FC6_WIDTH)}, got {cfg.backbone.name!r}")
        if cfg.finetune.fc_dim != width:
            raise ConfigError(f"finetune.init = 'imagenet' with {cfg.backbone.name}: its ImageNet fc6 has {width} units, "
                              f"so finetune.fc_dim must be {width}, got {cfg.finetune.fc_dim}")


def with_values(section, **values):
    """``section`` with the non-None ``values`` applied (command-line options on top)."""
    given = {k: v for k, v in values.items() if v is not None}
    return merge(section, given) if given else section


# ---------------------------------------------------------------------------------------------
# hashing and saving


def to_dict(obj) -> dict:
    return {f.name: (to_dict(v) if is_dataclass(v := getattr(obj, f.name)) else v) for f in fields(obj)}


def config_hash(*sections) -> str:
    """A short, stable hash of dataclass sections (and plain values): what artifacts are keyed on."""
    payload = [to_dict(s) if is_dataclass(s) else s for s in sections]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(cfg: PipelineConfig) -> str:
    """The resolved config as a pipeline file that :func:`load_config` reads back unchanged."""
    top, tables = [], []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v):
            lines = [f"[{f.name}]"] + [f"{k} = {_toml_value(x)}" for k, x in to_dict(v).items()]
            tables.append("\n".join(lines))
        else:
            top.append(f"{f.name} = {_toml_value(v)}")
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def save_config(cfg: PipelineConfig, path: str | Path) -> Path:
    """Write the resolved config as TOML (atomically), creating the folder."""
    from .artifacts.files import atomic_write_text

    return atomic_write_text(Path(path), dump_toml(cfg))


