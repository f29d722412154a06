"""Protein structures in, backbone arrays out: parsing (gemmi) and loading a directory of them.

The parser reproduces the reference's rules (first model, ATOM records only, altloc blank or
'A', residues lacking N, CA or C dropped, unknown residue names coded 24) so that our training
data equals the reference's, but it reads PDB and mmCIF (optionally gzipped) and keeps to one
chain instead of merging every chain's residues by number. Fetching files is download.py.

With modified_residues=True (the default preset's rule, docs/data.md) polymer residues recorded
as HETATM are kept too and coded by their standard parent from gemmi's residue table
(MSE -> M, NLE -> L); one without a standard parent is coded unknown. Dropping them, as the
reference does, closes the chain up over the hole.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from nanoaf2_jax.geometry.residue_constants import AA_3TO1, AA_TO_IDX, UNK_IDX

_LOG = logging.getLogger(__name__)

_FORMATS = {
    ".pdb": gemmi.CoorFormat.Pdb,
    ".ent": gemmi.CoorFormat.Pdb,
    ".cif": gemmi.CoorFormat.Mmcif,
    ".mmcif": gemmi.CoorFormat.Mmcif,
}
STRUCTURE_SUFFIXES = tuple(s + gz for s in _FORMATS for gz in ("", ".gz"))
_BACKBONE = ("N", "CA", "C")
# '\0' is how gemmi spells "no altloc"; 'A' is the first conformer, as in the reference.
_KEPT_ALTLOCS = ("\0", "A")
_CHAIN_SPEC = re.compile(r"[A-Za-z0-9]{1,4}")


class StructureError(ValueError):
    """A structure file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, eq=False)
class Protein:
    """Backbone of one protein chain, residues in author-numbering order.

    sequence: int32 [L], reference codes (0-19, 24 for anything non-standard).
    coords_N, coords_CA, coords_C: float32 [L, 3], Angstrom.
    residue_index: int32 [L], author residue numbers (gaps and insertion codes possible).
    """

    sequence: np.ndarray
    coords_N: np.ndarray
    coords_CA: np.ndarray
    coords_C: np.ndarray
    residue_index: np.ndarray
    name: str
    chain: str
    # From the file's header where it has them (0.0 / "" otherwise): the cache records them.
    resolution: float = 0.0
    method: str = ""

    @property
    def length(self) -> int:
        return int(self.sequence.shape[0])


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def is_structure_file(path: str | os.PathLike) -> bool:
    """True for the extensions we can read: .pdb .ent .cif .mmcif, each optionally .gz."""
    return Path(path).name.lower().endswith(STRUCTURE_SUFFIXES)


