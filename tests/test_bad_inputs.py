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
    from spp_detect.training.head import load_head

    path = tmp_path / "head.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(ArtifactError, match=r"head.pt: not a fine-tuned head this version can read"):
        load_head(path)
    torch.save({"meta": "{", "state_dict": {}}, path)
    with pytest.raises(ArtifactError, match=r"head.pt: not a fine-tuned head this version can read"):
        load_head(path)


# ------------------------------------------------------------------------------------------ run folders


def _cli(*args):
    from click.testing import CliRunner

    from spp_detect.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_refused_or_idle_command_leaves_the_saved_config_alone(tmp_path):
    from tests.helpers import write_random_proposals

    root = make_voc_tree(tmp_path / "voc", n_images=2, size=(64, 80), splits={"train": [0, 1]})
    run = tmp_path / "run"
    write_random_proposals(run, open_dataset(str(root), "train"))
    base = ["extract", "--dataset", root, "--split", "train", "--run", run, "--backbone", "zf5", "--weights", "none",
            "--set", "backbone.width=0.25", "--set", "extract.norm_sample_images=2"]
    first = _cli(*base, "--scales", "64")
    assert first.exit_code == 0, first.output
    saved = (run / "config.toml").read_text()
    assert "scales = [64]" in saved
    refused = _cli(*base, "--scales", "64,96")  # made with other scales: refused
    assert refused.exit_code != 0 and "scales" in refused.output
    assert (run / "config.toml").read_text() == saved
    idle = _cli(*base, "--scales", "64", "--set", "propose.max_proposals=100")  # nothing to do
    assert idle.exit_code == 0 and "nothing to do" in idle.output
    assert (run / "config.toml").read_text() == saved


def test_an_image_of_extreme_aspect_ratio_is_named_and_skip_bad_skips_it(tmp_path):
    import cv2

    root = make_voc_tree(tmp_path / "voc", n_images=3, size=(64, 80), splits={"train": [0, 1, 2]})
    # image 1 becomes a 4000 x 20 strip (its annotation says so; its boxes fit inside)
    cv2.imwrite(str(root / "JPEGImages" / "000001.jpg"), np.full((20, 4000, 3), 90, np.uint8))
    from tests.helpers import write_voc_xml

    write_voc_xml(root / "Annotations" / "000001.xml", "000001.jpg", 4000, 20,
                  [{"name": "circle", "box": (10, 2, 300, 18), "difficult": 0}])
    run = tmp_path / "run"
    common = ["--dataset", root, "--split", "train", "--run", run, "--set", "propose.mode=lite",
              "--set", "propose.resize_to=128"]
    refused = _cli("propose", *common)
    assert refused.exit_code != 0 and "000001" in refused.output and "4000x20" in refused.output, refused.output
    assert _cli("propose", *common, "--skip-bad").exit_code == 0
    ext = ["extract", *common, "--backbone", "zf5", "--weights", "none", "--set", "backbone.width=0.25",
           "--scales", "64", "--set", "extract.norm_sample_images=2"]
    refused = _cli(*ext, "--set", "data.skip_bad=false")  # (propose --skip-bad saved it in the run's config)
    assert refused.exit_code != 0 and "000001" in refused.output, refused.output
    done = _cli(*ext, "--skip-bad")
    assert done.exit_code == 0, done.output
    from spp_detect.features.cache import FeatureCache

    assert FeatureCache(run / "features" / "train.h5").image_ids == ["000000", "000002"]


def test_a_data_error_survives_a_process_boundary():
    # a worker's bad-image error reaches the parent whole (it broke the process pool once)
    import pickle

    err = pickle.loads(pickle.dumps(DataError("a.jpg", "too thin", "size", "4000x20")))
    assert str(err) == "a.jpg, field 'size', value '4000x20': too thin" and err.field == "size"


def test_a_second_run_on_the_same_output_is_refused_naming_the_first(tmp_path):
    from spp_detect.artifacts.lock import output_lock

    root = make_voc_tree(tmp_path / "voc", n_images=2, size=(64, 80), splits={"train": [0, 1]})
    run = tmp_path / "run"
    with output_lock(run / "proposals" / "train.h5"):  # a propose run in progress, here
        second = _cli("propose", "--dataset", root, "--split", "train", "--run", run, "--set", "propose.mode=lite")
    assert second.exit_code != 0 and "train.h5 is being written by process" in second.output, second.output
    assert not (run / "proposals" / "train.h5").exists()
    assert _cli("propose", "--dataset", root, "--split", "train", "--run", run, "--set", "propose.mode=lite",
                "--workers", "1").exit_code == 0  # released: the next run goes ahead


# ------------------------------------------------------------------------------------------ stale caches


