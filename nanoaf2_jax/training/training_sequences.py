"""The sequences a run trains on, written beside its checkpoints as training_sequences.fasta, so
that sampling and evaluation can say how close a query is to the nearest of them
(data/sequence_identity.py). One FASTA record per chain: ~60 bytes + L, about 1 MB for 5,000
chains, written once when the run starts (again on resume: the data set may have grown).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..data.sequence_identity import SequenceSet
from ..geometry.residue_constants import decode_sequence
from .checkpoint import CHECKPOINT_SUBDIR

SEQUENCES_FILE = "training_sequences.fasta"


def protein_records(proteins: Iterable) -> list[tuple[str, str]]:
    """(name, one-letter sequence) of Protein objects; the name as the fingerprint has it."""
    return [(f"{p.name}_{p.chain}" if p.chain else p.name, decode_sequence(p.sequence))
            for p in proteins]


def write_sequences(output_dir, records: Iterable[tuple[str, str]]) -> Path:
    """<output_dir>/training_sequences.fasta, replaced atomically."""
    path = Path(output_dir) / SEQUENCES_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for name, seq in records:
            f.write(f">{name}\n{seq}\n")
    os.replace(tmp, path)
    return path


def read_sequences(path) -> tuple[list[str], list[str]]:
    names, seqs = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(">"):
            names.append(line[1:].split()[0] if line[1:].split() else f"seq{len(names) + 1}")
            seqs.append("")
        elif names:
            seqs[-1] += line.strip()
    return names, seqs


def run_file_of(checkpoint, filename: str) -> Path | None:
    """<run directory>/filename for a checkpoint path (a run directory, its checkpoints/
    directory, one step directory, or a state_dict file exported into the run directory), or
    None when that run has no such file."""
    path = Path(checkpoint)
    if path.is_file() or path.name == CHECKPOINT_SUBDIR:
        directory = path.parent
    elif path.name.isdigit() and path.parent.name == CHECKPOINT_SUBDIR:
        directory = path.parent.parent
    else:
        directory = path
    return directory / filename if (directory / filename).is_file() else None


def sequences_file_of(checkpoint) -> Path | None:
    """The training_sequences.fasta of the run a checkpoint path belongs to, or None when that
    run has none (runs from before this file, or a bare .pt)."""
    return run_file_of(checkpoint, SEQUENCES_FILE)


def training_set_of(checkpoint) -> SequenceSet | None:
    """The checkpoint's training sequences, ready to search; None if it carries none."""
    path = sequences_file_of(checkpoint)
    if path is None:
        return None
    names, seqs = read_sequences(path)
    return SequenceSet(names, seqs)
