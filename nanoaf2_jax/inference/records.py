"""What to predict: sequences and FASTA files parsed into named `Record`s of residue codes.

Names become file names, so they are made file-name safe and unique; bad input is an
`InputError` that names the record, the position and the character.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..data.structures import Protein
from ..geometry.residue_constants import AA_TO_IDX, AA_VOCAB, UNK_IDX, decode_sequence

ALLOWED_LETTERS = AA_VOCAB + "X"
# Record names become file names: anything but these characters is replaced by '_'.
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class InputError(ValueError):
    """Bad user input (sequence, FASTA file, checkpoint, option); the message says which."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One sequence to predict. `codes` are the model's residue codes (X -> UNK_IDX)."""

    name: str
    codes: np.ndarray

    @property
    def length(self) -> int:
        return int(self.codes.shape[0])

    @property
    def sequence(self) -> str:
        return decode_sequence(self.codes)


def parse_sequence(text: str, name: str, where: str = "") -> np.ndarray:
    """Residue codes of a one-letter sequence. Case and whitespace (line breaks included) are
    ignored, and so is one '*' at the end (a stop codon); any other character than the 20
    amino acids and X is an error naming the record,
    its 1-based position among the residues and the character. `where` (e.g. 'in FILE')
    is added to messages."""
    residues = "".join(text.split()).upper()
    # FASTA exports of translated genes end in '*' (the stop codon): it is no residue.
    if residues.endswith("*"):
        residues = residues[:-1]
    suffix = f" {where}" if where else ""
    if not residues:
        raise InputError(f"record {name!r}{suffix} is an empty sequence")
    for position, letter in enumerate(residues, start=1):
        if letter not in ALLOWED_LETTERS:
            raise InputError(
                f"record {name!r}{suffix}: {letter!r} at position {position} is not an amino "
                f"acid (allowed: {ALLOWED_LETTERS}, any case)")
    return np.array([AA_TO_IDX.get(a, UNK_IDX) for a in residues], dtype=np.int32)


def safe_name(header_name: str, fallback: str) -> str:
    """A record name usable in file names: 'sp|P69905|HBA_HUMAN' -> 'sp_P69905_HBA_HUMAN'."""
    name = _UNSAFE_NAME_CHARS.sub("_", header_name).strip("._")
    return name or fallback


def parse_fasta_text(text: str, source: str) -> list[Record]:
    """Records of a FASTA text. The name is the header's first word (made file-name safe).
    Blank lines are skipped; text before the first '>' means this is not FASTA."""
    records = []
    header = None  # (name, line number) of the record being read
    chunks: list[str] = []

    def finish():
        if header is not None:
            name, line_no = header
            where = f"(header on line {line_no} of {source})"
            records.append(Record(name, parse_sequence("".join(chunks), name, where)))

    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(">"):
            finish()
            words = stripped[1:].split()
            header = (safe_name(words[0] if words else "", f"record{len(records) + 1}"), line_no)
            chunks = []
        elif header is None:
            raise InputError(f"{source}: not a FASTA file (line {line_no} comes before any "
                             f"'>' header line)")
        else:
            chunks.append(stripped)
    finish()
    if not records:
        raise InputError(f"{source}: FASTA file has no records (no '>' header line)")
    return records


def read_fasta(path) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: FASTA file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a FASTA file (not text)") from None
    return parse_fasta_text(text, str(path))


def unique_names(records: list[Record]) -> list[Record]:
    """Rename repeated names ('a', 'a' -> 'a', 'a_2') so no record overwrites another's files."""
    seen: set[str] = set()
    out = []
    for rec in records:
        name, k = rec.name, 2
        while name in seen:
            name, k = f"{rec.name}_{k}", k + 1
        seen.add(name)
        out.append(rec if name == rec.name else dataclasses.replace(rec, name=name))
    return out


def records_from_inputs(sequences=(), fasta_files=()) -> list[Record]:
    """FASTA records first (file by file), then --sequence records named seq1, seq2, ..."""
    records = [rec for path in fasta_files for rec in read_fasta(path)]
    records += [Record(f"seq{i}", parse_sequence(s, f"seq{i}", "(--sequence)"))
                for i, s in enumerate(sequences, start=1)]
    return unique_names(records)


def record_from_protein(protein: Protein) -> Record:
    return Record(safe_name(protein.name, "native"), np.asarray(protein.sequence, np.int32))
