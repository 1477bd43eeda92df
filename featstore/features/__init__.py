"""Feature kernels (pure functions on arrays) and their registry."""

from featstore.features.registry import (
    FEATURES,
    FeatureSpec,
    compute_feature,
    get_feature,
    register_feature,
)

__all__ = ["FEATURES", "FeatureSpec", "compute_feature", "get_feature", "register_feature"]
