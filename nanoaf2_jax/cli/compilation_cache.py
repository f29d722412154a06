"""JAX's persistent compilation cache for the commands: a program is compiled once per machine,
not once per process.

On a CPU most of a short run is XLA compiling (the default model's train step, the sampler of each
sequence length); with the cache a second `train.py`, `sample.py` or `python -m
nanoaf2_jax.evaluate` reads the compiled programs back from disk. Where the cache lives, first
that is given:

    --compilation-cache DIR|off          (the commands' option)
    $NANOAF2_JAX_COMPILATION_CACHE       (DIR or off)
    $JAX_COMPILATION_CACHE_DIR           (JAX's own variable, honoured as given)
    $XDG_CACHE_HOME/nanoaf2_jax/jax-cache, else ~/.cache/nanoaf2_jax/jax-cache

JAX keys each entry on the program, the jax/XLA versions, the devices and XLA_FLAGS, so a stale
entry is never used; deleting the directory is always safe. Every command calls
`enable_compilation_cache` before its first compilation.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import os
import sys
from pathlib import Path

import jax
import numpy as np

from ..compilation import exported_programs
from ..diffusion import se3

ENV_VAR = "NANOAF2_JAX_COMPILATION_CACHE"
OFF = "off"

# JAX writes only programs that took at least 1 s to compile by default. On a loaded CPU even
# small start-up programs (parameter initialisation, PRNG seeding and splitting, the sampler of a
# short sequence) take about that, and which of them cross the line changes from run to run; the
# few programs a command compiles are all worth keeping (the tiny preset's start writes 8
# entries, 8 MB), and reading one back costs milliseconds.
MIN_COMPILE_TIME_SECS = 0.0


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nanoaf2_jax" / "jax-cache"


def resolve_cache_dir(option: str | None = None) -> Path | None:
    """The cache directory the option, the environment or the default gives; None: off."""
    for value in (option, os.environ.get(ENV_VAR), os.environ.get("JAX_COMPILATION_CACHE_DIR")):
        if value:
            return None if value.strip().lower() == OFF else Path(value).expanduser()
    return default_cache_dir()


def enable_compilation_cache(option: str | None = None) -> Path | None:
    """Point JAX at the cache (or turn it off) for the rest of the process; the directory used,
    or None. A directory that cannot be made is a warning, never a failed command."""
    path = resolve_cache_dir(option)
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"warning: compilation cache {path} not usable ({err}); compiling without it",
                  file=sys.stderr)
            path = None
    exported_programs.set_directory(path)  # traced programs live beside the compiled ones
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        se3.set_igso3_table_source(None)  # off: nothing written anywhere, the table computed
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    # -1: no size floor, and JAX may not raise one for the file system (small programs count).
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    se3.set_igso3_table_source(functools.partial(cached_igso3_table, path))
    return path


def igso3_table_file(cache_dir: Path) -> Path:
    """The IGSO3 quantile table's file in the cache, named by a digest of everything its values
    depend on (the grid constants, the code that computes them, numpy's version): a changed
    definition is never read back."""
    source = inspect.getsource(se3._compute_igso3_quantile_table) + inspect.getsource(se3.igso3_angle_cdf)
    key = repr((se3.IGSO3_SIGMA_MIN, se3.IGSO3_SIGMA_MAX_GRID, se3.IGSO3_NUM_SIGMA, se3.IGSO3_NUM_U,
                se3._IGSO3_NUM_OMEGA, np.__version__, source))
    return Path(cache_dir) / f"nanoaf2-igso3-quantiles-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def cached_igso3_table(cache_dir: Path) -> np.ndarray:
    """The IGSO3 quantile table read from the cache, or computed once and written there.

    Why: the table (160 x 2049, from the series CDF) is 1-4 s of numpy at the first trace of any
    program that draws IGSO3 noise: every `train.py` start however warm its compiled programs,
    and every test worker and command the tests start. `enable_compilation_cache` makes this
    the table's source, so it runs only when a program needs the table. A damaged file (a
    writer killed mid-file) is computed again; a cache that cannot be written costs the
    computation, nothing else."""
    path = igso3_table_file(cache_dir)
    try:
        table = np.load(path, allow_pickle=False)
        if table.shape == (se3.IGSO3_NUM_SIGMA, se3.IGSO3_NUM_U) and table.dtype == np.float64:
            return table
    except (OSError, ValueError):
        pass
    table = se3._compute_igso3_quantile_table()
    try:
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, table)
        os.replace(tmp, path)  # atomic: readers see no file or the whole one
    except OSError:
        pass
    return table


def add_compilation_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compilation-cache", metavar="DIR|off", default=None,
        help=f"JAX's persistent compilation cache: programs compiled by an earlier run are read "
             f"from here instead of compiled again; 'off': none (default: ${ENV_VAR}, else "
             f"$JAX_COMPILATION_CACHE_DIR, else {default_cache_dir()})")
