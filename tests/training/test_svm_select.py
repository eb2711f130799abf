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
        assert rec["best"] == rec["retrains"][len(aps) - 1 - aps[::-1].index(best)]
        assert rec["last"] == rec["retrains"][-1]
        # the best leaves the last model only when its gain passed the bootstrap test
        passed = rec["p"] is not None and rec["p"] <= cfg.svm.select_significance
        assert rec["chosen"] == (rec["best"] if passed else rec["last"])
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
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="svm.select_significance"):
            load_config(None, [f"svm.select_significance={bad}"])
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
        records = [{"retrains": [1, 2, 3], "val_ap": [0.1, 0.4, 0.2], "best": 2, "p": 0.004, "chosen": 2, "last": 3},
                   {"retrains": [1, 2], "val_ap": [0.3, 0.5], "best": 2, "p": None, "chosen": 2, "last": 2},
                   {"retrains": [1, 2], "val_ap": [0.6, 0.5], "best": 1, "p": 0.31, "chosen": 2, "last": 2}]
        return {"path": str(run / "models" / "svm.h5"), "retrains": [3, 2, 2], "final": [final, final, final],
                "selection": {"split": "val", "significance": 0.05, "classes": records}}

    monkeypatch.setattr("spp_detect.training.stage.run_train_svm", fake)
    out = CliRunner().invoke(cli, ["train-svm", "--dataset", str(root), "--split", "train", "--val-split", "val",
                                   "--run", str(tmp_path / "run"), "--set", 'svm.select="val"'])
    assert out.exit_code == 0, out.output
    assert seen["val"] == "val"
    assert "an earlier model only at p <= 0.05" in out.output
    assert f"{classes[0]}: retrain 2 of 3, AP 0.4000 (the last model's 0.2000, p = 0.004)" in out.output
    assert f"{classes[1]}: retrain 2 of 2, AP 0.5000\n" in out.output
    assert f"{classes[2]}: retrain 2 of 2, AP 0.5000 (retrain 1's 0.6000 is within chance, p = 0.310)" in out.output
    assert "1 of 3 classes keep an earlier model than their last; 1 more did better" in out.output


def _random_split(rng, n_images=8):
    """Ground truth of one class and scored detections over ``n_images`` images (boxes internal)."""
    truth, dets = {}, []
    for i in range(n_images):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 80, size=(n, 2))
        gt = np.hstack([xy, xy + rng.uniform(10, 40, size=(n, 2))])
        ignore = rng.random(n) < 0.2
        truth[f"im{i}"] = (gt, ignore)
        for _ in range(int(rng.integers(0, 6))):
            if n and rng.random() < 0.6:  # near a ground-truth box (a hit, a duplicate or a miss)
                box = gt[rng.integers(n)] + rng.normal(0, 4, size=4)
            else:
                xy = rng.uniform(0, 80, size=2)
                box = np.concatenate([xy, xy + rng.uniform(10, 40, size=2)])
            dets.append((i, box, float(rng.normal())))
    return truth, dets


def _ranked(truth, dets, use_07):
    from spp_detect.core.average_precision import evaluate_class
    from spp_detect.training.svm_select import Ranked, _Detections

    names = list(truth)
    image = np.array([d[0] for d in dets], np.int32)
    scores = np.array([d[2] for d in dets])
    res = evaluate_class(_Detections(np.array([names[i] for i in image], object), scores,
                                     np.array([d[1] for d in dets]).reshape(-1, 4)), truth, use_07_metric=use_07)
    positives = np.array([int((~truth[n][1]).sum()) for n in names])
    return Ranked(image[res.order], res.tp, res.fp), positives, res.ap


@pytest.mark.parametrize("use_07", [True, False])
def test_weighted_ap_is_the_ap_of_the_split_with_images_repeated(use_07):
    from spp_detect.core.average_precision import evaluate_class
    from spp_detect.training.svm_select import _Detections, weighted_ap

    rng = np.random.default_rng(3)
    for _ in range(20):
        truth, dets = _random_split(rng)
        ranked, positives, ap = _ranked(truth, dets, use_07)
        draws = rng.integers(0, 4, size=(5, len(truth)))
        got = weighted_ap(ranked, positives, np.vstack([np.ones(len(truth)), draws]), use_07)
        assert got[0] == pytest.approx(ap, abs=1e-12) or (np.isnan(ap) and np.isnan(got[0]))
        names = list(truth)
        for b, m in enumerate(draws, start=1):
            # the slow way: the devkit's AP over a split where image i appears m[i] times
            rep_truth = {f"{n}#{c}": truth[n] for i, n in enumerate(names) for c in range(m[i])}
            rep = [(f"{names[i]}#{c}", box, s) for i, box, s in dets for c in range(m[i])]
            if not rep_truth:
                continue
            want = evaluate_class(_Detections(np.array([r[0] for r in rep], object), np.array([r[2] for r in rep]),
                                              np.array([r[1] for r in rep]).reshape(-1, 4)), rep_truth,
                                  use_07_metric=use_07).ap
            if np.isnan(want):
                assert np.isnan(got[b])
            else:
                assert got[b] == pytest.approx(want, abs=1e-12)


