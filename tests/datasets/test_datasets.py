import json

import numpy as np
import pytest

from spp_detect.datasets import VOC_CLASSES, open_dataset
from spp_detect.datasets.coco import read_coco
from spp_detect.errors import DataError
from tests.helpers import write_voc_xml


def test_tiny_voc_reads_back(tiny_voc):
    ds = open_dataset(str(tiny_voc), "trainval")
    assert ds.classes == ("circle", "square")
    assert len(ds) == 4
    r = ds.record("000003")
    assert r.boxes.dtype == np.float32 and r.boxes.shape == (2, 4)
    assert r.difficult.tolist() == [False, True]
    assert ds.fingerprint() == open_dataset(str(tiny_voc), "trainval").fingerprint()
    assert ds.fingerprint() != open_dataset(str(tiny_voc), "train").fingerprint()


def test_voc_box_converted_to_internal(tiny_voc):
    write_voc_xml(tiny_voc / "Annotations" / "000000.xml", "000000.jpg", 128, 96,
                  [{"name": "square", "box": (1, 1, 10, 20), "difficult": 1, "truncated": 1}])
    r = open_dataset(str(tiny_voc), "train").record("000000")
    assert r.boxes.tolist() == [[0, 0, 9, 19]]
    assert r.labels.tolist() == [1] and r.difficult.tolist() == [True] and r.truncated.tolist() == [True]


@pytest.mark.parametrize(
    "objects, match",
    [
        ([{"name": "dragon", "box": (1, 1, 5, 5)}], r"object\[0\]/name.*'dragon'.*circle, square"),
        ([{"name": "circle", "box": (10, 1, 5, 5)}], r"object\[0\]/bndbox.*x1 > x2"),
        ([{"name": "circle", "box": (1, 1, 500, 5)}], r"outside the 128x96 image"),
    ],
)
def test_bad_annotations_name_file_field_value(tiny_voc, objects, match):
    xml = tiny_voc / "Annotations" / "000001.xml"
    write_voc_xml(xml, "000001.jpg", 128, 96, objects)
    with pytest.raises(DataError, match=match) as info:
        open_dataset(str(tiny_voc), "trainval")
    assert "000001.xml" in str(info.value)
    ds = open_dataset(str(tiny_voc), "trainval", skip_bad=True)
    assert len(ds) == 3 and ds.n_skipped == 1


def test_malformed_xml_missing_image_and_split(tiny_voc):
    (tiny_voc / "Annotations" / "000002.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match="000002.xml.*malformed XML"):
        open_dataset(str(tiny_voc), "trainval")
    (tiny_voc / "ImageSets" / "Main" / "odd.txt").write_text("000000\n999999\n")
    with pytest.raises(DataError, match=r"odd.txt.*'image_id'.*'999999'"):
        open_dataset(str(tiny_voc), "odd")
    (tiny_voc / "JPEGImages" / "000000.jpg").unlink()
    with pytest.raises(DataError, match="000000.jpg.*image file is missing"):
        open_dataset(str(tiny_voc), "train")
    with pytest.raises(DataError, match="split file not found; splits here:.*train"):
        open_dataset(str(tiny_voc), "nosuch")


def test_named_dataset_resolution(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="dataset folder not found.*data fetch voc2007"):
        open_dataset("voc2007", "test", data_root=tmp_path)
    with pytest.raises(DataError, match="unknown dataset; use one of voc2007"):
        open_dataset("imagenet", "test", data_root=tmp_path)


def test_shared_voc2007(shared_voc):
    root = shared_voc.parent.parent
    ds = open_dataset("voc2007", "val_mini", data_root=root)
    assert ds.classes == VOC_CLASSES
    assert len(ds) == 200
    n_objects = sum(len(r.boxes) for r in ds)
    assert n_objects > 300
    for r in ds:
        assert r.path.is_file()
        assert (r.boxes[:, 2] <= r.width - 1).all() and (r.boxes[:, 3] <= r.height - 1).all()
        assert (r.boxes >= 0).all()


def _coco_file(tmp_path, anns):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    import cv2

    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((50, 60, 3), np.uint8))
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 60, "height": 50}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
    }
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(data))
    return path, img_dir


def test_coco_reader(tmp_path):
    path, img_dir = _coco_file(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 60, 50], "iscrowd": 1},
    ])
    ds = read_coco(path, img_dir)
    assert ds.classes == ("dog", "cat") and ds.category_ids == (1, 3)
    r = ds.records[0]
    assert r.image_id == "7" and r.source_id == 7
    assert r.boxes.tolist() == [[10, 5, 29, 14], [0, 0, 59, 49]]
    assert r.labels.tolist() == [1, 0] and r.ignore.tolist() == [False, True]
    ds2 = open_dataset(str(path), "x", image_dir=img_dir)
    assert len(ds2) == 1


def test_coco_errors(tmp_path):
    path, img_dir = _coco_file(tmp_path, [{"id": 1, "image_id": 7, "category_id": 99, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(DataError, match=r"category_id.*99"):
        read_coco(path, img_dir)
    path.write_text("{not json")
    with pytest.raises(DataError, match="instances_x.json.*malformed JSON"):
        read_coco(path, img_dir)
