"""Structure files -> the cache (cache.py): parsed in parallel worker processes, resumable.

`prepare(sources, out)` finds every structure file under `sources`, skips those the manifest
already holds unchanged (same path, and same size and mtime or, failing that, the same
sha256), parses the rest with gemmi in `workers` processes and appends their chains to new
shards. Every `files_per_shard` files the shard is closed and the manifest replaced, so an
interrupted run loses at most that many files' work, and a re-run picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import (FORMAT, MANIFEST, SHARD_SUFFIX, WRITER_OPTIONS, CacheError, encode_record,
                    read_manifest, write_manifest)
from .structures import (StructureError, is_structure_file, proteins_from_structure,
                         read_structure, structure_name)

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParseOptions:
    """What decides a cache's content; a cache is extended only with the options it was made with."""

    modified_residues: bool = True  # the default preset's rule (structures.py); False: reference
    all_chains: bool = False  # every protein chain of a file, not only the first
    min_residues: int = 1  # chains with fewer usable residues are not recorded


@dataclass(frozen=True)
class PrepareReport:
    files: int  # structure files found
    unchanged: int  # already in the cache
    prepared: int  # parsed now, with at least one chain
    skipped: int  # parsed now, unusable (reason in the manifest and skipped.tsv)
    records: int  # chains in the cache afterwards
    seconds: float

    def describe(self) -> str:
        rate = (self.prepared + self.skipped) / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.files} structure files: {self.unchanged} already prepared, "
                f"{self.prepared} prepared, {self.skipped} skipped (see {MANIFEST}); "
                f"{self.records} chains in the cache; {self.seconds:.1f} s ({rate:.1f} files/s)")


def find_structure_files(sources) -> list[Path]:
    """Every structure file under the given directories (recursively) or given as files,
    hidden ones excepted, absolute, sorted, each once."""
    found = set()
    for source in sources:
        source = Path(source)
        if source.is_dir():
            for root, dirs, files in os.walk(source):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(Path(root, f).absolute() for f in files
                             if not f.startswith(".") and is_structure_file(f))
        elif source.is_file():
            if not is_structure_file(source):
                raise CacheError(f"{source}: not a structure file (.pdb .ent .cif .mmcif, .gz)")
            found.add(source.absolute())
        else:
            raise CacheError(f"{source}: no such file or directory")
    return sorted(found)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def parse_file(path: Path, options: ParseOptions):
    """(path, file info, [record bytes, ...], [record info, ...]); a worker's whole job.

    An unusable file gives no records and its reason in the info; any other exception would be
    a bug and propagates.
    """
    info = {**_stat(path), "sha256": file_sha256(path)}
    try:
        structure = read_structure(path)
        proteins = proteins_from_structure(structure, str(path), structure_name(path),
                                           options.modified_residues,
                                           all_chains=options.all_chains)
    except StructureError as err:
        return path, {**info, "reason": str(err).removeprefix(f"{path}: ")}, [], []
    kept = [p for p in proteins if p.length >= options.min_residues]
    if not kept:
        return path, {**info, "reason": f"no chain with at least {options.min_residues} "
                                        "residues"}, [], []
    records = [encode_record(p, str(path)) for p in kept]
    meta = [{"name": p.name, "chain": p.chain, "length": p.length, "resolution": p.resolution,
             "method": p.method} for p in kept]
    # Every chain of the model, so that the manifest shows which one was chosen among them.
    info["chains"] = proteins.chain_names
    return path, info, records, meta


def _parse_job(args):
    return parse_file(*args)


class _ShardWriter:
    """Collects records and publishes them as one shard plus the manifest that lists it."""

    def __init__(self, out: Path, manifest: dict):
        self.out, self.manifest = out, manifest
        self.records: list[bytes] = []
        self.files: dict[str, dict] = {}
        self.skipped: dict[str, dict] = {}

    def add(self, path: Path, info: dict, records: list[bytes], meta: list[dict]):
        key = str(path)
        if not records:
            self.skipped[key] = info
            return
        first = len(self.records)
        self.records += records
        shard = len(self.manifest["shards"])  # the index this shard will get
        self.files[key] = {**info, "records": [
            {**m, "shard": shard, "position": first + i} for i, m in enumerate(meta)]}

    def pending(self) -> int:
        return len(self.files) + len(self.skipped)

    def flush(self):
        if not self.pending():
            return
        manifest = self.manifest
        if self.records:
            from array_record.python.array_record_module import ArrayRecordWriter

            name = _new_shard_name(self.out)
            tmp = self.out / (name + ".tmp")
            writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
            for record in self.records:
                writer.write(record)
            writer.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.out / name)
            manifest["shards"].append({"file": name, "records": len(self.records)})
        for key, entry in self.files.items():
            manifest["skipped"].pop(key, None)
            manifest["files"][key] = entry
        for key, entry in self.skipped.items():
            manifest["files"].pop(key, None)
            manifest["skipped"][key] = entry
        write_manifest(self.out, manifest)
        self.records, self.files, self.skipped = [], {}, {}


