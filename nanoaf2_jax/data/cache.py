"""The on-disk cache of prepared protein chains: ArrayRecord shards and a JSON manifest.

Layout of a cache directory (docs/data.md):

    manifest.json            what is in the cache: parse options, shards, and per source file
                             its size, mtime, sha256 and records (or why it was skipped)
    skipped.tsv              the skipped files and their reasons, for people (the manifest rules)
    shard-00000.array_record one record per protein chain (encode_record)

Why ArrayRecord: Grain reads it natively (grain.sources.ArrayRecordDataSource: random access by
global index across shards, picklable into worker processes, shardable per host), a shard is
one file written once and renamed into place, and records are compressed. Sharded .npy with a
memory map would read faster still but needs its own index and append logic, and no loader in
the ecosystem reads it without a wrapper.

Nothing half-written is ever read: a shard is written under a .tmp name and renamed when
closed, and the manifest (the only list of shards a reader uses) is replaced atomically after
it; a shard no manifest lists is an interrupted write and is deleted by the next preparation.
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .structures import Protein

MANIFEST = "manifest.json"
SKIPPED = "skipped.tsv"
FORMAT = "nanoaf2-jax-cache/1"
SHARD_SUFFIX = ".array_record"
# group_size:1 makes every record its own compressed chunk: random access (what a shuffled
# loader does) then decompresses one record, not a group of them.
WRITER_OPTIONS = "group_size:1"


class CacheError(RuntimeError):
    """A cache that cannot be read or extended; the message names the directory."""


def is_cache(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def encode_record(protein: Protein, source: str) -> bytes:
    """One chain as .npz bytes (no pickle, so reading a cache runs no code from it)."""
    meta = {"name": protein.name, "chain": protein.chain, "source": source,
            "resolution": protein.resolution, "method": protein.method}
    buffer = io.BytesIO()
    np.savez(buffer,
             sequence=protein.sequence.astype(np.uint8),
             coords=np.stack([protein.coords_N, protein.coords_CA, protein.coords_C], 1
                             ).astype(np.float32),  # [L, 3 (N, CA, C), 3]
             residue_index=protein.residue_index.astype(np.int32),
             meta=np.array(json.dumps(meta)))
    return buffer.getvalue()


# np.load parses each array's header with ast.literal_eval, and CPython 3.11's parser is not
# thread-safe (concurrent ast.parse can raise "SystemError: AST constructor
# recursion depth mismatch", seen in the threaded loader's resume test). Records are small:
# decoding them one at a time is cheap next to a train step (not measured separately).
_DECODE_LOCK = threading.Lock()


def decode_record(data: bytes) -> Protein:
    with _DECODE_LOCK:
        return _decode_record(data)


def _decode_record(data: bytes) -> Protein:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        coords = z["coords"]
        meta = json.loads(str(z["meta"]))
        return Protein(sequence=z["sequence"].astype(np.int32), coords_N=coords[:, 0],
                       coords_CA=coords[:, 1], coords_C=coords[:, 2],
                       residue_index=z["residue_index"], name=meta["name"], chain=meta["chain"],
                       resolution=meta["resolution"], method=meta["method"])


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def read_manifest(cache_dir: str | os.PathLike) -> dict:
    path = Path(cache_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CacheError(f"{cache_dir}: cannot read the cache manifest {path}: {err}") from err
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{cache_dir}: {MANIFEST} is not a nanoaf2-jax cache manifest "
                         f"(format {manifest.get('format')!r}, expected {FORMAT!r})")
    return manifest


def write_manifest(cache_dir: Path, manifest: dict) -> None:
    """Atomically: readers see the old manifest or the new one, never part of one."""
    _atomic_write(cache_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    lines = ["path\treason"] + [f"{path}\t{entry['reason']}"
                                for path, entry in sorted(manifest["skipped"].items())]
    _atomic_write(cache_dir / SKIPPED, "\n".join(lines) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Where one record is, and what the index needs without decoding it."""

    source: str
    name: str
    chain: str
    length: int
    shard: int  # index into the manifest's shard list (which only ever grows)
    position: int  # within the shard


class Cache:
    """Random access to a cache's records in a fixed order: by source path, then file order.

    That order does not depend on how the preparation was split into runs or shards, so an
    interrupted and resumed preparation gives the same dataset (and the same training) as an
    uninterrupted one. Picklable: Grain worker processes get a copy and open the shards there.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)
        self.manifest = read_manifest(self.dir)
        self.options = self.manifest["options"]
        shards = self.manifest["shards"]
        for shard in shards:
            if not (self.dir / shard["file"]).is_file():
                raise CacheError(f"{self.dir}: shard {shard['file']} listed in {MANIFEST} is "
                                 "missing; prepare the cache again")
        self.entries = [
            Entry(source, r["name"], r["chain"], r["length"], r["shard"], r["position"])
            for source, info in sorted(self.manifest["files"].items())
            for r in info["records"]
        ]
        # ArrayRecordDataSource numbers the records of its shards consecutively.
        offsets = np.cumsum([0] + [s["records"] for s in shards])
        self._global = np.array([offsets[e.shard] + e.position for e in self.entries],
                                dtype=np.int64)
        self._shard_paths = [str(self.dir / s["file"]) for s in shards]
        self.lengths = np.array([e.length for e in self.entries], dtype=np.int64)
        self._source = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None  # reopened lazily in the process that reads
        return state

    def _records(self):
        if self._source is None:
            from grain.sources import ArrayRecordDataSource

            self._source = ArrayRecordDataSource(self._shard_paths)
        return self._source

    def __getitem__(self, i: int) -> Protein:
        return decode_record(self._records()[int(self._global[i])])

    def fingerprint(self) -> list:
        """What a checkpoint records to check that a resumed run trains on the same chains."""
        return [[e.name, e.chain, e.length] for e in self.entries]
