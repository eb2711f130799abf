"""Stage 2: conv5 maps per image and scale, window projection, the HDF5 feature cache."""

from .cache import FEATURES_FORMAT, FEATURES_VERSION, FeatureCache, Windows

__all__ = ["FEATURES_FORMAT", "FEATURES_VERSION", "FeatureCache", "Windows"]