def _new_shard_name(out: Path) -> str:
    taken = {p.name.split(".")[0] for p in out.glob("shard-*")}
    n = 0
    while f"shard-{n:05d}" in taken:
        n += 1
    return f"shard-{n:05d}{SHARD_SUFFIX}"


def _open(out: Path, options: ParseOptions) -> dict:
    """The manifest to extend (new if none); shards it does not list are deleted (a write that
    was interrupted before its manifest was published)."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = {"modified_residues": options.modified_residues, "all_chains": options.all_chains,
              "min_residues": options.min_residues}
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        if manifest["options"] != wanted:
            raise CacheError(f"{out}: prepared with {manifest['options']}, asked for {wanted}: "
                             "a cache holds one kind of chain; choose another --out")
    else:
        manifest = {"format": FORMAT, "options": wanted, "shards": [], "files": {}, "skipped": {}}
    listed = {s["file"] for s in manifest["shards"]}
    for path in out.iterdir():
        if path.name.startswith("shard-") and path.name not in listed:
            path.unlink()
        elif path.name.endswith(".tmp"):
            path.unlink()
    return manifest


def _unchanged(path: Path, manifest: dict) -> bool:
    """Already prepared: same size and mtime, or (touched, copied) the same content."""
    key = str(path)
    known = manifest["files"].get(key) or manifest["skipped"].get(key)
    if known is None:
        return False
    stat = _stat(path)
    if stat == {"size": known["size"], "mtime_ns": known["mtime_ns"]}:
        return True
    if stat["size"] == known["size"] and file_sha256(path) == known["sha256"]:
        known.update(stat)  # remembered at the next manifest write
        return True
    return False


def prepare(sources, out, workers: int = 1, options: ParseOptions = ParseOptions(),
            files_per_shard: int = 1000, progress: bool | None = None,
            logger: logging.Logger | None = None, stop_after: int | None = None,
            prune: bool = False) -> PrepareReport:
    """Prepare (or extend) the cache in `out` from the structure files under `sources`.

    workers: parsing processes (1: in this process). stop_after: stop once this many files are
    parsed, as an interruption would (tests). prune: the cache then lists only the files found
    now (a run's own cache follows its --data-dir); without it a cache keeps every file it was
    ever given, so that it can be built from several sources in several runs.
    """
    log = logger or _LOG
    start = time.perf_counter()
    out = Path(out)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    files = find_structure_files(sources)
    manifest = _open(out, options)
    pruned = 0
    if prune:
        found = {str(p) for p in files}
        for section in ("files", "skipped"):
            for key in [k for k in manifest[section] if k not in found]:
                del manifest[section][key]  # its records stay in their shard, unlisted
                pruned += 1
    todo = [p for p in files if not _unchanged(p, manifest)]
    if stop_after is not None:
        todo = todo[:stop_after]
    log.info("%s: %d structure files, %d to prepare with %d worker(s)", out, len(files),
             len(todo), workers)
    writer = _ShardWriter(out, manifest)
    prepared = skipped = 0
    jobs = [(p, options) for p in todo]
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="file", disable=not progress if progress is not None else None,
               dynamic_ncols=True)
    with _pool(workers if len(todo) > 1 else 1) as pool:
        results = map(_parse_job, jobs) if pool is None else pool.imap(
            _parse_job, jobs, chunksize=max(1, min(32, len(jobs) // (4 * workers) or 1)))
        for path, info, records, meta in results:
            writer.add(path, info, records, meta)
            prepared += bool(records)
            skipped += not records
            bar.update(1)
            if writer.pending() >= files_per_shard:
                writer.flush()
    writer.flush()
    bar.close()
    if (not todo and files) or pruned:
        write_manifest(out, manifest)  # remember refreshed mtimes and what was pruned
    records = sum(len(f["records"]) for f in manifest["files"].values())
    several = sum(len(f.get("chains", ())) > 1 for f in manifest["files"].values())
    if several and not options.all_chains:
        log.info("%d files have several chains: the first protein chain of each was taken "
                 "(its name is in the manifest's records, all names under 'chains')", several)
    report = PrepareReport(len(files), len(files) - len(todo), prepared, skipped, records,
                           time.perf_counter() - start)
    log.info("%s", report.describe())
    return report


class _pool:
    """A process pool, or None for one worker (no process start-up: small trees, tests).

    Workers are spawned, not forked: train.py prepares on the fly after JAX has started
    threads, and forking a threaded process can deadlock.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            self.pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self.pool

    def __exit__(self, *exc):
        if self.pool is not None:
            if exc[0] is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
