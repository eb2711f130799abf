"""The algorithms every stage shares, as pure functions and small classes with no I/O:
boxes and their conventions (:mod:`.boxes`), NMS (:mod:`.nms`), the image/conv5 geometry and a
window's projection (:mod:`.geometry`), the spatial pyramid (:mod:`.spp`), the RoI-SPP pooler
(:mod:`.roi_spp`) and matching windows to ground truth (:mod:`.matching`)."""
