import numpy as np
import pytest


@pytest.fixture
def ct_passes():
    pytest.importorskip("coremltools")
    from coremltools.optimize.coreml import _quantization_passes
    return _quantization_passes
