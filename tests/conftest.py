"""Session fixtures shared by the test files, and the XLA flags of the test run."""

import os
from pathlib import Path

import pytest

# Most of the suite's time is XLA:CPU compiling small programs (tiny models, fixtures of a few
# residues), not running them. Without LLVM's optimisation passes compilation is ~35% faster
# (the golden parity check of small.npz: 27 s against 43 s). At that level XLA's older loop
# emitters compile fusions with ~40% less CPU than its MLIR fusion emitters (the small fixture's
# train step: 4.4 s against 7.3 s of compile CPU) and one codegen thread per program wastes none
# on splitting while the two test workers already fill both cores; the programs run ~35% slower,
# which tiny shapes do not feel (the suite: 687 s -> 473 s, 2026-12-07, docs/benchmarks.md).
# Only for the tests: at the CLIs' default level the fusion emitters compile faster. The code XLA
# emits computes the same operations, so every tolerance holds (the parity tests check it; the
# golden margins are unchanged). Set before any test module imports jax; subprocesses (the CLIs,
# the checker, jax.distributed) inherit it.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
                  " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

# JAX's persistent compilation cache (nanoaf2_jax/cli/compilation_cache.py) for the whole run:
# the tests in this process and the commands they start (which inherit the variable) read back
# what an earlier run compiled. It lives in the work tree (git-ignored), never in the user's
# ~/.cache; NANOAF2_JAX_COMPILATION_CACHE set outside wins (a directory, or off for a cold run).
TEST_COMPILATION_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "jax-tests"
os.environ.setdefault("NANOAF2_JAX_COMPILATION_CACHE", str(TEST_COMPILATION_CACHE))

from nanoaf2_jax.cli.compilation_cache import enable_compilation_cache  # noqa: E402 (after XLA_FLAGS)

_CACHE_DIR = enable_compilation_cache()


@pytest.fixture(scope="session")
def compile_cache():
    """The cache directory the commands started by the tests share (None: off)."""
    return _CACHE_DIR


# pytest-xdist (`--dist loadfile`) hands whole files to the two workers in collection order,
# alphabetical by default, which puts the slowest files (test_scale.py, test_training*.py) last:
# one worker then runs the last of them alone while the other idles (58 s of a 740 s cold run,
# 2026-12-04). Longest first (their worker times in that run, slowest first) shortens that tail;
# within a file the order is unchanged (a stable sort).
SLOWEST_FILES = ("test_scale.py", "test_parity.py", "test_training.py", "test_chains_recipe.py",
                 "test_training_levers.py", "test_parity_full_size.py", "test_checkpoint.py",
                 "test_masking.py", "test_diffusion_fixes.py", "test_parity_x64.py",
                 "test_backbone_levers.py", "test_sample.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))
