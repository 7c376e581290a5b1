import pytest
from helpers import toy_examples

from loraleak.cache import cache_root
from loraleak.data import TASKS, register_task

REAL_CACHE = cache_root()  # the user's cache, read before any test isolates LORALEAK_CACHE


@pytest.fixture(autouse=True, scope="session")
def _toy_task():
    """The "toy" task for every test; unregistered at the end, as any test's own registrations are."""
    with TASKS.restored():
        register_task("toy")(lambda: toy_examples())
        yield


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
