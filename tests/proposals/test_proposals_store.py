"""The proposals file: round trip, stamp checks, and resumable partial work."""

from __future__ import annotations

import numpy as np
import pytest

from spp_detect.artifacts.layout import proposals_path
from spp_detect.artifacts.parts import parts_dir
from spp_detect.datasets import open_dataset
from spp_detect.errors import ArtifactError, OutputExistsError
from spp_detect.proposals.store import (
    PartialRun,
    ProposalStore,
    check_existing,
    dataset_stamp,
    read_proposals,
    write_proposals,
)


@pytest.fixture
def tiny_split(tiny_voc):
    return open_dataset(str(tiny_voc), "trainval")


def _boxes(n, seed):
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 50, (n, 2))
    return np.concatenate([xy, xy + rng.integers(20, 40, (n, 2))], 1).astype(np.float32)


def test_round_trip_by_id_and_by_iteration(tmp_path, tiny_split):
    ids = tiny_split.image_ids
    boxes = [_boxes(n, i) for i, n in enumerate([3, 0, 5, 1])]
    stamp = {**dataset_stamp(tiny_split), "params": {"min_size": 20}}
    path = write_proposals(proposals_path(tmp_path, "trainval"), ids, boxes, stamp, seconds=[0.5, 1, 2, 3],
                           fallback=[False, True, False, False], skipped_ids=["x"])
    assert path == tmp_path / "proposals" / "trainval.h5"
    with ProposalStore(path, tiny_split) as store:
        assert store.image_ids == ids and len(store) == 4
        for iid, b in zip(ids, boxes, strict=True):
            np.testing.assert_array_equal(store.boxes(iid), b)
            assert store.boxes(iid).dtype == np.float32
        np.testing.assert_array_equal(store.offsets, [0, 3, 3, 8, 9])
        assert [i for i, _ in store] == ids
        for (_iid, b), ref in zip(store, boxes, strict=True):
            np.testing.assert_array_equal(b, ref)
        assert store.fallback.tolist() == [False, True, False, False]
        assert store.params == {"min_size": 20}
        with pytest.raises(ArtifactError, match="'x' was skipped as unreadable"):
            store.boxes("x")
        with pytest.raises(ArtifactError, match="no proposals for image 'nope'"):
            store.boxes("nope")
    assert set(read_proposals(path, tiny_split)) == set(ids)


def test_refuses_file_of_another_split_naming_file_and_field(tmp_path, tiny_voc, tiny_split):
    path = tmp_path / "p.h5"
    write_proposals(path, tiny_split.image_ids, [_boxes(2, 0)] * 4, {**dataset_stamp(tiny_split), "params": {"min_size": 20}})
    other = open_dataset(str(tiny_voc), "test")
    with pytest.raises(ArtifactError) as err:
        ProposalStore(path, other)
    msg = str(err.value)
    assert str(path) in msg and "split='trainval'" in msg and "split='test'" in msg
    with pytest.raises(ArtifactError, match="params.min_size=20, but this run has params.min_size=5"):
        ProposalStore(path, tiny_split, expect={"params": {"min_size": 5}})


def test_refuses_missing_and_foreign_files(tmp_path, tiny_split):
    with pytest.raises(ArtifactError, match="not found"):
        ProposalStore(tmp_path / "none.h5", tiny_split)
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ArtifactError, match="not a spp-detect/proposals file"):
        ProposalStore(tmp_path / "other.h5", tiny_split)


def test_check_existing(tmp_path, tiny_split):
    path = tmp_path / "p.h5"
    stamp = {**dataset_stamp(tiny_split), "params": {"min_size": 20}}
    assert check_existing(path, stamp, overwrite=False) is False
    write_proposals(path, tiny_split.image_ids, [_boxes(2, 0)] * 4, stamp)
    assert check_existing(path, stamp, overwrite=False) is True
    changed = {**stamp, "params": {"min_size": 10}}
    with pytest.raises(OutputExistsError, match=r"params.min_size=20 \(this run: 10\); pass --overwrite"):
        check_existing(path, changed, overwrite=False)
    assert check_existing(path, changed, overwrite=True) is False


def test_partial_run_keeps_flushed_images_only(tmp_path):
    output = tmp_path / "proposals" / "train.h5"
    folder = parts_dir(output)
    assert folder.name == "train.parts"
    stamp = {"dataset": "d", "split": "train", "params": {"min_size": 20}}
    run = PartialRun(output, stamp)
    run.add("a", _boxes(3, 1), 0.1, False)
    run.add_skipped("bad", "corrupt")
    run.flush()
    run.add("b", _boxes(2, 2), 0.2, True)  # never flushed: lost, like a kill -9 before the flush
    (folder / ".part-123.npz.tmp").write_bytes(b"half a file")  # a writer killed mid-write
    again = PartialRun(output, stamp)
    assert again.done == {"a", "bad"}
    np.testing.assert_array_equal(again.results["a"][0], _boxes(3, 1))
    assert again.skipped == {"bad": "corrupt"}
    assert not list(folder.glob(".part-*"))


def test_partial_run_refuses_other_settings_unless_overwrite(tmp_path):
    output = tmp_path / "x.h5"
    run = PartialRun(output, {"split": "train", "params": {"min_size": 20}})
    run.add("a", _boxes(1, 0), 0.1, False)
    run.flush()
    with pytest.raises(ArtifactError, match=r"params.min_size=20 \(this run: 10\).*--overwrite"):
        PartialRun(output, {"split": "train", "params": {"min_size": 10}})
    fresh = PartialRun(output, {"split": "train", "params": {"min_size": 10}}, overwrite=True)
    assert fresh.done == set()