def _validation(rankings, positives, owner):
    from spp_detect.training.svm_select import Validation, weighted_ap

    ones = np.ones((1, len(positives)))
    ap = np.array([weighted_ap(r, positives, ones, True)[0] for r in rankings])
    cands = Candidates(np.zeros((len(owner), 2), np.float32), np.zeros(len(owner)), np.array(owner),
                       np.array([sum(o == owner[i] for o in owner[:i]) + 1 for i in range(len(owner))]))
    return cands, Validation(ap, rankings, {k: positives for k in set(owner)}, True)


def _shuffled(rng, n_images, good: float):
    """One detection per image, a hit; plus one false positive per image. ``good``: how far the
    hits rank above the false positives (0: in random order)."""
    from spp_detect.training.svm_select import Ranked

    score = np.concatenate([rng.normal(good, 1, n_images), rng.normal(0, 1, n_images)])
    order = np.argsort(-score, kind="stable")
    image = np.concatenate([np.arange(n_images), np.arange(n_images)])[order].astype(np.int32)
    tp = (order < n_images)
    return Ranked(image, tp, ~tp)


def test_the_bootstrap_passes_a_real_gain_and_few_chance_ones():
    from spp_detect.training.svm_select import gain_p_values

    rng = np.random.default_rng(0)
    n = 150
    positives = np.ones(n, np.int64)
    # class 0: the last model ranks at random, an earlier one well; classes 1-20: 10 models alike
    owner = [0, 0] + [k for k in range(1, 21) for _ in range(10)]
    rankings = [_shuffled(rng, n, 3.0), _shuffled(rng, n, 0.0)]
    rankings += [_shuffled(rng, n, 1.0) for _ in range(200)]
    cands, val = _validation(rankings, positives, owner)
    p = gain_p_values(cands, val, resamples=400, seed=1)
    assert p[0] <= 1 / 401 + 1e-12
    null = [p[k] for k in range(1, 21) if k in p]  # a class whose best is its last is not tested
    assert len(null) >= 15
    # the best of 10 look-alikes beats the last by chance: the max-T test passes few of them ...
    assert sum(x <= 0.05 for x in null) <= 3
    # ... where comparing the best with the last alone, as if it had been the only candidate, passes many
    naive = 0
    draws = np.random.default_rng(1).multinomial(n, np.full(n, 1 / n), size=400)
    from spp_detect.training.svm_select import weighted_ap

    for k in range(1, 21):
        rows = np.nonzero(cands.owner == k)[0]
        best = rows[np.argmax(val.ap[rows])]
        if best == rows[-1]:
            continue
        gain = weighted_ap(rankings[best], positives, draws, True) - weighted_ap(rankings[rows[-1]], positives, draws, True)
        naive += np.mean(gain <= 0) <= 0.05
    assert naive > sum(x <= 0.05 for x in null)


def test_choose_leaves_the_last_model_only_for_a_significant_gain():
    cands, models = _candidates([0, 0, 1, 1, 2, 2], [1, 2, 1, 2, 1, 2])
    ap = np.array([0.6, 0.1, 0.5, 0.4, 0.2, 0.3])
    p = {0: 0.001, 1: 0.2}  # class 2's best is its last: not tested
    w, b, records = choose(cands, ap, n_classes=3, dim=3, p_values=p, significance=0.05)
    assert [r["chosen"] for r in records] == [1, 2, 2] and [r["best"] for r in records] == [1, 1, 2]
    assert [r["p"] for r in records] == [0.001, 0.2, None]
    np.testing.assert_array_equal(w[1], models[1][1][1])
    # significance 1: every class's best, no test
    assert [r["chosen"] for r in choose(cands, ap, 3, 3, p, significance=1.0)[2]] == [1, 1, 2]
    with pytest.raises(ValueError, match="p-values"):
        choose(cands, ap, 3, 3, None, significance=0.05)