def test_an_image_replaced_by_another_of_the_same_size_makes_its_caches_stale(tmp_path):
    import os

    import cv2

    from tests.helpers import write_random_proposals

    root = make_voc_tree(tmp_path / "voc", n_images=2, size=(64, 80), splits={"train": [0, 1]})
    run = tmp_path / "run"
    write_random_proposals(run, open_dataset(str(root), "train"))
    base = ["extract", "--dataset", root, "--split", "train", "--run", run, "--backbone", "zf5", "--weights", "none",
            "--set", "backbone.width=0.25", "--set", "extract.norm_sample_images=2", "--scales", "64"]
    assert _cli(*base).exit_code == 0
    assert "nothing to do" in _cli(*base).output
    # same size, same annotations, other pixels, and the old modification time
    image = open_dataset(str(root), "train").records[0].path
    st = os.stat(image)
    cv2.imwrite(str(image), np.full((64, 80, 3), 200, np.uint8))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = _cli(*base)  # its proposals were made from the old pixels: refused, naming the key and the fix
    assert again.exit_code != 0 and "image_files" in again.output and "spp-detect propose" in again.output
    propose = _cli("propose", "--dataset", root, "--split", "train", "--run", run, "--set", "propose.mode=lite")
    assert propose.exit_code != 0 and "image_files" in propose.output and "--overwrite" in propose.output


def test_a_dataset_copied_without_its_file_times_keeps_its_caches(tmp_path):
    import os
    import shutil

    from tests.helpers import write_random_proposals

    root = make_voc_tree(tmp_path / "voc", n_images=2, size=(64, 80), splits={"train": [0, 1]})
    run = tmp_path / "run"
    write_random_proposals(run, open_dataset(str(root), "train"))
    base = ["extract", "--split", "train", "--run", run, "--backbone", "zf5", "--weights", "none",
            "--set", "backbone.width=0.25", "--set", "extract.norm_sample_images=2", "--scales", "64"]
    assert _cli(*base, "--dataset", root).exit_code == 0
    copy = tmp_path / "copy" / root.name
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # bytes only, as `cp -r`: new times
    for image in open_dataset(str(copy), "train").records:
        os.utime(image.path, ns=(10**18, 10**18))
    again = _cli(*base, "--dataset", copy)
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_a_new_norm_target_makes_the_trained_models_stale(tmp_path):
    from dataclasses import replace

    from spp_detect.config import merge
    from spp_detect.detection.stage import detect_stamp, run_detect
    from spp_detect.training.stage import run_finetune, run_train_svm
    from tests.training.conftest import tiny_run as _fixture

    cfg, run, root = _fixture.__wrapped__(_Factory(tmp_path))
    train, test = open_dataset(str(root), "train"), open_dataset(str(root), "test")
    run_finetune(cfg, run, train, None)
    run_train_svm(cfg, run, train)
    other = merge(cfg, {"extract": {"norm_target": 10.0}})
    with pytest.raises(ArtifactError, match="norm_target"):
        run_finetune(other, run, train, None)
    with pytest.raises(ArtifactError, match="norm_target"):
        run_train_svm(other, run, train)
    with pytest.raises(ArtifactError, match="norm_target"):
        run_detect(replace(other, detect=replace(other.detect, bbox_regression=False)), run, test)
    assert detect_stamp(cfg, run, test) != detect_stamp(other, run, test)


class _Factory:
    """tmp_path_factory for a module-scoped fixture called once here."""

    def __init__(self, base):
        self.base, self.n = base, 0

    def mktemp(self, name):
        self.n += 1
        path = self.base / f"{name}{self.n}"
        path.mkdir()
        return path


# ------------------------------------------------------------------------------------------ COCO splits


def _coco_split(folder, name, image_ids):
    import cv2

    images = []
    for i in image_ids:
        cv2.imwrite(str(folder / "images" / f"{i}.jpg"), np.zeros((40, 50, 3), np.uint8))
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 50, "height": 40})
    anns = [{"id": 10 * i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20]} for i in image_ids]
    path = folder / "annotations" / f"instances_{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "dog"}]}))
    return path


def test_coco_splits_are_one_file_each_and_a_pipeline_never_tests_on_its_training_images(tmp_path):
    from spp_detect.config import load_config
    from spp_detect.errors import ConfigError
    from spp_detect.pipeline import check_splits

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    train = _coco_split(tmp_path, "train", [1, 2, 3])
    val = _coco_split(tmp_path, "val", [4, 5])
    kw = {"image_dir": tmp_path / "images"}
    assert open_dataset(str(train), "train", **kw).image_ids == ["1", "2", "3"]
    by_name = open_dataset(str(train), "val", **kw)  # the sibling file, not the training file again
    assert by_name.image_ids == ["4", "5"] and by_name.split == "val"
    assert open_dataset(str(train), str(val), **kw).image_ids == ["4", "5"]  # by path
    with pytest.raises(DataError, match="instances_test.json"):
        open_dataset(str(train), "test", **kw)  # no file for it: never the training images instead
    coco = ["data.dataset=" + str(train), "data.train_split=train", "data.val_split=", "data.test_split=" + str(train)]
    with pytest.raises(ConfigError, match="data.test_split.*training split"):
        check_splits(load_config(None, coco))
    check_splits(load_config(None, [*coco[:3], "data.test_split=val"]))  # other images: fine
    with pytest.raises(ConfigError, match="data.test_split.*training split"):
        check_splits(load_config(None, ["data.train_split=trainval", "data.test_split=trainval"]))
    with pytest.raises(ConfigError, match="model-selection split"):
        check_splits(load_config(None, ["data.val_split=test", "data.test_split=test"]))
