"""Every command through the CLI on a tiny synthetic dataset, then 'run' on a pipeline file.

Sizes are the smallest that still exercise every stage (a quarter-width ZF-5, two small
scales, a 32-unit head, a few fine-tuning steps), so the whole chain takes about a minute on
two CPU cores. What is checked is that the stages fit together and their outputs are
readable, not detection quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.config import load_config

STAGES = ("data", "pretrain", "propose", "extract", "finetune", "train-svm", "train-bbox", "detect", "eval")

# one tiny pipeline, used both as per-command --set values and as the pipeline file's tables
TINY = {
    "backbone": {"name": "zf5", "weights": "pretrained", "width": 0.25},
    "pretrain": {"sizes": [96, 80], "eval_sizes": [80], "epochs": 1, "batch_size": 16, "fc_dim": 32,
                 "dropout": 0.0, "optimizer": "adamw", "lr": 0.001, "crops_per_image": 1, "distractor_classes": True},
    # selective search on a smaller copy of each image: most of the propose time otherwise
    "propose": {"max_proposals": 150, "workers": 1, "resize_to": 160},
    "extract": {"scales": [96, 128], "norm_sample_images": 4, "norm_sample_windows": 50},
    "finetune": {"fc_dim": 32, "iterations": 4, "lr": 0.001, "batch_size": 16, "images_per_batch": 2,
                 "flip": False, "val_every": 2, "val_images": 2},
    "svm": {"workers": 1, "retrain_every": 500},
}


def _toml(value) -> str:
    return json.dumps(value).replace(", ", ",")  # lists and strings read the same in TOML


def _sets(*sections: str) -> list[str]:
    out = []
    for section in sections:
        for key, value in TINY[section].items():
            out += ["--set", f"{section}.{key}={_toml(value)}"]
    return out


def _invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash, not a refusal: show its traceback
    return result


def _ok(*args: str):
    result = _invoke(*args)
    assert result.exit_code == 0, f"spp-detect {' '.join(args)}\n{result.output}"
    return result.output


def _pipeline_file(path: Path, data_root: Path, run: Path) -> Path:
    lines = [f"run = {_toml(str(run))}", "", "[data]", 'dataset = "synth"', f"data_root = {_toml(str(data_root))}"]
    for section, values in TINY.items():
        lines += ["", f"[{section}]"] + [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_every_command_then_the_pipeline(tmp_path):
    data_root = tmp_path / "data"
    run = tmp_path / "run"
    out = _ok("data", "synth", "--out", str(data_root / "synth"), "--train", "12", "--val", "4", "--test", "6",
              "--seed", "1")
    assert "wrote 22 images" in out
    # the dataset is 'synth' under data_root: every command after this finds it through the config
    common = ["--run", str(run), "--set", f"data.data_root={_toml(str(data_root))}"]

    out = _ok("pretrain", *common, "--backbone", "zf5", "--weights", "none", "--width", "0.25",
              "--sizes", "96,80", "--eval-sizes", "80", "--epochs", "1", "--fc-dim", "32", "--batch-size", "16",
              *_sets("pretrain"))
    assert (run / "pretrain" / "backbone.pt").is_file()
    assert load_config(run / "config.toml").backbone.weights == "pretrained"

    for split in ("train", "val", "test"):
        out = _ok("propose", *common, "--split", split, "--max-proposals", "150", "--workers", "1",
                  "--resize-to", "160")
        assert f"computed {4 if split == 'val' else 6 if split == 'test' else 12} images" in out
    recall_json = tmp_path / "recall.json"
    out = _ok("proposals-recall", *common, "--split", "test", "--json-out", str(recall_json))
    assert "recall@IoU0.5" in out
    assert json.loads(recall_json.read_text())["boxes_per_image"] <= 150

    for split in ("train", "val", "test"):
        out = _ok("extract", *common, "--split", split, "--weights", "pretrained", "--scales", "96,128",
                  *_sets("extract"))
        assert "extracted" in out
    refused = _invoke("extract", *common, "--split", "test", "--scales", "96,160")
    assert refused.exit_code != 0 and "scales" in refused.output, refused.output

    out = _ok("finetune", *common, "--iterations", "4", *_sets("finetune"))
    assert (run / "models" / "head.pt").is_file()
    _ok("train-svm", *common, "--workers", "1", *_sets("svm"))
    _ok("train-bbox", *common)
    assert (run / "models" / "svm.h5").is_file() and (run / "models" / "bbox.h5").is_file()

    out = _ok("detect", *common, "--split", "test")
    assert (run / "detections" / "test.json").is_file()
    refused = _invoke("detect", *common, "--split", "test")
    assert refused.exit_code != 0 and "--overwrite" in refused.output, refused.output

    out = _ok("eval", *common, "--split", "test")
    assert "mAP" in out
    doc = json.loads((run / "eval" / "test.json").read_text())
    assert {"metric", "mAP", "ap", "n_images"} <= set(doc) and doc["n_images"] == 6

    # loose image files: the whole test-time pipeline, one JSON and one picture each
    loose = tmp_path / "loose"
    loose.mkdir()
    images = sorted((data_root / "synth" / "JPEGImages").glob("*.jpg"))[-2:]
    for k, src in enumerate(images):
        shutil.copy(src, loose / f"photo{k}.jpg")
    shown = tmp_path / "shown"
    _ok("detect", "--run", str(run), str(loose / "photo0.jpg"), str(loose / "photo1.jpg"), "--out", str(shown))
    for k in range(2):
        record = json.loads((shown / f"photo{k}.json").read_text())
        assert isinstance(record["detections"], list)
        for det in record["detections"]:
            assert {"class", "score", "box_voc", "bbox_xywh"} <= set(det)
        picture = cv2.imread(str(shown / f"photo{k}.png"))
        assert picture is not None and picture.shape[:2] == (record["height"], record["width"])
    # bad files among them: an error naming the file, or with --skip-bad warnings and the rest done
    (loose / "notes.jpg").write_text("not an image")
    cv2.imwrite(str(loose / "strip.jpg"), np.full((8, 3000, 3), 128, np.uint8))  # too thin for the trunk
    bad = [str(loose / "notes.jpg"), str(loose / "strip.jpg"), str(loose / "photo1.jpg")]
    refused = _invoke("detect", "--run", str(run), *bad, "--out", str(tmp_path / "bad"))
    assert refused.exit_code != 0 and "notes.jpg" in refused.output, refused.output
    thin = _invoke("detect", "--run", str(run), bad[1], "--out", str(tmp_path / "bad"))
    assert thin.exit_code != 0 and "strip.jpg" in thin.output and "3000x8" in thin.output, thin.output
    skipped = _ok("detect", "--run", str(run), *bad, "--out", str(tmp_path / "bad"), "--skip-bad")
    assert (tmp_path / "bad" / "photo1.json").is_file() and "photo1.json" in skipped

    # the same tiny pipeline as one file, in its own run folder: a second run has nothing to do
    pipeline = _pipeline_file(tmp_path / "tiny.toml", data_root, tmp_path / "piped")
    first = _invoke("run", str(pipeline))
    assert first.exit_code == 0, first.output
    assert "mAP" in first.stdout and "[finetune] up to date" not in first.stderr
    again = _invoke("run", str(pipeline))
    assert again.exit_code == 0, again.output
    for stage in STAGES:
        assert f"[{stage}] up to date" in again.stderr, again.stderr


def test_the_smoke_pipeline_runs_every_stage(tmp_path):
    # pipelines/tiny.toml as `make smoke` runs it (its data and run folder moved under tmp_path)
    from pathlib import Path

    from click.testing import CliRunner

    from spp_detect.cli.main import cli

    tiny = Path(__file__).resolve().parents[1] / "pipelines" / "tiny.toml"
    result = CliRunner().invoke(cli, ["run", str(tiny), "--run", str(tmp_path / "run"),
                                      "--set", f"data.data_root={tmp_path / 'data'}"])
    assert result.exit_code == 0, result.output
    for stage in ("data", "pretrain", "propose", "extract", "finetune", "train-svm", "train-bbox", "detect", "eval"):
        assert f"[{stage}]" in result.output
    assert "mAP" in result.output and list((tmp_path / "run" / "examples").glob("*.png"))


def _coco_family(root):
    """mycoco/annotations/instances_<split>.json with images in mycoco/<split>/, as COCO ships them."""
    import json

    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    next_id = 1
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        (root / split).mkdir()
        images, anns = [], []
        for _ in range(n):
            cv2.imwrite(str(root / split / f"{next_id}.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
            images.append({"id": next_id, "file_name": f"{next_id}.jpg", "width": 128, "height": 96})
            anns.append({"id": next_id, "image_id": next_id, "category_id": 1 + next_id % 2, "bbox": [10, 10, 50, 40]})
            next_id += 1
        cats = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))


@pytest.mark.parametrize("layout", ["voc", "coco"])
def test_your_own_dataset_as_the_readme_shows(tmp_path, layout):
    # the README's "Your own dataset" commands, with the smoke pipeline and stopping after propose
    from pathlib import Path

    from click.testing import CliRunner

    from spp_detect.cli.main import cli
    from tests.helpers import make_voc_tree

    if layout == "voc":
        dataset = make_voc_tree(tmp_path / "mydata", n_images=8,
                                splits={"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]})
    else:
        _coco_family(tmp_path / "mycoco")
        dataset = tmp_path / "mycoco" / "annotations" / "instances_train.json"
    tiny = Path(__file__).resolve().parents[1] / "pipelines" / "tiny.toml"
    run = tmp_path / "runs" / "mine"
    args = ["run", str(tiny), "--run", str(run), "--set", f"data.dataset={dataset}", "--set", "data.train_split=train",
            "--set", "data.val_split=val", "--set", "data.test_split=test", "--until", "propose"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "proposals").glob("*.h5")) == ["test.h5", "train.h5", "val.h5"]
    same = CliRunner().invoke(cli, [*args[:-8], "--set", "data.test_split=train", "--until", "propose"])
    assert same.exit_code != 0 and "training split" in same.output
