import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.datasets import load_image, open_dataset, synth
from spp_detect.datasets.synth import CLASSES, generate_synth, render_image
from spp_detect.errors import DataError, OutputExistsError


@pytest.fixture(scope="module")
def rendered():
    """60 images of seed 0, made in memory: enough for the dataset-wide properties."""
    return [render_image(0, i) for i in range(60)]


def _make(out, train=4, val=2, test=3, seed=1, **kw):
    return generate_synth(out, train=train, val=val, test=test, seed=seed, show_progress=False, **kw)


def test_render_is_deterministic_per_seed_and_index():
    a, b = render_image(7, 3), render_image(7, 3)
    assert np.array_equal(a.pixels, b.pixels) and a.objects == b.objects
    other_seed, other_index = render_image(8, 3), render_image(7, 4)
    assert (other_seed.width, other_seed.height, other_seed.objects) != (a.width, a.height, a.objects)
    assert (other_index.width, other_index.height, other_index.objects) != (a.width, a.height, a.objects)


def test_dataset_is_a_fair_detection_problem(rendered):
    labels = [o.label for im in rendered for o in im.objects]
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert len(CLASSES) >= 5 and (counts > 0).sum() == len(CLASSES)
    assert counts.min() >= 0.4 * counts.mean()  # no class is rare
    per_image = [len(im.objects) for im in rendered]
    assert min(per_image) >= 1 and max(per_image) <= 6 and len(set(per_image)) >= 4
    sides = [math.sqrt((o.box[2] - o.box[0] + 1) * (o.box[3] - o.box[1] + 1)) for im in rendered for o in im.objects]
    assert max(sides) / min(sides) >= 10
    objs = [o for im in rendered for o in im.objects]
    assert any(o.difficult for o in objs) and not all(o.difficult for o in objs)
    assert any(o.truncated for o in objs) and any(o.occluded for o in objs)
    sizes = {(im.width, im.height) for im in rendered}
    aspects = [im.width / im.height for im in rendered]
    assert len(sizes) >= 50 and min(aspects) < 0.8 and max(aspects) > 1.25
    assert all(240 <= im.width <= 500 and 240 <= im.height <= 500 for im in rendered)


def test_boxes_lie_in_the_image_and_flags_follow_the_rules(rendered):
    for im in rendered:
        assert im.pixels.shape == (im.height, im.width, 3) and im.pixels.dtype == np.uint8
        for o in im.objects:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 <= x2 <= im.width - 1 and 0 <= y1 <= y2 <= im.height - 1
            assert min(x2 - x1, y2 - y1) + 1 >= synth.MIN_VISIBLE_SIDE
            assert synth.DROP_VISIBLE <= o.visible <= 1.0
            small = math.sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) < synth.DIFFICULT_SIZE
            assert o.difficult == (small or o.visible < synth.DIFFICULT_VISIBLE)
            if not (o.truncated or o.occluded):
                assert o.visible >= synth.TRUNCATED_TOLERANCE