def structure_name(path: str | os.PathLike) -> str:
    """File name without its structure suffix: '1UBQ.pdb.gz' -> '1UBQ'."""
    name = Path(path).name
    for suffix in sorted(STRUCTURE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _coor_format(path: Path) -> gemmi.CoorFormat:
    """Format from the extension, so that gemmi never has to guess from the content."""
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in _FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise StructureError(
        f"{path}: unrecognised extension; expected one of {', '.join(STRUCTURE_SUFFIXES)}"
    )


def split_chain_spec(spec: str) -> tuple[str, str | None]:
    """'path/1UBQ.pdb:A' -> ('path/1UBQ.pdb', 'A'); '1UBQ:A' -> ('1UBQ', 'A'); no ':X' -> None.

    Only a trailing ':' followed by 1-4 letters or digits counts as a chain, so colons
    elsewhere in a POSIX path (or a path ending in ':') stay part of the path.
    """
    head, sep, tail = spec.rpartition(":")
    if sep and head and _CHAIN_SPEC.fullmatch(tail):
        return head, tail
    return spec, None


def parse_structure_spec(spec: str | os.PathLike, modified_residues: bool = False) -> Protein:
    """Parse 'PATH' or 'PATH:CHAIN'; an existing file whose own name ends in ':X' wins."""
    if Path(spec).exists():
        return parse_structure(spec, modified_residues=modified_residues)
    path, chain = split_chain_spec(os.fspath(spec))
    return parse_structure(path, chain, modified_residues=modified_residues)


def parse_structure(path: str | os.PathLike, chain: str | None = None,
                    modified_residues: bool = False) -> Protein:
    """Backbone of one protein chain from a PDB/mmCIF file (optionally gzipped).

    Without `chain`, the first chain with at least one usable residue is taken; chains are
    never merged. Raises StructureError naming the file for every way a file can be unusable.
    modified_residues: keep HETATM polymer residues, coded by their parent (module docstring).
    """
    structure = read_structure(path)
    return protein_from_structure(structure, chain, source=str(path), name=structure_name(path),
                                  modified_residues=modified_residues)


def read_structure(path: str | os.PathLike) -> gemmi.Structure:
    """gemmi's Structure of a file, or StructureError naming the file and the reason."""
    path = Path(path)
    if not path.exists():
        raise StructureError(f"{path}: file not found")
    if not path.is_file():
        raise StructureError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise StructureError(f"{path}: file is empty")
    fmt = _coor_format(path)
    if path.name.lower().endswith(".gz"):
        _check_gzip_stream(path)
    try:
        structure = gemmi.read_structure(str(path), format=fmt)
    except (RuntimeError, ValueError, OSError) as err:
        raise StructureError(f"{path}: not a readable {fmt.name} structure: {err}") from err
    return structure


def _check_gzip_stream(path: Path) -> None:
    """gemmi reads a damaged or truncated gzip stream as far as it goes, silently: a corrupt
    file came out as "contains no atoms", a truncated one as a shorter chain. Decompress it
    once (milliseconds for a PDB entry) and name the fault."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise StructureError(f"{path}: corrupt gzip stream ({err})") from None


def protein_from_structure(
    structure: gemmi.Structure, chain: str | None, source: str, name: str,
    modified_residues: bool = False,
) -> Protein:
    """Apply the reference's residue rules to one chain of the first model.

    `source` is what error messages call the input (a path or a URL).
    """
    proteins = proteins_from_structure(structure, source, name, modified_residues,
                                       chain=chain, all_chains=False)
    if chain is None and len(proteins.chain_names) > 1:
        _LOG.info("%s: %d chains (%s); using chain %s, the first with a backbone", source,
                  len(proteins.chain_names), ", ".join(proteins.chain_names), proteins[0].chain)
    return proteins[0]


class _Chains(list):
    """The proteins found, and the names of every chain of the model (for messages)."""

    chain_names: list[str]


def proteins_from_structure(
    structure: gemmi.Structure, source: str, name: str, modified_residues: bool = False,
    chain: str | None = None, all_chains: bool = False,
) -> list[Protein]:
    """The protein chains of the first model: the first with a backbone (or `chain`), or with
    all_chains every one that has a backbone, in file order. Raises StructureError if none."""
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise StructureError(f"{source}: contains no atoms (not a coordinate file?)")
    if modified_residues:
        # Marks each residue polymer / non-polymer / water (from TER records and the residue
        # table for PDB files, from the entity categories for mmCIF).
        structure.setup_entities()
    model = structure[0]
    chain_names = list(dict.fromkeys(c.name for c in model))
    if chain is not None and chain not in chain_names:
        raise StructureError(
            f"{source}: chain {chain!r} not found; chains present: {', '.join(chain_names)}"
        )
    found = _Chains()
    found.chain_names = chain_names
    resolution = float(structure.resolution or 0.0)
    method = structure.info["_exptl.method"] if "_exptl.method" in structure.info else ""
    for candidate in model:
        if chain is not None and candidate.name != chain:
            continue
        if any(p.chain == candidate.name for p in found):
            continue  # a PDB chain split by ligands into two gemmi chains: keep the first
        residues = _backbone_residues(candidate, modified_residues)
        if residues:
            found.append(_to_protein(residues, name=name, chain=candidate.name,
                                     resolution=resolution, method=method,
                                     modified_residues=modified_residues))
            if not all_chains:
                return found
    if found:
        return found
    if chain is not None:
        raise StructureError(
            f"{source}: chain {chain!r} has no ATOM residue with all of N, CA and C"
        )
    raise StructureError(
        f"{source}: no protein chain (no ATOM residue with all of N, CA and C) "
        f"among chains {', '.join(chain_names)}"
    )


def _backbone_residues(chain: gemmi.Chain, modified_residues: bool = False
                       ) -> list[tuple[int, str, dict[str, gemmi.Position]]]:
    """(number, name, {N, CA, C}) per usable residue, sorted by (number, insertion code).

    Residues sharing a number and insertion code (microheterogeneity: gemmi splits e.g. an
    altloc-A ALA and altloc-B SER into two residues) are merged as the reference merges them:
    the name is that of the first residue contributing a kept atom. Unlike the reference,
    insertion codes keep residues apart (52 and 52A are two residues, both numbered 52).
    modified_residues: HETATM residues of the polymer count too (the caller ran setup_entities).
    """
    by_seqid: dict[tuple[int, str], tuple[str, dict[str, gemmi.Position]]] = {}
    for residue in chain:
        # HETATM (water, ligands, MSE...) is ignored, as in the reference, unless the residue
        # belongs to the polymer and modified residues are asked for.
        if residue.het_flag != "A" and not (
                modified_residues and residue.entity_type == gemmi.EntityType.Polymer):
            continue
        for atom in residue:
            if atom.name in _BACKBONE and atom.altloc in _KEPT_ALTLOCS:
                key = (residue.seqid.num, residue.seqid.icode)
                _, atoms = by_seqid.setdefault(key, (residue.name, {}))
                atoms.setdefault(atom.name, atom.pos)
    return [
        (key[0], resname, atoms)
        for key, (resname, atoms) in sorted(by_seqid.items())
        if all(a in atoms for a in _BACKBONE)
    ]


def _residue_code(resname: str, modified_residues: bool = False) -> int:
    """Reference code of a residue name. With modified_residues a non-standard amino acid gets
    its standard parent's code (gemmi's table gives the parent as a lower-case one-letter code:
    MSE 'm', NLE 'l'); without, it is unknown, as in the reference (even when recorded as ATOM)."""
    letter = AA_3TO1.get(resname)
    if letter is None and modified_residues:
        info = gemmi.find_tabulated_residue(resname)
        if info is not None and info.is_amino_acid():
            letter = info.one_letter_code.upper()
    return AA_TO_IDX.get(letter or "X", UNK_IDX)


def _to_protein(residues, name: str, chain: str, resolution: float = 0.0,
                method: str = "", modified_residues: bool = False) -> Protein:
    def coords(atom_name):
        positions = [atoms[atom_name] for _, _, atoms in residues]
        return np.array([[p.x, p.y, p.z] for p in positions], dtype=np.float32)

    return Protein(
        sequence=np.array([_residue_code(resname, modified_residues) for _, resname, _ in residues], dtype=np.int32),
        coords_N=coords("N"),
        coords_CA=coords("CA"),
        coords_C=coords("C"),
        residue_index=np.array([num for num, _, _ in residues], dtype=np.int32),
        name=name,
        chain=chain,
        resolution=resolution,
        method=method,
    )


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


def load_dataset(
    data_dir: str | os.PathLike,
    min_length: int = 1,
    max_length: int | None = None,
    logger: logging.Logger | None = None,
    modified_residues: bool = False,
) -> list[Protein]:
    """Every structure file in `data_dir` (sorted by name) with min_length <= L <= max_length.

    A file that cannot be parsed is logged as a warning and skipped, as the reference does;
    only a directory that yields nothing at all is an error. The reference uses 20 and 200.
    """
    log = logger or _LOG
    data_dir = Path(data_dir)
    if max_length is not None and max_length < min_length:
        raise ValueError(f"max_length {max_length} is below min_length {min_length}")
    if not data_dir.is_dir():
        raise StructureError(f"{data_dir}: not a directory")
    files = sorted(
        (p for p in data_dir.iterdir()
         if p.is_file() and not p.name.startswith(".") and is_structure_file(p)),
        key=lambda p: p.name,
    )
    proteins, failed, out_of_range = [], 0, 0
    for path in files:
        try:
            protein = parse_structure(path, modified_residues=modified_residues)
        except StructureError as err:
            log.warning("skipping %s", err)
            failed += 1
            continue
        if protein.length < min_length or (max_length is not None and protein.length > max_length):
            log.info("skipping %s: length %d outside [%d, %s]",
                     path, protein.length, min_length, max_length)
            out_of_range += 1
            continue
        proteins.append(protein)
    if not proteins:
        raise StructureError(
            f"{data_dir}: no usable structure file ({len(files)} with extensions "
            f"{', '.join(STRUCTURE_SUFFIXES)}; {failed} unreadable, {out_of_range} outside "
            f"the length range [{min_length}, {max_length}])"
        )
    return proteins
