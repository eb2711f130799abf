import h5py
import pytest

from spp_detect.artifacts.files import atomic_path, atomic_write_json, check_overwrite
from spp_detect.artifacts.stamps import open_h5_checked, write_stamp
from spp_detect.errors import ArtifactError, OutputExistsError


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_and_overwrite_check(tmp_path):
    target = atomic_write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_overwrite(target, overwrite=False)
    check_overwrite(target, overwrite=True)


def test_stamp_checked_on_open(tmp_path):
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        write_stamp(f, "spp-detect/test", 1, {"split": "train", "dataset": "voc2007"})
    open_h5_checked(path, "spp-detect/test", 1, {"split": "train"}).close()
    with pytest.raises(ArtifactError, match=r"p.h5: made with split='train', but this run has split='test'"):
        open_h5_checked(path, "spp-detect/test", 1, {"split": "test"})
    with pytest.raises(ArtifactError, match="format version 1"):
        open_h5_checked(path, "spp-detect/test", 2)
    with pytest.raises(ArtifactError, match="not a spp-detect/other file"):
        open_h5_checked(path, "spp-detect/other", 1)
    with pytest.raises(ArtifactError, match="not found"):
        open_h5_checked(tmp_path / "missing.h5", "spp-detect/test", 1)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ArtifactError, match="cannot be read as HDF5"):
        open_h5_checked(tmp_path / "junk.h5", "spp-detect/test", 1)
