"""Session fixtures shared by the test files."""

import pytest


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax-compilation-cache"
