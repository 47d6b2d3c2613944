import pytest

from stages.base import REGISTRY
from tests.pipeline import pipeline_helpers as h


@pytest.fixture(autouse=True)
def test_stages_registered(monkeypatch):
    """The pipeline tests' own stages are resolvable by name only while a test of ours runs."""
    for name, st in list(h.TEST_STAGES.items()):
        monkeypatch.setitem(REGISTRY, name, st)
    yield
