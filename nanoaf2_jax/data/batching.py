"""Proteins -> padded training batches, in a seeded, resumable order.

Every batch has a static shape [batch_size, bucket length], so the jitted train step compiles
once per bucket. The epoch order comes from a numpy Generator owned by the caller; its
bit_generator.state is what a checkpoint stores to resume the order exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .structures import Protein

_LOG = logging.getLogger(__name__)

# Proteins longer than every bucket edge are padded to a multiple of this instead.
OVERFLOW_MULTIPLE = 32


def filter_by_length(proteins: Sequence[Protein], min_length: int, max_length: int,
                     logger: logging.Logger | None = None) -> list[Protein]:
    """Keep min_length <= L <= max_length, as the reference does; log each protein dropped."""
    log = logger or _LOG
    kept = []
    for p in proteins:
        if min_length <= p.length <= max_length:
            kept.append(p)
        else:
            log.info("dropping %s: %d residues, outside [%d, %d]", p.name, p.length,
                     min_length, max_length)
    return kept


def padded_length(length: int, pad_to: int | None, buckets: Sequence[int] | None) -> int:
    """The length a protein of `length` residues is padded to.

    pad_to wins; else the smallest bucket edge >= length (past the last edge: the next
    multiple of OVERFLOW_MULTIPLE); with neither, the length itself (no padding).
    """
    if pad_to is not None:
        if length > pad_to:
            raise ValueError(f"a protein of {length} residues does not fit pad_to={pad_to}")
        return pad_to
    if buckets:
        for edge in sorted(buckets):
            if length <= edge:
                return edge
        return -(-length // OVERFLOW_MULTIPLE) * OVERFLOW_MULTIPLE
    return length


def feature_residue_index(residue_index: np.ndarray, length: int | None = None) -> np.ndarray:
    """The file's residue numbers as the relative-position features see them, padded to `length`.

    Shifted to start at 0 (only differences matter) and made strictly increasing: residues
    sharing a number (insertion codes: 52, 52A) become consecutive and the rest shift with
    them, so a gap in the numbering stays a gap. Padding continues the count (it is masked).
    """
    n = residue_index.shape[0]
    length = n if length is None else length
    if n == 0:
        return np.arange(length, dtype=np.int32)
    shifted = residue_index.astype(np.int64) - int(residue_index[0])
    # out[i] = max(shifted[i], out[i-1] + 1), i.e. i + running max of (shifted[j] - j).
    out = np.arange(n) + np.maximum.accumulate(shifted - np.arange(n))
    tail = out[-1] + 1 + np.arange(length - n)
    return np.concatenate([out, tail]).astype(np.int32)


def pad_protein(p: Protein, length: int, file_numbering: bool = False) -> dict[str, np.ndarray]:
    """One example padded with zeros to `length`; mask marks the real residues.

    Without file_numbering the residue index is deliberately absent: like the reference, the
    model numbers residues 0..L-1 whatever the file says (training.residue_index_of supplies
    it). With it, "residue_index" carries the file's numbering (feature_residue_index).
    """
    pad = length - p.length

    def coords(x):
        return np.concatenate([x.astype(np.float32), np.zeros((pad, 3), np.float32)])

    example = {
        "sequence": np.concatenate([p.sequence.astype(np.int32), np.zeros(pad, np.int32)]),
        "mask": np.concatenate([np.ones(p.length, bool), np.zeros(pad, bool)]),
        "coords_N": coords(p.coords_N),
        "coords_CA": coords(p.coords_CA),
        "coords_C": coords(p.coords_C),
    }
    if file_numbering:
        example["residue_index"] = feature_residue_index(p.residue_index, length)
    return example


def empty_batch(rows: int, length: int, file_numbering: bool = False) -> dict[str, np.ndarray]:
    """An all-padding batch [rows, length]: what compiling ahead of time needs."""
    coords = {k: np.zeros((rows, length, 3), np.float32) for k in ("coords_N", "coords_CA", "coords_C")}
    batch = {"sequence": np.zeros((rows, length), np.int32), "mask": np.zeros((rows, length), bool),
             **coords}
    if file_numbering:
        batch["residue_index"] = np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy()
    return batch


def stack_examples(examples: list[dict[str, np.ndarray]], rows: int) -> dict[str, np.ndarray]:
    """Examples of one padded length stacked, filled up to `rows` with all-padding rows."""
    out = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    missing = rows - len(examples)
    if missing:
        out = {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)])
               for k, v in out.items()}
    return out


class BatchPlan:
    """Groups proteins by padded length and yields batches of one group at a time.

    A group's last batch, if short, is filled with all-padding rows (mask False): they add
    nothing to any loss (losses are masked means over the whole batch) but keep the batch
    shape, so no extra compilation is needed.
    """

    def __init__(self, proteins: Sequence[Protein], batch_size: int, pad_to: int | None = None,
                 buckets: Sequence[int] | None = None, file_numbering: bool = False):
        if not proteins:
            raise ValueError("no proteins to batch")
        self.proteins = list(proteins)
        self.batch_size = batch_size
        self.file_numbering = file_numbering
        self._examples = []
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(self.proteins):
            length = padded_length(p.length, pad_to, buckets)
            self._examples.append(pad_protein(p, length, file_numbering))
            groups.setdefault(length, []).append(i)
        self.groups = dict(sorted(groups.items()))
        self.steps_per_epoch = sum(-(-len(m) // batch_size) for m in self.groups.values())

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Every batch shape an epoch uses: one compilation each."""
        return [(self.batch_size, length) for length in self.groups]

    def describe(self) -> str:
        parts = [f"{length}: {len(members)}" for length, members in self.groups.items()]
        return (f"{len(self.proteins)} proteins in {len(self.groups)} padded lengths "
                f"({', '.join(parts)}), {self.steps_per_epoch} steps per epoch")

    def epoch_order(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches as arrays of protein indices, drawn from `rng`.

        Proteins are shuffled within their group, cut into batches, and the batches shuffled,
        so every epoch visits each protein once in a new order (the reference's shuffle=True).
        """
        batches = []
        for members in self.groups.values():
            members = rng.permutation(np.asarray(members))
            batches += [members[i:i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def empty_batch(self, length: int) -> dict[str, np.ndarray]:
        """An all-padding batch of one padded length: what compiling ahead of time needs."""
        return empty_batch(self.batch_size, length, self.file_numbering)

    def batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        return stack_examples([self._examples[i] for i in indices], self.batch_size)
