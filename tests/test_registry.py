import numpy as np
import pytest

import featstore
from featstore import FEATURES, compute_feature
from featstore.errors import FeatureError


def test_required_features_are_registered():
    assert {"mgd", "mgd_cep", "logmel", "fbank", "lfcc", "cqcc"} <= set(FEATURES)


def test_describe_records_every_parameter_and_n_bins():
    d = FEATURES["mgd"].describe(rho=0.2)
    assert d["rho"] == 0.2 and d["gamma"] == 0.3 and d["n_bins"] == 257
    assert d["sample_rate"] == 16000
    assert FEATURES["logmel"].describe()["n_bins"] == 256
    assert FEATURES["fbank"].describe()["n_bins"] == 64
    assert FEATURES["lfcc"].describe()["n_bins"] == 60
    assert FEATURES["mgd_cep"].describe()["n_bins"] == 12


def test_unknown_feature_and_parameter_are_clear_errors():
    with pytest.raises(FeatureError, match="available: cqcc, fbank"):
        compute_feature("nope", np.zeros(1000))
    with pytest.raises(FeatureError, match="no parameter"):
        compute_feature("mgd", np.zeros(1000), bogus=1)


def test_nan_input_raises_value_error():
    x = np.zeros(1000)
    x[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_feature("mgd", x)


def test_import_is_light():
    # importing the package must not import the Numba kernels, zarr or torch
    import subprocess
    import sys

    code = (
        "import sys, featstore, trainer; "
        "heavy = [m for m in ('numba', 'zarr', 'h5py', 'torch', 'librosa') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_names():
    assert callable(featstore.compute_feature)
    assert "build" in featstore.__all__ and "open_store" in featstore.__all__
