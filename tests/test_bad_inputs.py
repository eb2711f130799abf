"""Bad input gets a clear error naming the file, the field and the value (hardening)."""

import json

import numpy as np
import pytest
import torch

from spp_detect.datasets import open_dataset
from spp_detect.datasets.coco import read_coco
from spp_detect.errors import ArtifactError, DataError
from tests.helpers import make_voc_tree


def _coco(tmp_path, images=None, anns=None):
    import cv2

    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((373, 363, 3), np.uint8))
    data = {
        "images": images if images is not None else [{"id": 7, "file_name": "a.jpg", "width": 363, "height": 373}],
        "annotations": anns if anns is not None else [],
        "categories": [{"id": 1, "name": "dog"}],
    }
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(data))
    return path, img_dir


# ------------------------------------------------------------------------------------------ splits


def test_a_duplicate_image_id_in_a_voc_split_is_named(tmp_path):
    root = make_voc_tree(tmp_path / "voc", n_images=3, splits={"train": [0, 1, 0]})
    with pytest.raises(DataError, match=r"train.txt, field 'split', value '000000': image id listed twice \(line 3\)"):
        open_dataset(str(root), "train")


def test_an_empty_split_is_refused_naming_its_file(tmp_path):
    root = make_voc_tree(tmp_path / "voc", n_images=2, splits={"train": [0], "empty": []})
    with pytest.raises(DataError, match=r"empty.txt, field 'split', value 'empty': the split lists no image"):
        open_dataset(str(root), "empty")
    path, img_dir = _coco(tmp_path, images=[])
    with pytest.raises(DataError, match=r"instances_x.json, field 'images', value \[\]: the file lists no image"):
        read_coco(path, img_dir)


# ------------------------------------------------------------------------------------------ COCO


@pytest.mark.parametrize("images, anns, match", [
    ([{"id": 7, "file_name": "a.jpg", "width": "wide", "height": 373}], [],
     r"field 'images\[0\].width', value 'wide': must be an integer"),
    (None, [{"id": 1, "image_id": 7, "category_id": 1, "bbox": "a"}],
     r"field 'annotations\[image_id=7\]\[0\].bbox', value 'a': bbox must be \[x, y, w, h\]"),
    (None, [{"id": 1, "image_id": 7, "category_id": 1, "bbox": ["1", 2, 3, 4]}],
     r"bbox must be \[x, y, w, h\] numbers"),
    (None, [{"id": 1, "image_id": 8, "category_id": 1, "bbox": [1, 2, 3, 4]}],
     r"field 'annotations\[0\].image_id', value 8: no image has this id"),
    ([{"id": 7, "file_name": "a.jpg", "width": 363, "height": 373}] * 2, [],
     r"field 'images\[1\].id', value 7: image id also used by images\[0\]"),
    ([{"id": 7, "file_name": "/etc/passwd", "width": 363, "height": 373}], [],
     r"field 'images\[0\].file_name', value '/etc/passwd': must be a path inside the image folder"),
    ([{"id": 7, "file_name": "../x/a.jpg", "width": 363, "height": 373}], [],
     r"must be a path inside the image folder"),
    (None, [{"id": 1, "image_id": 7, "category_id": [1], "bbox": [1, 2, 3, 4]}],
     r"category_id', value \[1\]: must be an integer"),
])
def test_coco_fields_of_the_wrong_kind_are_named(tmp_path, images, anns, match):
    path, img_dir = _coco(tmp_path, images, anns)
    with pytest.raises(DataError, match=match):
        read_coco(path, img_dir)


def test_coco_box_outside_names_the_images_true_size(tmp_path):
    # a 363x373 image: a continuous box may end up to a pixel past its far edge (rounding), and is
    # clipped to it; one that ends further out is an error naming the image's own size
    path, img_dir = _coco(tmp_path, anns=[{"id": 1, "image_id": 7, "category_id": 1, "bbox": [300, 300, 64, 73]}])
    assert read_coco(path, img_dir).records[0].boxes.tolist() == [[300, 300, 362, 372]]
    path, img_dir = _coco(tmp_path, anns=[{"id": 1, "image_id": 7, "category_id": 1, "bbox": [300, 300, 65, 73]}])
    with pytest.raises(DataError, match="outside the 363x373 image"):
        read_coco(path, img_dir)


# ------------------------------------------------------------------------------------------ models


def test_a_corrupt_head_file_is_an_error_naming_it(tmp_path):
    from spp_detect.head import load_head

    path = tmp_path / "head.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(ArtifactError, match=r"head.pt: not a fine-tuned head this version can read"):
        load_head(path)
    torch.save({"meta": "{", "state_dict": {}}, path)
    with pytest.raises(ArtifactError, match=r"head.pt: not a fine-tuned head this version can read"):
        load_head(path)
