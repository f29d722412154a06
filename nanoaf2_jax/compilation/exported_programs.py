"""Traced programs kept on disk (`jax.export`), so that a warm start skips tracing too.

The persistent compilation cache (cli/compilation_cache.py) skips XLA's compilation, but JAX must
still trace and lower a program to compute that cache's key: for the `default` model's train step
that is seconds per batch shape (57 s for its 4 buckets on the loaded 2-core CPU, most of a warm
`train.py` start), ~45% of every warm tiny `train.py` process the tests start, and 2-4 s of a
warm `sample.py` (the sampler of each length bucket). Here the
lowered program itself (StableHLO, `Exported.serialize()`) is written beside the compiled ones,
keyed by everything its computation depends on; a later process reads it back and calls it, so
only the thin wrapper around it is lowered, and XLA's compiled program comes from the
compilation cache as before.

The key: the program's name and static settings (the caller's `key` string: the model and
training configs, the total steps, ...), the input tree and every leaf's shape and dtype, the
jax/jaxlib versions, the JAX options that change lowering (float64, default matmul precision),
the backend and its device count, and a digest of every source file of this package: any change
to the code or the settings gives a new entry, never a stale program. Deleting the directory is
always safe. Only single-device programs are kept (a sharded program's devices belong to its
run); with several devices, or with no directory set (the cache off), `cached_jit` is plain `jax.jit`.

Every call goes through the exported program, the first run's as well as later ones, so a run
and its resumption compute with the same program.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import threading
from pathlib import Path

import jax
import numpy as np

PREFIX = "nanoaf2-exported-"
_DIRECTORY: Path | None = None


def set_directory(path: Path | None) -> None:
    """Where programs are kept (the compilation cache's directory); None: not kept."""
    global _DIRECTORY
    _DIRECTORY = None if path is None else Path(path)


def directory() -> Path | None:
    return _DIRECTORY


@functools.cache
def source_digest() -> str:
    """sha256 of every .py file of the package (path and bytes, in path order)."""
    root = Path(__file__).resolve().parents[1]  # nanoaf2_jax/
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _environment() -> tuple:
    import jaxlib

    return (jax.__version__, jaxlib.__version__, bool(jax.config.jax_enable_x64),
            str(jax.config.jax_default_matmul_precision), jax.default_backend(), jax.device_count(),
            source_digest())


class _Program:
    """One input signature's exported program and its trees."""

    def __init__(self, exported, out_tree, donate_argnums):
        self.out_tree = out_tree
        self.call = jax.jit(exported.call, donate_argnums=donate_argnums)


class CachedJit:
    """`fun` (a function of array pytrees) called through programs exported once per input
    signature and kept in `directory()`. Called like `jax.jit(fun)`; `.lower(*args)` lowers the
    program that a call with these arguments runs."""

    def __init__(self, fun, name: str, key: str, donate_argnums=()):
        self.fun, self.name, self.key = fun, name, key
        self.donate_argnums = tuple(donate_argnums)
        self._programs: dict = {}
        self.exported = 0  # programs traced and written by this process
        self.read = 0  # programs read back from the directory
        self._lock = threading.Lock()  # the trainer prepares its batch shapes in threads

    def _signature(self, args):
        leaves, in_tree = jax.tree_util.tree_flatten(args)
        avals = tuple((tuple(np.shape(x)), str(getattr(x, "dtype", None) or np.result_type(x)))
                      for x in leaves)
        return leaves, in_tree, avals

    def _file(self, in_tree, avals) -> Path:
        text = repr((self.name, self.key, str(in_tree), avals, _environment()))
        return _DIRECTORY / f"{PREFIX}{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.bin"

    def _donated_leaves(self, args) -> tuple[int, ...]:
        sizes = [len(jax.tree_util.tree_leaves(a)) for a in args]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return tuple(i for a in self.donate_argnums for i in range(starts[a], starts[a + 1]))

    def _program(self, args) -> tuple[_Program, list]:
        leaves, in_tree, avals = self._signature(args)
        program = self._programs.get((in_tree, avals))
        if program is None:
            program = self._load_or_export(args, in_tree, avals)
            self._programs[(in_tree, avals)] = program
        return program, leaves

    def _load_or_export(self, args, in_tree, avals) -> _Program:
        path = self._file(in_tree, avals)
        donated = self._donated_leaves(args)
        try:
            with open(path, "rb") as f:
                out_tree, blob = pickle.load(f)
            program = _Program(jax.export.deserialize(bytearray(blob)), out_tree, donated)
            with self._lock:
                self.read += 1
            return program
        except (OSError, EOFError, ValueError, pickle.UnpicklingError, TypeError, AttributeError):
            pass  # absent or damaged (a writer killed mid-file): export again
        trees = {}

        def flat(*leaves):
            out = self.fun(*jax.tree_util.tree_unflatten(in_tree, leaves))
            out_leaves, trees["out"] = jax.tree_util.tree_flatten(out)
            return out_leaves

        specs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in avals]
        exported = jax.export.export(jax.jit(flat))(*specs)
        with self._lock:
            self.exported += 1
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            blob = bytes(exported.serialize())
            with open(tmp, "wb") as f:
                pickle.dump((trees["out"], blob), f)
            os.replace(tmp, path)  # atomic: readers see no file or the whole one
        except OSError:
            # A cache that cannot be written costs the next process a trace, nothing else.
            tmp.unlink(missing_ok=True)
        return _Program(exported, trees["out"], donated)

    def __call__(self, *args):
        program, leaves = self._program(args)
        return jax.tree_util.tree_unflatten(program.out_tree, program.call(*leaves))

    def lower(self, *args):
        program, leaves = self._program(args)
        return program.call.lower(*leaves)

    def _cache_size(self) -> int:
        return len(self._programs)


def cached_jit(fun, name: str, key: str, donate_argnums=(), **jit_kwargs):
    """`CachedJit(fun, ...)` where programs can be kept (a directory set, one device), else
    `jax.jit(fun, donate_argnums=..., **jit_kwargs)` (shardings apply only there: on one device
    every sharding is that device)."""
    if _DIRECTORY is None or jax.device_count() != 1:
        return jax.jit(fun, donate_argnums=donate_argnums, **jit_kwargs)
    return CachedJit(fun, name, key, donate_argnums)
