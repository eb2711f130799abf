"""The proposal-method interface: any Proposer runs through the stage unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from spp_detect.artifacts.layout import proposals_path
from spp_detect.config import load_config
from spp_detect.datasets import open_dataset
from spp_detect.errors import ConfigError, OutputExistsError
from spp_detect.proposals.proposer import METHODS, proposer_from_config
from spp_detect.proposals.selective_search import SearchParams, selective_search
from spp_detect.proposals.stage import propose_split
from spp_detect.proposals.store import ProposalStore


@dataclass(frozen=True)
class GridProposer:
    """A method of one's own: a fixed grid of square windows (module level, so workers can load it)."""

    side: int = 32

    def propose(self, image_rgb, image_id="", source=None):
        h, w = image_rgb.shape[:2]
        xs, ys = np.arange(0, w - self.side + 1, self.side), np.arange(0, h - self.side + 1, self.side)
        boxes = [(x, y, x + self.side - 1, y + self.side - 1) for y in ys for x in xs]
        return np.asarray(boxes, np.float32).reshape(-1, 4), False

    def to_stamp(self):
        return {"method": "grid", "side": self.side}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_new_method_runs_through_the_stage_and_is_stamped(tmp_path, tiny_voc, workers):
    ds = open_dataset(str(tiny_voc), "train")
    out = proposals_path(tmp_path, ds.split)
    propose_split(ds, out, GridProposer(32), workers=workers, show_progress=False)
    with ProposalStore(out, ds) as store:
        assert store.stamp["params"] == {"method": "grid", "side": 32}
        for r in ds.records:
            want, _ = GridProposer(32).propose(np.zeros((r.height, r.width, 3), np.uint8))
            np.testing.assert_array_equal(store.boxes(r.image_id), want)
    # other settings of the same method: the file is not trusted
    with pytest.raises(OutputExistsError, match="side"):
        propose_split(ds, out, GridProposer(16), workers=1, show_progress=False)


def test_the_config_picks_the_method():
    cfg = load_config(None, ["propose.mode=lite", "propose.max_proposals=300"])
    proposer = proposer_from_config(cfg.propose, seed=3)
    assert isinstance(proposer, SearchParams) and proposer.mode == "lite" and proposer.seed == 3
    assert set(METHODS) == {"opencv", "uijlings"}
    with pytest.raises(ConfigError, match="propose.method"):
        load_config(None, ["propose.method=edgeboxes"])


def test_opencv_method_is_selective_search_with_its_settings():
    rng = np.random.default_rng(0)
    image = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    params = SearchParams(mode="lite", max_proposals=50)
    got, got_fallback = params.propose(image, "img")
    want, want_fallback = selective_search(image, params, "img")
    np.testing.assert_array_equal(got, want)
    assert got_fallback == want_fallback
