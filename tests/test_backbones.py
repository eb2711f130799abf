"""Backbones: geometry against the real network's one-hot response, weight loading, conventions."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from spp_detect.backbones import (
    BACKBONES,
    CONVENTIONS,
    Backbone,
    WithinChannelLRN,
    build_backbone,
    layer_ops,
    measured_map_size,
    save_backbone,
    within_channel_lrn_reference,
)
from spp_detect.errors import ArtifactError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbones():
    """One randomly initialised instance of each backbone (torchvision ones built offline)."""
    return {name: build_backbone(name) for name in BACKBONES}


# ---------------------------------------------------------------------------------------------
# geometry measured on the real trunk


def positive_trunk(backbone: Backbone) -> nn.Module:
    """A copy whose every conv averages (weights 1/fan_in, no bias) and whose BN is the identity.

    All activations are then >= 0 and a cell is > 0 exactly when a non-zero input pixel lies in
    its receptive field (max-pooling, ReLU, LRN and residual sums keep that), so the set of
    cells answering a one-hot image is the set whose receptive field holds the hot pixel.
    """
    net = copy.deepcopy(backbone.trunk).float().eval()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def answering_cells(net, long_side, short_side, positions, axis):
    """First and last cell (along ``axis``: 1 columns, 0 rows) answering each one-hot image."""
    n = len(positions)
    shape = (n, 3, short_side, long_side) if axis == 1 else (n, 3, long_side, short_side)
    x = torch.zeros(shape)
    for i, p in enumerate(positions):
        if axis == 1:
            x[i, :, short_side // 2, p] = 1.0
        else:
            x[i, :, p, short_side // 2] = 1.0
    with torch.no_grad():
        on = (net(x) > 0).any(1)  # (n, rows, cols)
    on = on.any(1) if axis == 1 else on.any(2)
    first = [int(r.nonzero()[0]) for r in on]
    last = [int(r.nonzero()[-1]) for r in on]
    return first, last


def measure_geometry(backbone: Backbone, axis: int):
    """(stride, offset, receptive field) from one-hot images swept over 2 strides of pixels.

    Cell c answers pixels [a_c, b_c]. As the hot pixel moves right, the last answering cell
    steps up exactly where x = a_c, the first one where x = b_c + 1; two steps give the stride,
    and a_c with b_c give the centre and the width of the receptive field.
    """
    net = positive_trunk(backbone)
    s = backbone.stride  # only sizes the sweep: a wrong stride leaves too few steps to measure
    long_side = backbone.receptive_field + 4 * s
    short_side = backbone.min_input_size()
    x0 = long_side // 2 - s
    xs = list(range(x0, x0 + 2 * s + 1))
    first, last = answering_cells(net, long_side, short_side, xs, axis)
    starts = {last[i]: xs[i] for i in range(1, len(xs)) if last[i] > last[i - 1]}
    ends = {first[i - 1]: xs[i] - 1 for i in range(1, len(xs)) if first[i] > first[i - 1]}
    assert len(starts) >= 2 and len(ends) >= 2, (starts, ends)
    c0, c1 = sorted(starts)[:2]
    assert c1 == c0 + 1
    stride = starts[c1] - starts[c0]
    e = min(ends)
    end_c0 = ends[e] + stride * (c0 - e)
    centre = (starts[c0] + end_c0) / 2
    return stride, centre - stride * c0, end_c0 - starts[c0] + 1


@pytest.mark.parametrize("name", BACKBONES)
def test_stride_offset_match_one_hot_response(backbones, name):
    b = backbones[name]
    for axis in (1, 0):
        stride, offset, rf = measure_geometry(b, axis)
        assert (stride, offset, rf) == (b.stride, b.offset, b.receptive_field), f"{name} axis {axis}"


def test_known_values(backbones):
    expect = {  # name: (channels, stride, offset of cell 0's centre in 0-based pixels)
        "zf5": (256, 16, 20.0),  # the released code's 1-based 16*(i-1) + 21
        "alexnet": (256, 16, 15.0),
        "vgg16": (512, 16, 7.5),
        "squeezenet1_0": (512, 16, 17.0),
        "resnet50": (1024, 16, 0.0),
    }
    for name, (c, s, o) in expect.items():
        b = backbones[name]
        assert (b.out_channels, b.stride, b.offset) == (c, s, o), name
    # the paper: a 224 input gives a 13x13 conv5 on ZF-5 (and on SqueezeNet, per the weights README)
    assert backbones["zf5"].output_size(224, 224) == (13, 13)
    assert backbones["squeezenet1_0"].output_size(224, 224) == (13, 13)


@pytest.mark.parametrize("name", BACKBONES)
def test_output_size_matches_forward(backbones, name):
    b = backbones[name]
    m = b.min_input_size()
    sizes = [(k, k + 5) for k in range(max(1, m - 2), m + 6)] + [(m + 16, m + 15), (101, 67)]
    for h, w in sizes:
        want = b.output_size(h, w)
        if want == (0, 0):
            with pytest.raises(RuntimeError):
                measured_map_size(b, h, w)
            continue
        out = measured_map_size(b, h, w)
        assert want == out, (name, h, w)
        assert out[0] == b.output_size(h, h)[0] and out[1] == b.output_size(w, w)[1]
    assert b.output_size(m, m)[0] >= 1
    if m > 1:
        assert b.output_size(m - 1, m - 1) == (0, 0)
    y = b(torch.zeros(2, 3, 64, 80))
    assert y.shape[:2] == (2, b.out_channels)


def test_zf5_is_the_released_architecture(backbones):
    zf = backbones["zf5"].trunk
    convs = [(m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for m in zf if isinstance(m, nn.Conv2d)]
    assert convs == [(96, 7, 2, 1), (256, 5, 2, 0), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)]
    pools = [m for m in zf if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools] == [(3, 2, True)] * 2
    assert sum(isinstance(m, WithinChannelLRN) for m in zf) == 2
    assert "conv1.weight" in zf.state_dict()


def test_zf5_width_keeps_the_geometry(backbones):
    small = build_backbone("zf5", width=0.25)
    assert small.out_channels == 64
    assert (small.stride, small.offset, small.receptive_field) == (16, 20.0, 139)
    assert small(torch.zeros(1, 3, 224, 224)).shape == (1, 64, 13, 13)
    with pytest.raises(ConfigError, match="zf5 only"):
        build_backbone("alexnet", width=0.5)


def test_zf5_channels_given_outright():
    wide_top = build_backbone("zf5", channels=(24, 64, 192, 192, 128), batch_norm=True)
    convs = [m.out_channels for m in wide_top.trunk if isinstance(m, nn.Conv2d)]
    assert convs == [24, 64, 192, 192, 128] and wide_top.out_channels == 128
    assert (wide_top.stride, wide_top.offset, wide_top.receptive_field) == (16, 20.0, 139)
    assert wide_top.describe()["channels"] == [24, 64, 192, 192, 128]
    assert "channels" not in build_backbone("zf5", width=0.25).describe()  # older saved backbones look the same
    # the same widths as width 0.25 build the same network
    same = build_backbone("zf5", channels=(24, 64, 96, 96, 64))
    assert same.trunk.state_dict().keys() == build_backbone("zf5", width=0.25).trunk.state_dict().keys()
    with pytest.raises(ConfigError, match=r"backbone.width must stay 1.0 \(it is 0.25\)"):
        build_backbone("zf5", width=0.25, channels=(24, 64, 192, 192, 128))
    with pytest.raises(ConfigError, match="5 positive integers"):
        build_backbone("zf5", channels=(24, 64, 192))
    with pytest.raises(ConfigError, match="5 positive integers"):
        build_backbone("zf5", channels=(24, 64, 0, 96, 64))
    with pytest.raises(ConfigError, match="channels applies to zf5 only"):
        build_backbone("alexnet", channels=(24, 64, 96, 96, 64))


def test_saved_zf5_checked_by_its_conv_widths(tmp_path):
    path = tmp_path / "wide.pt"
    save_backbone(build_backbone("zf5", channels=(24, 64, 192, 192, 128)), path)
    assert build_backbone("zf5", path, channels=(24, 64, 192, 192, 128)).out_channels == 128
    with pytest.raises(ConfigError, match=r"conv widths \[24, 64, 192, 192, 128\].*give \[24, 64, 96, 96, 64\]"):
        build_backbone("zf5", path, width=0.25)
    # a width-0.25 backbone loads when the same widths are given as channels
    narrow = tmp_path / "narrow.pt"
    save_backbone(build_backbone("zf5", width=0.25), narrow)
    assert build_backbone("zf5", narrow, channels=(24, 64, 96, 96, 64)).out_channels == 64


def test_within_channel_lrn_matches_caffe_formula():
    x = torch.randn(1, 2, 5, 6) * 30
    lrn = WithinChannelLRN(3, 5e-5, 0.75)
    got = lrn(x)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    want = torch.empty_like(x)
    for c in range(2):
        for i in range(5):
            for j in range(6):
                s = (xp[0, c, i : i + 3, j : j + 3] ** 2).sum()  # zero padding counts as a cell
                want[0, c, i, j] = x[0, c, i, j] / (1 + 5e-5 / 9 * s) ** 0.75
    torch.testing.assert_close(got, want)


def test_within_channel_lrn_backward_matches_autograd():
    # large activations so that the normalisation is far from the identity
    x = (torch.randn(2, 3, 6, 5, dtype=torch.float64) * 60).requires_grad_()
    lrn = WithinChannelLRN(3, 5e-5, 0.75)
    assert torch.autograd.gradcheck(lrn, (x,))
    g = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    (fast,) = torch.autograd.grad(lrn(x), x, g)
    (slow,) = torch.autograd.grad(within_channel_lrn_reference(x), x, g)
    torch.testing.assert_close(fast, slow)
    wide = WithinChannelLRN(5, 1e-3, 0.5)
    torch.testing.assert_close(wide(x), within_channel_lrn_reference(x, 5, 1e-3, 0.5))
    assert torch.autograd.gradcheck(wide, (x,))


@pytest.mark.parametrize("size,alpha,beta", [(3, 5e-5, 0.75), (5, 1e-3, 0.5)])
def test_within_channel_lrn_inference_stripes_match_reference(monkeypatch, size, alpha, beta):
    # without autograd the LRN runs in stripes of rows; tiny stripes force many of them
    import spp_detect.backbones as bb

    monkeypatch.setattr(bb, "STRIPE_BYTES", 1)
    lrn = WithinChannelLRN(size, alpha, beta)
    for h, w in [(1, 4), (2, 3), (7, 5), (13, 9)]:
        x = torch.randn(2, 3, h, w) * 60
        want = within_channel_lrn_reference(x, size, alpha, beta)
        with torch.inference_mode():
            torch.testing.assert_close(lrn(x), want)
            torch.testing.assert_close(lrn(x.contiguous(memory_format=torch.channels_last)), want)
        with torch.no_grad():
            torch.testing.assert_close(lrn(x), want)


def test_unknown_layer_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="Upsample"):
        layer_ops(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2)))


# ---------------------------------------------------------------------------------------------
# preprocessing


def test_conventions_preprocess():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255  # pure red
    caffe = CONVENTIONS["caffe"].preprocess(img)
    assert caffe.shape == (1, 3, 2, 3) and caffe.dtype == torch.float32
    # BGR order, 0..255 minus (104, 117, 123): red lands in channel 2
    assert caffe[0, :, 0, 0].tolist() == [-104.0, -117.0, 255.0 - 123.0]
    tv = CONVENTIONS["torchvision"].preprocess(torch.from_numpy(np.stack([img, img])))
    torch.testing.assert_close(tv[1, :, 1, 2], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    rel = CONVENTIONS["released"].preprocess([img])
    assert rel[0, :, 0, 0].tolist() == [-128.0, -128.0, 127.0]
    with pytest.raises(ValueError, match="uint8"):
        CONVENTIONS["caffe"].preprocess(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        CONVENTIONS["caffe"].preprocess(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="share a size"):
        CONVENTIONS["caffe"].preprocess([img, np.zeros((3, 3, 3), np.uint8)])


# ---------------------------------------------------------------------------------------------
# weights


def test_shared_squeezenet_classifies_chelsea_and_coffee(shared_weights):
    import cv2
    from skimage import data

    b = build_backbone("squeezenet1_0", shared_weights, keep_classifier=True)
    assert b.input_convention.name == "caffe"  # "auto" reads the file name, see the weights README
    images = [cv2.resize(im, (227, 227), interpolation=cv2.INTER_LINEAR) for im in (data.chelsea(), data.coffee())]
    with torch.no_grad():
        logits = b.classify(b.preprocess(images))
    assert logits.argmax(1).tolist() == [285, 967]  # Egyptian cat, espresso
    # the trunk alone gives the 13x13x512 map the README promises for 224 inputs
    assert b(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 13, 13)
    # the wrong convention (torchvision's) loses the cat: the convention matters
    wrong = build_backbone("squeezenet1_0", shared_weights, input_convention="torchvision", keep_classifier=True)
    with torch.no_grad():
        assert wrong.classify(wrong.preprocess(images[:1])).argmax(1).item() != 285


def test_wrong_architecture_file_lists_mismatches(tmp_path, backbones):
    path = tmp_path / "alexnet.pth"
    torch.save(build_backbone("alexnet", keep_classifier=True).trunk.state_dict(), path)
    with pytest.raises(ArtifactError) as err:
        build_backbone("squeezenet1_0", path)
    msg = str(err.value)
    assert str(path) in msg and "does not fit torchvision squeezenet1_0" in msg
    assert "missing features.3.squeeze.weight" in msg or "missing features.0.weight" in msg


def test_wrong_shape_is_named_with_both_shapes(tmp_path, shared_weights):
    state = torch.load(shared_weights, map_location="cpu", weights_only=True)
    state["features.0.weight"] = torch.zeros(96, 3, 5, 5)
    del state["features.12.expand3x3.bias"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ArtifactError) as err:
        build_backbone("squeezenet1_0", path)
    msg = str(err.value)
    assert "features.0.weight: file has 96x3x5x5, model expects 96x3x7x7" in msg
    assert "missing features.12.expand3x3.bias" in msg
    assert "1 missing keys, 1 with another shape, 0 unexpected" in msg


def test_classifier_keys_are_optional_for_the_trunk(tmp_path, shared_weights):
    state = torch.load(shared_weights, map_location="cpu", weights_only=True)
    trunk_only = {k: v for k, v in state.items() if k.startswith("features.")}
    path = tmp_path / "module_prefixed.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trunk_only.items()}}, path)
    b = build_backbone("squeezenet1_0", path, input_convention="caffe")
    torch.testing.assert_close(b.trunk[0].weight, state["features.0.weight"])
    with pytest.raises(ArtifactError, match="missing classifier.1.weight"):
        build_backbone("squeezenet1_0", path, keep_classifier=True)


def test_unreadable_and_missing_weights(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a torch file")
    with pytest.raises(ArtifactError, match="cannot be read as a PyTorch weights file"):
        build_backbone("zf5", junk)
    with pytest.raises(ConfigError, match="not none, imagenet"):
        build_backbone("zf5", tmp_path / "nope.pth")
    with pytest.raises(ArtifactError, match="spp-detect pretrain --run"):
        build_backbone("zf5", tmp_path)  # a folder without pretrain/backbone.pt
    with pytest.raises(ConfigError, match="valid: zf5, alexnet, vgg16, squeezenet1_0, resnet50"):
        build_backbone("zf6")
    with pytest.raises(ConfigError, match="no published ImageNet weights"):
        build_backbone("zf5", "imagenet")
    with pytest.raises(ConfigError, match="input_convention"):
        build_backbone("zf5", input_convention="opencv")


def test_imagenet_download_failure_is_a_clear_error(monkeypatch):
    import spp_detect.backbones as bb

    def offline(name, weights=None):
        if weights is not None:
            raise OSError("network is unreachable")
        return torch.nn.Module()

    monkeypatch.setattr(bb, "_torchvision_model", offline)
    with pytest.raises(ArtifactError, match=r"download https://.*alexnet.*--weights PATH"):
        build_backbone("alexnet", "imagenet")


def test_saved_backbone_round_trip(tmp_path):
    b = build_backbone("zf5", width=0.25)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01)
    run = tmp_path / "run"
    save_backbone(b, run / "pretrain" / "backbone.pt", extra={"classes": ["a", "b"]})
    x = torch.randn(1, 3, 64, 64)
    for source in (run, run / "pretrain" / "backbone.pt"):
        back = build_backbone("zf5", source, width=0.25)
        assert back.input_convention == b.input_convention
        torch.testing.assert_close(back(x), b.eval()(x))
    with pytest.raises(ConfigError, match="holds a 'zf5' backbone"):
        build_backbone("alexnet", run)
    with pytest.raises(ConfigError, match="width 0.25"):
        build_backbone("zf5", run)
    # a torchvision trunk round-trips too
    sq = build_backbone("squeezenet1_0", input_convention="caffe")
    save_backbone(sq, tmp_path / "sq.pt")
    back = build_backbone("squeezenet1_0", tmp_path / "sq.pt")
    assert back.input_convention.name == "caffe"
    torch.testing.assert_close(back(x), sq(x))
    assert math.isclose(back.offset, 17.0)
