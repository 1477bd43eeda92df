"""Feature kernels (pure functions on arrays) and their registry."""

from featstore.features.registry import (
    FEATURES,
    FeatureSpec,
    compute_feature,
    get_feature,
    register_feature,
)
from featstore.features.validation import validate_feature_params

__all__ = [
    "FEATURES",
    "FeatureSpec",
    "compute_feature",
    "get_feature",
    "register_feature",
    "validate_feature_params",
]
