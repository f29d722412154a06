"""Session fixtures shared by the test files, and the XLA flags of the test run."""

import os

import pytest

# Most of the suite's time is XLA:CPU compiling small programs (tiny models, fixtures of a few
# residues), not running them. Without LLVM's optimisation passes compilation is ~35% faster
# (the golden parity check of small.npz: 27 s against 43 s); the code XLA emits still computes
# the same operations, so every tolerance holds (the parity tests check it). Set before any test
# module imports jax; subprocesses (the CLIs, the checker, jax.distributed) inherit it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax-compilation-cache"