def _distractors_by_repainting(seed: int, index: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Slow reference: repaint every pasted layer's mask in order and keep the distractors that
    show enough, with the bounding box of their own pixels in the repainted image."""
    made, pasted = {}, []
    shape_layer, paste = synth._shape_layer, synth._paste

    def recording_shape_layer(rng, shape, texture, size, aspect, bg, placed_boxes, label=-1):
        layer = shape_layer(rng, shape, texture, size, aspect, bg, placed_boxes, label)
        if placed_boxes is None:
            made[id(layer)] = synth.distractor_kind(shape, texture)
        return layer

    def recording_paste(img, layer):
        pasted.append(layer)
        paste(img, layer)

    synth._shape_layer, synth._paste = recording_shape_layer, recording_paste
    try:
        im = render_image(seed, index)
    finally:
        synth._shape_layer, synth._paste = shape_layer, paste
    owner = np.full((im.height, im.width), -1)
    shown = []
    for k, layer in enumerate(pasted):
        n = 0
        for py in range(layer.mask.shape[0]):
            for px in range(layer.mask.shape[1]):
                y, x = layer.y0 + py, layer.x0 + px
                if layer.mask[py, px] and 0 <= y < im.height and 0 <= x < im.width:
                    owner[y, x] = k
                    n += 1
        shown.append(n)
    out = []
    for k, layer in enumerate(pasted):
        ys, xs = np.nonzero(owner == k)
        if id(layer) not in made or len(ys) == 0 or len(ys) < synth.DISTRACTOR_VISIBLE * shown[k]:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        if min(box[2] - box[0], box[3] - box[1]) + 1 >= synth.DISTRACTOR_MIN_SIDE:
            out.append((made[id(layer)], box))
    return out


def test_distractors_are_annotated_where_they_show(rendered):
    for index in (0, 1, 2):
        im = render_image(0, index)
        assert [(d.name, d.box) for d in im.distractors] == _distractors_by_repainting(0, index)
        assert np.array_equal(im.pixels, rendered[index].pixels)  # the reference changed nothing
    named = [d for im in rendered for d in im.distractors]
    assert len(named) >= len(rendered)  # 2 to 8 drawn per image, most of them in view
    assert {d.name for d in named} <= set(synth.DISTRACTOR_KINDS)
    assert len({d.name for d in named}) >= 0.8 * len(synth.DISTRACTOR_KINDS)
    assert not {d.name for d in named} & set(CLASSES)


def test_box_is_the_visible_extent_after_occlusion_and_clipping():
    def square(x0, y0, n=20):
        return synth._Layer(x0, y0, np.ones((n, n), bool), np.zeros((n, n, 3), np.float32))

    # bottom square half covered by the top one; a third square half outside the frame
    layers = [square(10, 10), square(20, 10), square(-10, 60)]
    owner, visible, in_frame, total = synth._visibility(layers, 100, 120)
    assert visible.tolist() == [200, 400, 200] and in_frame.tolist() == [400, 400, 200]
    assert total.tolist() == [400, 400, 400]
    assert synth._visible_box(owner, 0, layers[0]) == (10, 10, 19, 29)
    assert synth._visible_box(owner, 1, layers[1]) == (20, 10, 39, 29)
    assert synth._visible_box(owner, 2, layers[2]) == (0, 60, 9, 79)


def test_writes_voc_that_reads_back_with_the_same_boxes(tmp_path):
    out = tmp_path / "synth"
    summary = _make(out)
    assert summary["complete"] and summary["stats"]["images"] == 9
    assert (out / "classes.txt").read_text().split() == list(CLASSES)
    train = open_dataset(str(out), "train")
    val = open_dataset(str(out), "val")
    test = open_dataset(str(out), "test")
    trainval = open_dataset(str(out), "trainval")
    assert train.classes == CLASSES
    assert train.image_ids == ["000000", "000001", "000002", "000003"]
    assert val.image_ids == ["000004", "000005"] and len(test) == 3
    assert trainval.image_ids == train.image_ids + val.image_ids
    for ds in (train, val, test):
        for rec in ds:
            im = render_image(1, int(rec.image_id))
            assert (rec.width, rec.height) == (im.width, im.height)
            assert load_image(rec.path).shape == (im.height, im.width, 3)
            assert rec.boxes.tolist() == [list(o.box) for o in im.objects]
            assert rec.labels.tolist() == [o.label for o in im.objects]
            assert rec.difficult.tolist() == [o.difficult for o in im.objects]
            assert rec.truncated.tolist() == [o.truncated for o in im.objects]
            assert rec.distractor_names == tuple(d.name for d in im.distractors)
            assert rec.distractor_boxes.tolist() == [list(d.box) for d in im.distractors]
    assert sum(len(rec.distractor_names) for rec in train) > 0
    assert summary["stats"]["distractors"] == sum(len(render_image(1, i).distractors) for i in range(9))
    # VOC XML is 1-based inclusive: one more than the internal box
    rec = train[0]
    node = ET.parse(out / "Annotations" / "000000.xml").getroot().find("object/bndbox")
    assert int(node.findtext("xmin")) == rec.boxes[0, 0] + 1 and int(node.findtext("ymax")) == rec.boxes[0, 3] + 1


def test_same_seed_gives_identical_files_and_workers_do_not_matter(tmp_path):
    _make(tmp_path / "a", seed=4)
    _make(tmp_path / "b", seed=4, workers=2)
    _make(tmp_path / "c", seed=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 9 + 4 + 2  # images and XML, four splits, classes.txt and synth.json
    for rel in files:
        if rel.name == "synth.json":
            continue  # holds timings
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    ann = [(tmp_path / d / "Annotations" / "000000.xml").read_bytes() for d in ("a", "c")]
    assert ann[0] != ann[1]


def test_refuses_to_overwrite_and_never_deletes_a_foreign_folder(tmp_path):
    out = tmp_path / "synth"
    _make(out, seed=1)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _make(out, seed=1)
    before = (out / "Annotations" / "000000.xml").read_bytes()
    _make(out, seed=2, overwrite=True)
    assert (out / "Annotations" / "000000.xml").read_bytes() != before
    assert json.loads((out / "synth.json").read_text())["seed"] == 2

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not made by 'spp-detect data synth'"):
            _make(foreign, overwrite=overwrite)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_interrupted_run_is_not_a_dataset_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "synth"
    real_write = synth.write_image
    calls = []

    def write_then_die(root, image):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(image.image_id)
        real_write(root, image)

    monkeypatch.setattr(synth, "write_image", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _make(out)
    monkeypatch.setattr(synth, "write_image", real_write)
    assert not list((out / "ImageSets" / "Main").glob("*.txt"))
    assert json.loads((out / "synth.json").read_text())["complete"] is False
    with pytest.raises(DataError, match="split file not found"):
        open_dataset(str(out), "train")
    with pytest.raises(OutputExistsError, match="seed=1 \\(now 9\\)"):
        _make(out, seed=9)

    summary = _make(out)
    assert summary["reused"] == 3 and summary["generated"] == 6
    _make(tmp_path / "fresh")
    for p in sorted((tmp_path / "fresh" / "Annotations").iterdir()):
        assert (out / "Annotations" / p.name).read_bytes() == p.read_bytes()


def test_cli_synth(tmp_path):
    runner = CliRunner()
    out = tmp_path / "s"
    args = ["data", "synth", "--out", str(out), "--train", "3", "--val", "1", "--test", "2", "--seed", "2"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "wrote 6 images" in result.output and "striped_disc" in result.output
    assert len(open_dataset(str(out), "trainval")) == 4

    again = runner.invoke(cli, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(cli, args + ["--overwrite"]).exit_code == 0

    root = tmp_path / "root"
    result = runner.invoke(cli, ["data", "synth", "--data-root", str(root), "--train", "2", "--val", "0", "--test", "1"])
    assert result.exit_code == 0, result.output
    assert len(open_dataset("synth", "test", data_root=root)) == 1

    bad = runner.invoke(cli, ["data", "synth", "--out", str(tmp_path / "x"), "--train", "-1"])
    assert bad.exit_code == 2 and "--train" in bad.output
    empty = runner.invoke(cli, ["data", "synth", "--out", str(tmp_path / "x"), "--train", "0", "--val", "0", "--test", "0"])
    assert empty.exit_code == 2 and "no images" in empty.output
    assert not (tmp_path / "x").exists()


def test_pretraining_images_extend_a_finished_dataset(tmp_path):
    out = tmp_path / "synth"
    _make(out)  # 4 train, 2 val, 3 test: ids 0..8
    assert not (out / "ImageSets" / "Main" / "pretrain.txt").exists()
    test_before = (out / "Annotations" / "000008.xml").read_bytes()

    # only the pretraining count differs: the 9 images stay, 5 are added after the test ones
    summary = _make(out, pretrain=5)
    assert summary["reused"] == 9 and summary["generated"] == 5 and summary["pretrain"] == 5
    pre = open_dataset(str(out), "pretrain")
    assert pre.image_ids == ["000000", "000001", "000002", "000003", "000009", "000010", "000011", "000012", "000013"]
    assert open_dataset(str(out), "test").image_ids == ["000006", "000007", "000008"]
    assert (out / "Annotations" / "000008.xml").read_bytes() == test_before
    # the same images as a dataset written with them from the start
    _make(tmp_path / "fresh", pretrain=5)
    assert (tmp_path / "fresh" / "JPEGImages" / "000013.jpg").read_bytes() == (out / "JPEGImages" / "000013.jpg").read_bytes()

    # the same settings again, or another split size: refused, naming what differs
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _make(out, pretrain=5)
    with pytest.raises(OutputExistsError, match="train=4 \\(now 5\\)"):
        _make(out, train=5, pretrain=5)
    # no pretraining images any more: the split goes, the detector's splits stay
    _make(out, pretrain=0)
    assert not (out / "ImageSets" / "Main" / "pretrain.txt").exists()
    assert len(open_dataset(str(out), "trainval")) == 6


def _as_annotations_v1(out):
    """Make a dataset look written before distractors were annotated."""
    for xml in (out / "Annotations").glob("*.xml"):
        tree = ET.parse(xml)
        root = tree.getroot()
        for d in root.findall("distractor"):
            root.remove(d)
        root.find("source/database").text = f"spp-detect synthetic v{synth.SYNTH_VERSION}"
        tree.write(xml)
    recipe = json.loads((out / "synth.json").read_text())
    del recipe["annotations"]
    (out / "synth.json").write_text(json.dumps(recipe))


def test_older_annotations_are_rewritten_and_the_images_kept(tmp_path):
    out = tmp_path / "synth"
    _make(out)
    files = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "synth.json"}
    _as_annotations_v1(out)
    assert all(len(r.distractor_names) == 0 for r in open_dataset(str(out), "train"))
    summary = _make(out)  # the same settings: brought up to date, not refused
    assert summary["generated"] == 9 and summary["annotations"] == synth.ANNOTATIONS_VERSION
    for p, data in files.items():
        assert p.read_bytes() == data, p  # images byte for byte, annotations as a fresh run writes them
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _make(out)  # now current: the same settings again are refused as before


def test_pipeline_brings_an_older_dataset_up_to_date(tmp_path):
    from spp_detect.config import PipelineConfig, with_values
    from spp_detect.datasets.stage import ensure_synth

    data = with_values(PipelineConfig().data, dataset="synth", data_root=str(tmp_path), synth_train=3, synth_val=1,
                       synth_test=2)
    cfg = PipelineConfig(data=data)
    assert ensure_synth(cfg) is True
    _as_annotations_v1(tmp_path / "synth")
    assert ensure_synth(cfg) is True
    assert sum(len(r.distractor_names) for r in open_dataset("synth", "train", data_root=tmp_path)) > 0
    assert ensure_synth(cfg) is False


def test_pipeline_writes_missing_splits_and_keeps_the_dataset_there(tmp_path):
    from dataclasses import replace

    from spp_detect.config import PipelineConfig, with_values
    from spp_detect.datasets.stage import ensure_synth

    data = with_values(PipelineConfig().data, dataset="synth", data_root=str(tmp_path), synth_train=3, synth_val=1,
                       synth_test=2)
    cfg = PipelineConfig(data=data)
    assert ensure_synth(cfg) is True
    assert ensure_synth(cfg) is False  # every split it reads is there: nothing to do
    # a config that pretrains on split "pretrain": its images are added, the others kept
    more = replace(cfg, data=with_values(data, pretrain_split="pretrain", synth_pretrain=4, synth_train=50))
    assert ensure_synth(more) is True
    assert len(open_dataset("synth", "pretrain", data_root=tmp_path)) == 3 + 4  # the 3 training images there
    assert len(open_dataset("synth", "test", data_root=tmp_path)) == 2
    assert ensure_synth(more) is False
    # a split the generator never writes is not its to make: left for the stage that reads it
    assert ensure_synth(replace(more, data=with_values(more.data, train_split="nosuch"))) is False
