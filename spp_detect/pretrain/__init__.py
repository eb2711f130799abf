"""Pretraining the trunk as a classifier: on crops (:mod:`.train`, the paper's classification
side) or on ground-truth windows pooled from whole images (:mod:`.windows`)."""
