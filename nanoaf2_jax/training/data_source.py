"""Where a run's batches come from: the in-memory BatchPlan (loader 'memory', the reference's
way) or a prepared cache read through Grain (loader 'grain', data/loader.py).

`training_data` returns the plan the loop iterates (both kinds offer BatchPlan's protocol), the
proteins the evaluation during training samples, and the dataset fingerprint a checkpoint
records. For 'grain', structure files (data_dir, or the downloaded pdb_ids) are prepared on
the fly into <output_dir>/data_cache; a data_dir that is a cache is read as it is.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np

from ..data.batching import BatchPlan, filter_by_length
from ..data.cache import SKIPPED, Cache, CacheError, is_cache
from ..data.download import ensure_pdb_files
from ..data.loader import CachedBatches
from ..data.prepare import ParseOptions, find_structure_files, prepare
from ..data.structures import load_dataset, parse_structure
from .distributed import barrier
from .run_state import dataset_fingerprint
from .train_config import TrainConfig, TrainingError
from .training_sequences import protein_records

RUN_CACHE_SUBDIR = "data_cache"
# The evaluation during training samples each of these; a cache may hold thousands of chains.
MAX_EVAL_PROTEINS = 8
# On-the-fly preparation uses worker processes only when there is enough to parse to repay
# their start-up (about a second each).
_PARALLEL_FROM = 200


@dataclasses.dataclass
class TrainingData:
    plan: object  # BatchPlan or CachedBatches
    proteins: list  # what the evaluation during training samples
    fingerprint: list  # [[name, chain, length], ...]
    # () -> [(name, sequence), ...] of every chain trained on: training_sequences.fasta
    # (a cache's records are decoded only when it is called).
    sequences: object = None


def training_data(config: TrainConfig, options, log, proteins=None) -> TrainingData:
    if proteins is not None or config.loader == "memory":
        if proteins is None:
            proteins = load_proteins(config, options, log)
        else:
            proteins = filter_by_length(proteins, config.min_length, config.max_length, log)
            if not proteins:
                raise TrainingError("no protein within the configured length range")
        # One optimiser step takes grad_accum batches' worth of proteins, split inside the step.
        plan = BatchPlan(proteins, config.batch_size * config.grad_accum, config.pad_to,
                         config.buckets, file_numbering=config.file_numbering)
        return TrainingData(plan, proteins, dataset_fingerprint(proteins),
                            lambda: protein_records(proteins))
    cache = open_cache(config, options, log)
    try:
        plan = CachedBatches(
            cache, config.batch_size * config.grad_accum, config.seed, pad_to=config.pad_to,
            buckets=config.buckets,
            crop_size=config.crop_size, spatial_crop_fraction=config.spatial_crop_fraction,
            file_numbering=config.file_numbering, min_length=config.min_length,
            max_length=config.max_length, worker_count=config.loader_workers,
            # Every process reads the whole global batch and the mesh (parallel.py) transfers
            # each process's rows: the loader's own per-process rows (shard_index) are not yet
            # wired to the sharded step.
            shard_index=0, shard_count=1,
            batch_tokens=config.batch_tokens, mix=_mix(config, cache))
    except ValueError as err:
        raise TrainingError(str(err)) from None
    members = [int(i) for i in plan.members]
    # Sampling memory is what max_length still bounds: only chains within it are evaluated.
    eval_ids = [i for i in members if cache.lengths[i] <= config.max_length][:MAX_EVAL_PROTEINS]
    fingerprint = [[cache.entries[i].name, cache.entries[i].chain, cache.entries[i].length]
                   for i in members]
    return TrainingData(plan, [cache[i] for i in eval_ids], fingerprint,
                        lambda: protein_records(cache[i] for i in members))


def _mix(config: TrainConfig, cache: Cache):
    """(directory, its chains' cache indices, chains per epoch) for config.data_mix."""
    if config.data_mix is None:
        return None
    roots = [Path(d).absolute() for d in config.data_dirs]
    parts = []
    for directory, root, count in zip(config.data_dirs, roots, config.data_mix):
        # One directory (or a prepared cache given as the data directory): all of its chains.
        indices = [i for i, e in enumerate(cache.entries)
                   if len(roots) == 1 or Path(e.source).is_relative_to(root)]
        parts.append((directory, np.asarray(indices, np.int64), count))
    return parts


def load_proteins(config: TrainConfig, options, log) -> list:
    """The run's proteins in memory: every structure in data_dir, or the pdb_ids (downloaded
    if needed), within [min_length, max_length]."""
    if config.data_dir is not None:
        if is_cache(config.data_dir):
            raise TrainingError(f"{config.data_dir} is a prepared cache: train on it with "
                                "--loader grain")
        source = config.data_dir
        proteins = load_dataset(config.data_dir, logger=log,
                                modified_residues=config.modified_residues)
    else:
        source = options.download_dir
        paths = ensure_pdb_files(config.pdb_ids, options.download_dir, base_url=options.base_url,
                                 offline=options.offline)
        proteins = [parse_structure(p, modified_residues=config.modified_residues) for p in paths]
    kept = filter_by_length(proteins, config.min_length, config.max_length, log)
    if not kept:
        raise TrainingError(f"{source}: no protein with {config.min_length} to "
                            f"{config.max_length} residues ({len(proteins)} read)")
    return kept


def open_cache(config: TrainConfig, options, log) -> Cache:
    """The cache to train on: data_dir if it is one, else the structure files prepared into
    <output_dir>/data_cache (on resume only new or changed files are parsed)."""
    dirs = config.data_dirs
    if len(dirs) == 1 and is_cache(dirs[0]):
        cache_dir = Path(dirs[0])
    else:
        if dirs:
            for directory in dirs:
                if not Path(directory).is_dir():
                    raise TrainingError(f"{directory}: not a directory")
                if len(dirs) > 1 and is_cache(directory):
                    raise TrainingError(f"{directory} is a prepared cache: several --data-dir "
                                        "must be directories of structure files")
            sources = list(dirs)
        else:
            sources = ensure_pdb_files(config.pdb_ids, options.download_dir,
                                       base_url=options.base_url, offline=options.offline)
        cache_dir = Path(config.output_dir) / RUN_CACHE_SUBDIR
        parse = ParseOptions(modified_residues=config.modified_residues)
        try:
            # One process prepares the run's cache; the others wait for it (several writers
            # of one cache directory would race).
            if jax.process_index() == 0:
                count = len(find_structure_files(sources))
                workers = min(4, os.cpu_count() or 1) if count >= _PARALLEL_FROM else 1
                prepare(sources, cache_dir, workers=workers, options=parse, progress=False,
                        logger=log, prune=True)
        except CacheError as err:
            raise TrainingError(str(err)) from None
        finally:
            barrier("nanoaf2_jax:data_cache")
    try:
        cache = Cache(cache_dir)
    except CacheError as err:
        raise TrainingError(str(err)) from None
    if cache.options["modified_residues"] != config.modified_residues:
        raise TrainingError(
            f"{cache_dir}: prepared with modified_residues={cache.options['modified_residues']}, "
            f"but the run has modified_residues={config.modified_residues} (prepare with"
            f"{'out' if config.modified_residues else ''} --atom-only, or change the setting)")
    if not len(cache):
        source = ", ".join(dirs) or options.download_dir
        raise TrainingError(f"{source}: no usable structure file (the reasons for each file are "
                            f"in {cache_dir / SKIPPED})")
    return cache
