"""Importing published proposals: R-CNN .mat (v5 and v7.3) and JSON, written by the tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.datasets import open_dataset
from spp_detect.errors import DataError
from spp_detect.proposals.importers import read_json_proposals, read_mat_proposals
from spp_detect.proposals.store import ProposalStore

# internal (x1, y1, x2, y2) 0-based  <->  R-CNN [y1 x1 y2 x2] 1-based
INTERNAL = np.array([[10, 20, 59, 69], [0, 0, 127, 95], [5, 6, 30, 40]], np.float32)
RCNN = INTERNAL[:, [1, 0, 3, 2]] + 1.0


def _write_mat_v5(path, ids, boxes, with_images=True):
    import scipy.io

    cell = np.empty((1, len(boxes)), dtype=object)
    for i, b in enumerate(boxes):
        cell[0, i] = np.asarray(b, np.float64)
    data = {"boxes": cell}
    if with_images:
        names = np.empty((len(ids), 1), dtype=object)
        for i, iid in enumerate(ids):
            names[i, 0] = iid
        data["images"] = names
    scipy.io.savemat(str(path), data)


def _write_mat_v73(path, ids, boxes):
    """A MATLAB 7.3 file as MATLAB writes it: HDF5 with a 512-byte header, cells as references."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        box_refs = np.empty((1, len(boxes)), dtype=h5py.ref_dtype)
        img_refs = np.empty((1, len(ids)), dtype=h5py.ref_dtype)
        for i, (iid, b) in enumerate(zip(ids, boxes, strict=True)):
            # column-major: an (n, 4) matrix is stored as (4, n)
            box_refs[0, i] = refs.create_dataset(f"b{i}", data=np.asarray(b, np.float64).T).ref
            img_refs[0, i] = refs.create_dataset(f"i{i}", data=np.array([[ord(c)] for c in iid], np.uint16)).ref
        f.create_dataset("boxes", data=box_refs)
        f.create_dataset("images", data=img_refs)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(128, b" "))


@pytest.mark.parametrize("writer", [_write_mat_v5, _write_mat_v73])
def test_mat_converts_rcnn_convention(tmp_path, writer):
    path = tmp_path / "ss.mat"
    writer(path, ["000001", "000002"], [RCNN, RCNN[:1]])
    out = read_mat_proposals(path)
    assert set(out) == {"000001", "000002"}
    np.testing.assert_array_equal(out["000001"], INTERNAL)
    np.testing.assert_array_equal(out["000002"], INTERNAL[:1])


def test_mat_without_images_needs_the_split_order(tmp_path):
    path = tmp_path / "ss.mat"
    _write_mat_v5(path, [], [RCNN, RCNN], with_images=False)
    out = read_mat_proposals(path, ["a", "b"])
    np.testing.assert_array_equal(out["b"], INTERNAL)
    with pytest.raises(DataError, match="no 'images' variable, so its 2 box sets must match the split's 3 images"):
        read_mat_proposals(path, ["a", "b", "c"])


def test_mat_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="bad.mat.*cannot be read as a MATLAB .mat file"):
        read_mat_proposals(bad)
    nan = tmp_path / "nan.mat"
    b = RCNN.copy()
    b[1, 2] = np.nan
    _write_mat_v5(nan, ["x"], [b])
    with pytest.raises(DataError, match=r"nan.mat.*field 'boxes\['x'\]\[1\]'.*non-finite"):
        read_mat_proposals(nan)


def test_json_reads_internal_convention_and_validates(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"a": INTERNAL.tolist(), "b": []}))
    out = read_json_proposals(good)
    np.testing.assert_array_equal(out["a"], INTERNAL)
    assert out["b"].shape == (0, 4)
    flipped = tmp_path / "flipped.json"
    flipped.write_text(json.dumps({"a": [[50, 0, 10, 30]]}))
    with pytest.raises(DataError, match=r"flipped.json.*field '\['a'\]\[0\]'.*x2 < x1"):
        read_json_proposals(flipped)
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"a": [[1, 2, 3]]}))
    with pytest.raises(DataError, match=r"shape.json.*expected an \(n, 4\) array"):
        read_json_proposals(shape)
    notjson = tmp_path / "x.json"
    notjson.write_text("{oops")
    with pytest.raises(DataError, match="malformed JSON"):
        read_json_proposals(notjson)


def test_cli_import_mat_and_json(tmp_path, tiny_voc):
    ds = open_dataset(str(tiny_voc), "trainval")
    ids = ds.image_ids
    mat = tmp_path / "voc_trainval.mat"
    # one extra image not in the split (published files cover whole sets) is ignored;
    # a 6 px box is dropped by the 20 px filter; a box past the border is clipped
    big = np.array([[1, 1, 500, 500], [1, 1, 7, 7]], np.float64)
    _write_mat_v5(mat, ids + ["999999"], [RCNN, RCNN, big, RCNN, RCNN])
    runner = CliRunner()
    res = runner.invoke(cli, ["propose", "--dataset", str(tiny_voc), "--split", "trainval", "--run", str(tmp_path / "run"),
                              "--import", str(mat)])
    assert res.exit_code == 0, res.output
    with ProposalStore(tmp_path / "run" / "proposals" / "trainval.h5", ds) as store:
        np.testing.assert_array_equal(store.boxes(ids[0]), INTERNAL)
        np.testing.assert_array_equal(store.boxes(ids[2]), [[0, 0, 127, 95]])
        assert store.params["method"] == "import" and store.params["import_file"] == "voc_trainval.mat"
        assert np.isnan(store.seconds).all()

    js = tmp_path / "p.json"
    js.write_text(json.dumps({iid: INTERNAL.tolist() for iid in ids[:3]}))
    res = runner.invoke(cli, ["propose", "--dataset", str(tiny_voc), "--split", "trainval", "--run", str(tmp_path / "run2"),
                              "--import", str(js)])
    assert res.exit_code == 1
    assert "p.json" in res.output and "no proposals for 1 of the 4 images" in res.output and ids[3] in res.output
    js.write_text(json.dumps({iid: INTERNAL.tolist() for iid in ids}))
    res = runner.invoke(cli, ["propose", "--dataset", str(tiny_voc), "--split", "trainval", "--run", str(tmp_path / "run2"),
                              "--import", str(js), "--min-size", "40"])
    assert res.exit_code == 0, res.output
    with ProposalStore(tmp_path / "run2" / "proposals" / "trainval.h5", ds) as store:
        # only the 50x50 and the whole-image boxes are at least 40 px both ways
        np.testing.assert_array_equal(store.boxes(ids[1]), INTERNAL[:2])
