"""The tiny run that the training tests share: a synthetic VOC tree and its feature caches."""

import pytest
import torch

from spp_detect.artifacts.layout import features_path
from spp_detect.config import load_config
from spp_detect.datasets import open_dataset
from spp_detect.features.extract import ExtractSettings, cache_meta, extract_split, finalize_index
from tests.helpers import jittered_proposals


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from spp_detect.backbones import build_backbone
    from tests.helpers import make_voc_tree

    root = make_voc_tree(tmp_path_factory.mktemp("data") / "voc", n_images=8,
                         splits={"train": [0, 1, 2, 3, 4], "val": [5], "test": [6, 7]})
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    backbone = build_backbone("zf5", "none", width=0.25)
    settings = ExtractSettings(scales=(96, 128), flip=True, norm_sample_images=5)
    for split in ("train", "val", "test"):
        ds = open_dataset(str(root), split)
        stamp = {"split": split, "data_fingerprint": ds.fingerprint(), "image_files": ds.files_fingerprint()}
        path = features_path(run, split)
        extract_split(ds, jittered_proposals(ds), backbone, settings, path, stamp)
        finalize_index(path, ds.image_ids, stamp, cache_meta(backbone, settings), settings)
    cfg = load_config(None, [
        "finetune.fc_dim=32", "finetune.iterations=20", "finetune.lr=0.01", "finetune.lr_steps=[15]",
        "finetune.val_every=10", "finetune.batch_size=32", "finetune.images_per_batch=4",
        "svm.retrain_every=50", "svm.workers=1", "svm.C=0.1", "detect.score_floor=-10",
    ])
    return cfg, run, root
