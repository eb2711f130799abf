"""Region proposals: selective search, the proposals file, imports and recall.

How later stages read proposals::

    from . import ProposalStore
    from ..artifacts.layout import proposals_path
    with ProposalStore(proposals_path(run, ds.split), ds) as store:   # checks dataset/split
        boxes = store.boxes(image_id)      # float32 (N, 4), (x1, y1, x2, y2) 0-based inclusive
        for image_id, boxes in store: ...  # file order, fast sequential reads

Modules: :mod:`.proposer` (what a method is, the registry), :mod:`.selective_search` (the OpenCV
search and the tuned recipes: ``propose.method = "opencv"``), :mod:`.uijlings` (the paper's
selective search: ``"uijlings"``, built from :mod:`.regions`, :mod:`.similarity` and
:mod:`.grouping`), :mod:`.filtering`
(pure box steps), :mod:`.store` (file layout, resumable parts), :mod:`.stage` (worker processes,
the stage), :mod:`.importers` (R-CNN ``.mat`` and JSON), :mod:`.recall` (recall and AR).
Heavy modules (OpenCV, h5py) load only when used.
"""

from ..artifacts.layout import proposals_path
from .store import FORMAT, VERSION, ProposalStore, read_proposals

__all__ = ["FORMAT", "VERSION", "ProposalStore", "proposals_path", "read_proposals"]
