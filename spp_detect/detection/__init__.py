"""Detection with trained models: scoring windows, box regression and NMS per image
(:mod:`.scoring`), images outside any dataset (:mod:`.loose_images`) and drawing (:mod:`.draw`).
:mod:`.stage` runs detection over a split as a pipeline stage."""
