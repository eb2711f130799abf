"""svm.select = "val": each class's SVM chosen among its retrains' models by AP on the validation split."""

import json

import numpy as np
import pytest

from spp_detect.training.svm_select import Candidates, choose


def _candidates(owners, retrains, dim=3):
    rng = np.random.default_rng(0)
    models = [[] for _ in range(max(owners) + 2)]  # the last class has no candidates
    for k, r in zip(owners, retrains, strict=True):
        models[k].append((r, rng.normal(size=dim).astype(np.float32), float(rng.normal())))
    return Candidates.from_models(models, dim), models


def test_choose_takes_each_class_s_best_ap_ties_to_the_later_retrain():
    cands, models = _candidates([0, 0, 0, 1, 1, 2, 2], [1, 2, 3, 1, 2, 1, 4])
    ap = np.array([0.2, 0.5, 0.1, 0.3, 0.3, np.nan, np.nan])
    w, b, records = choose(cands, ap, n_classes=4, dim=3)
    # class 0: retrain 2 beats the last; class 1: a tie, the later wins; class 2: no ground truth, the last
    assert [r["chosen"] for r in records[:3]] == [2, 2, 4]
    assert [r["last"] for r in records[:3]] == [3, 2, 4]
    for k, chosen in enumerate([1, 1, 1]):
        np.testing.assert_array_equal(w[k], models[k][chosen][1])
        assert b[k] == np.float32(models[k][chosen][2])
    assert records[0]["val_ap"] == [0.2, 0.5, 0.1] and records[2]["val_ap"] == [None, None]
    # a class without candidates never fires, as an untrained class
    assert records[3] is None and not w[3].any() and b[3] == -1.0


def test_candidates_stack_every_class_s_models_in_order():
    cands, models = _candidates([0, 0, 2], [1, 3, 1])
    assert len(cands) == 3 and cands.owner.tolist() == [0, 0, 2] and cands.retrain.tolist() == [1, 3, 1]
    np.testing.assert_array_equal(cands.weights[1], models[0][1][1])
    empty = Candidates.from_models([[], []], 5)
    assert len(empty) == 0 and empty.weights.shape == (0, 5)


@pytest.fixture
def pool_run(tiny_run, tmp_path):
    import shutil

    from spp_detect.config import merge
    from spp_detect.datasets import open_dataset

    cfg, run, root = tiny_run
    mine = tmp_path / "run"
    shutil.copytree(run / "features", mine / "features")
    cfg = merge(cfg, {"svm": {"features": "pool", "select": "val", "retrain_every": 20},
                      "detect": {"bbox_regression": False}})
    # the module's 2-image test split stands in for a validation split
    return cfg, mine, open_dataset(str(root), "train"), open_dataset(str(root), "test")


def test_the_chosen_models_score_on_validation_what_detect_and_eval_measure(pool_run):
    from spp_detect.detection.stage import run_detect
    from spp_detect.evaluation.stage import run_eval
    from spp_detect.training.stage import run_train_svm

    cfg, mine, train, val = pool_run
    summary = run_train_svm(cfg, mine, train, val_ds=val)
    selection = summary["selection"]
    assert selection["split"] == "test"
    records = selection["classes"]
    assert all(r is not None and len(r["retrains"]) >= 2 for r in records)
    assert any(len(set(r["val_ap"])) > 1 for r in records)  # the retrains' models do differ on validation
    for rec in records:
        aps = rec["val_ap"]
        best = max(aps)
        assert rec["chosen"] == rec["retrains"][len(aps) - 1 - aps[::-1].index(best)]
        assert rec["last"] == rec["retrains"][-1]
    import h5py

    with h5py.File(mine / "models" / "svm.h5", "r") as h5:
        assert json.loads(h5.attrs["selection"]) == selection
        written_w, written_b = h5["weights"][()], h5["bias"][()]
    # every candidate is kept beside the choice: the chosen retrain's model is what was written
    cands = Candidates.read(mine / "models" / "svm.h5")
    for k, rec in enumerate(records):
        assert sorted(cands.retrain[cands.owner == k].tolist()) == rec["retrains"]
        row = np.nonzero((cands.owner == k) & (cands.retrain == rec["chosen"]))[0][0]
        np.testing.assert_array_equal(cands.weights[row], written_w[k])
        assert np.float32(cands.bias[row]) == written_b[k]  # svm.h5's biases are float32
    # the slow way round: the written SVMs through detect (its own scoring loop) and eval
    run_detect(cfg, mine, val)
    ev = json.loads(open(run_eval(cfg, mine, val)["path"]).read())
    for name, rec in zip(val.classes, records, strict=True):
        chosen_ap = rec["val_ap"][rec["retrains"].index(rec["chosen"])]
        assert ev["ap"][name] == pytest.approx(chosen_ap, abs=1e-6)


def test_select_val_is_refused_without_a_validation_split_or_its_features(pool_run, tmp_path):
    from spp_detect.config import load_config, merge
    from spp_detect.errors import ConfigError
    from spp_detect.training.stage import run_train_svm

    cfg, mine, train, val = pool_run
    with pytest.raises(ConfigError, match="data.val_split"):
        run_train_svm(cfg, mine, train)
    (mine / "features" / "test.h5").rename(mine / "features" / "elsewhere.h5")
    with pytest.raises(ConfigError, match=r"features/test.h5 does not exist.*extract --split test"):
        run_train_svm(cfg, mine, train, val_ds=val)
    assert not (mine / "models" / "svm.h5").exists()
    with pytest.raises(ConfigError, match="svm.select = 'val'.*data.val_split"):
        load_config(None, ["svm.select=val", 'data.val_split=""'])
    # the paper's choice leaves svm.select out of the stamp: models trained before it existed stay current
    last = merge(cfg, {"svm": {"select": "last"}})
    run_train_svm(last, mine, train)
    assert run_train_svm(last, mine, train)["skipped"]


def test_train_svm_says_which_retrain_each_class_keeps(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from spp_detect.cli.main import cli
    from spp_detect.datasets import open_dataset
    from tests.helpers import make_voc_tree

    root = make_voc_tree(tmp_path / "voc", classes=("circle", "square", "star"), n_images=3,
                         splits={"train": [0, 1], "val": [2]})
    classes = open_dataset(str(root), "train").classes
    seen = {}

    def fake(cfg, run, train, overwrite=False, val_ds=None):
        seen["val"] = val_ds.split
        final = {"positives": 10, "kept_negatives": 50, "objective": 0.001, "collapsed": False, "retrain": 3}
        records = [{"retrains": [1, 2, 3], "val_ap": [0.1, 0.4, 0.2], "chosen": 2, "last": 3},
                   {"retrains": [1, 2], "val_ap": [0.3, 0.5], "chosen": 2, "last": 2}, None]
        return {"path": str(run / "models" / "svm.h5"), "retrains": [3, 2, 0], "final": [final, final, {}],
                "selection": {"split": "val", "classes": records}}

    monkeypatch.setattr("spp_detect.training.stage.run_train_svm", fake)
    out = CliRunner().invoke(cli, ["train-svm", "--dataset", str(root), "--split", "train", "--val-split", "val",
                                   "--run", str(tmp_path / "run"), "--set", 'svm.select="val"'])
    assert out.exit_code == 0, out.output
    assert seen["val"] == "val"
    assert f"{classes[0]}: retrain 2 of 3, AP 0.4000 (the last model's 0.2000)" in out.output
    assert f"{classes[1]}: retrain 2 of 2, AP 0.5000\n" in out.output
    assert "1 of 2 classes keep an earlier model than their last" in out.output
