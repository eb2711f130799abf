"""Round trips through comp4 folders and COCO results JSON; malformed input names its place."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spp_detect.datasets import open_dataset
from spp_detect.errors import DataError, OutputExistsError
from spp_detect.evaluation import (
    ClassDetections,
    DetectionCollector,
    read_coco_results,
    read_comp4,
    read_detections,
    write_coco_results,
    write_comp4,
)
from spp_detect.evaluation.results_io import read_comp4_file


@pytest.fixture
def tiny_ds(tiny_voc):
    return open_dataset(str(tiny_voc), "trainval")


def random_detections(ds, rng, n_per_class=7, empty_class=None):
    collector = DetectionCollector(ds.classes)
    for name in ds.classes:
        if name == empty_class:
            continue
        for _ in range(n_per_class):
            r = ds.records[int(rng.integers(len(ds)))]
            xy = rng.uniform(0, 40, 2)
            wh = rng.uniform(1, 40, 2)
            box = np.concatenate([xy, xy + wh - 1])
            collector.add(r.image_id, name, box[None], [rng.normal()])
    return collector.finish()


def assert_same(a, b, box_tol):
    assert set(a) == set(b)
    for name in a:
        key_a = sorted(zip(a[name].image_ids, a[name].scores, map(tuple, a[name].boxes), strict=True))
        key_b = sorted(zip(b[name].image_ids, b[name].scores, map(tuple, b[name].boxes), strict=True))
        assert len(key_a) == len(key_b)
        for (ia, sa, ba), (ib, sb, bb) in zip(key_a, key_b, strict=True):
            assert ia == ib and sa == sb  # scores survive exactly
            np.testing.assert_allclose(ba, bb, atol=box_tol)


def test_collector_accepts_names_and_labels(tiny_ds):
    c = DetectionCollector(tiny_ds.classes)
    c.add("000000", 1, [[0, 0, 9, 9]], [0.5])
    c.add("000001", tiny_ds.classes[1], np.zeros((0, 4)), [])
    dets = c.finish()
    assert len(dets[tiny_ds.classes[0]]) == 0
    assert dets[tiny_ds.classes[1]].image_ids.tolist() == ["000000"]
    with pytest.raises(ValueError, match="unknown class"):
        c.add("000000", "zebra", [[0, 0, 9, 9]], [0.5])


def test_comp4_round_trip_and_one_based_lines(tmp_path, tiny_ds):
    rng = np.random.default_rng(0)
    dets = random_detections(tiny_ds, rng, empty_class=tiny_ds.classes[1])
    paths = write_comp4(tmp_path / "res", dets, tiny_ds.classes, "trainval")
    assert [p.name for p in paths] == [f"comp4_det_trainval_{c}.txt" for c in tiny_ds.classes]
    assert paths[1].read_text() == ""  # an empty class still gets its file
    back = read_comp4(tmp_path / "res", tiny_ds.classes, "trainval", tiny_ds.image_ids)
    assert_same(dets, back, box_tol=0.006)

    one = {tiny_ds.classes[0]: ClassDetections.from_rows([("000002", 0.25, (0.0, 4.0, 9.0, 19.0))])}
    path = write_comp4(tmp_path / "one", one, tiny_ds.classes, "test")[0]
    assert path.read_text() == "000002 0.25 1.00 5.00 10.00 20.00\n"


def test_comp4_refuses_overwrite(tmp_path, tiny_ds):
    dets = random_detections(tiny_ds, np.random.default_rng(1))
    write_comp4(tmp_path, dets, tiny_ds.classes, "trainval")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_comp4(tmp_path, dets, tiny_ds.classes, "trainval")
    write_comp4(tmp_path, dets, tiny_ds.classes, "trainval", overwrite=True)


@pytest.mark.parametrize(
    "line, field",
    [
        ("000001 0.5 1 2 3", "line"),
        ("000001 high 1 2 3 4", "score"),
        ("000001 nan 1 2 3 4", "score"),
        ("000001 0.5 1 2 x 4", "xmax"),
        ("000001 0.5 9 2 3 4", "box"),
        ("999999 0.5 1 2 3 4", "image_id"),
    ],
)
def test_comp4_malformed_line_names_file_line_and_field(tmp_path, tiny_ds, line, field):
    path = tmp_path / f"comp4_det_trainval_{tiny_ds.classes[0]}.txt"
    path.write_text("000000 0.9 1 1 10 10\n\n" + line + "\n")
    with pytest.raises(DataError, match=rf"{path.name}:3, field '{field}'"):
        read_comp4_file(path, tiny_ds.image_ids)
    with pytest.raises(DataError, match=rf"{path.name}:3"):
        read_detections(tmp_path, tiny_ds)


def test_comp4_folder_errors(tmp_path, tiny_ds):
    dets = random_detections(tiny_ds, np.random.default_rng(2))
    write_comp4(tmp_path, dets, tiny_ds.classes, "val")
    with pytest.raises(DataError, match=r"split 'trainval'.*files here are for: val"):
        read_comp4(tmp_path, tiny_ds.classes, "trainval")
    (tmp_path / "comp4_det_val_zebra.txt").write_text("")
    with pytest.raises(DataError, match=r"comp4_det_val_zebra.txt.*'zebra'"):
        read_comp4(tmp_path, tiny_ds.classes, "val")
    (tmp_path / "comp4_det_val_zebra.txt").unlink()
    (tmp_path / f"comp3_det_val_{tiny_ds.classes[0]}.txt").write_text("")
    with pytest.raises(DataError, match="two result files"):
        read_comp4(tmp_path, tiny_ds.classes, "val")


def test_comp4_ignores_longer_split_names_and_warns_on_missing_class(tmp_path, tiny_ds, caplog):
    one = {tiny_ds.classes[0]: ClassDetections.from_rows([("000001", 0.5, (0.0, 0.0, 9.0, 9.0))])}
    write_comp4(tmp_path, one, tiny_ds.classes, "val_mini")
    path = tmp_path / f"comp4_det_val_{tiny_ds.classes[0]}.txt"
    path.write_text("000002 0.7 1 1 10 10\n")
    back = read_comp4(tmp_path, tiny_ds.classes, "val")
    assert back[tiny_ds.classes[0]].image_ids.tolist() == ["000002"]
    assert len(back[tiny_ds.classes[1]]) == 0
    assert "no result file for 1 class" in caplog.text


def test_coco_round_trip_voc_dataset(tmp_path, tiny_ds):
    dets = random_detections(tiny_ds, np.random.default_rng(3))
    path = write_coco_results(tmp_path / "d.json", dets, tiny_ds)
    entries = json.loads(path.read_text())
    assert len(entries) == sum(len(d) for d in dets.values())
    assert {type(e["image_id"]) for e in entries} == {str}  # VOC ids are strings like '000001'
    assert {e["category_id"] for e in entries} == {1, 2}
    back = read_coco_results(path, tiny_ds)
    assert_same(dets, back, box_tol=0.011)  # x and w each rounded to 1/100: x2 within 2/200
    with pytest.raises(OutputExistsError):
        write_coco_results(path, dets, tiny_ds)


def test_coco_box_convention(tmp_path, tiny_ds):
    one = {tiny_ds.classes[1]: ClassDetections.from_rows([("000003", 0.5, (2.0, 3.0, 11.0, 7.0))])}
    entry = json.loads(write_coco_results(tmp_path / "d.json", one, tiny_ds).read_text())[0]
    assert entry == {"image_id": "000003", "category_id": 2, "bbox": [2.0, 3.0, 10.0, 5.0], "score": 0.5}


def write_coco_dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    imgs = []
    for k, img_id in enumerate((17, 42)):
        (images / f"{img_id}.jpg").write_bytes(b"not decoded by the reader")
        imgs.append({"id": img_id, "file_name": f"{img_id}.jpg", "width": 100 + k, "height": 80})
    cats = [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}]
    anns = [{"id": 1, "image_id": 17, "category_id": 9, "bbox": [5, 5, 20, 30], "iscrowd": 0}]
    ann = tmp_path / "instances_val.json"  # COCO splits are one file each
    ann.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    return open_dataset(str(ann), "val", image_dir=images)


def test_coco_round_trip_coco_dataset(tmp_path):
    ds = write_coco_dataset(tmp_path)
    dets = {"dog": ClassDetections.from_rows([("42", 0.3, (1.0, 2.0, 10.0, 20.0)), ("17", 0.9, (5.0, 5.0, 24.0, 34.0))])}
    path = write_coco_results(tmp_path / "d.json", dets, ds)
    entries = json.loads(path.read_text())
    assert entries[0] == {"image_id": 42, "category_id": 9, "bbox": [1.0, 2.0, 10.0, 19.0], "score": 0.3}
    back = read_coco_results(path, ds)
    assert_same({"cat": ClassDetections.empty(), **dets}, back, box_tol=1e-9)


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}, r"\[1\].image_id"),
        ({"image_id": "000001", "category_id": 7, "bbox": [0, 0, 5, 5], "score": 1.0}, r"\[1\].category_id"),
        ({"image_id": "000001", "category_id": 1, "bbox": [0, 0, 5], "score": 1.0}, r"\[1\].bbox"),
        ({"image_id": "000001", "category_id": 1, "bbox": [0, 0, 0, 5], "score": 1.0}, r"\[1\].bbox"),
        ({"image_id": "000001", "category_id": 1, "bbox": [0, 0, 5, 5], "score": "high"}, r"\[1\].score"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}, r"\[1\].image_id"),
        ("oops", r"\[1\]"),
    ],
)
def test_coco_malformed_entry_names_index_and_field(tmp_path, tiny_ds, entry, field):
    path = tmp_path / "d.json"
    good = {"image_id": "000000", "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.5}
    path.write_text(json.dumps([good, entry]))
    with pytest.raises(DataError, match=rf"d.json, field '{field}'"):
        read_detections(path, tiny_ds)


def test_coco_file_level_errors(tmp_path, tiny_ds):
    path = tmp_path / "d.json"
    path.write_text("[{")
    with pytest.raises(DataError, match="d.json: malformed JSON"):
        read_detections(path, tiny_ds)
    path.write_text('{"detections": []}')
    with pytest.raises(DataError, match="JSON list"):
        read_detections(path, tiny_ds)
    other = tmp_path / "d.csv"
    other.write_text("")
    with pytest.raises(DataError, match="comp4_det_<split>_<class>.txt files or a COCO results .json"):
        read_detections(other, tiny_ds)
