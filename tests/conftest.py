import pytest
from helpers import toy_examples

from loraleak.data import register_task
from loraleak.models import cache_root

REAL_CACHE = cache_root()  # the user's cache, read before any test isolates LORALEAK_CACHE

register_task("toy")(lambda: toy_examples())


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # never read or write the user's model cache from unit tests
    monkeypatch.setenv("LORALEAK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def real_cache():
    """The user's real cache (for integration tests that read fetched data, never write)."""
    return REAL_CACHE


@pytest.fixture
def tiny():
    from loraleak.models import load_model
    return load_model("tiny-llama", "float32")
