"""Write and read backbone-only structures in PDB or mmCIF, via gemmi.

Files are written with N, CA, C (the model's frames) and the carbonyl O placed from them with
ideal geometry (geometry/backbone_oxygen.py), so that DSSP and viewers can assign secondary
structure. PDB files start with HEADER and CRYST1 records (a 1 A cubic P 1 cell, as AlphaFold
and ColabFold write for models), which strict readers such as mkdssp 4 require.

Predicted models carry per-residue pLDDT (in [0, 1]) as B-factor x 100 on every atom, which is
what structure viewers colour by. mmCIF is written as ModelCIF (modelcif_io.py), where pLDDT is
also a per-residue and a global quality metric. Header lines (checkpoint, seed, sampling
steps...) go in REMARK 250 records for PDB and in leading `#` comments plus the modelling
protocol's details for ModelCIF.
"""

from __future__ import annotations

import os
import secrets

import gemmi
import numpy as np

from nanoaf2_jax.geometry.backbone_oxygen import backbone_oxygen
from nanoaf2_jax.geometry.residue_constants import AA_1TO3, AA_3TO1, AA_TO_IDX, AA_VOCAB, UNK_IDX
from nanoaf2_jax.inference.modelcif_io import modelcif_text

BACKBONE_ATOMS = (("N", "N"), ("CA", "C"), ("C", "C"))  # (atom name, element): what is read
WRITTEN_ATOMS = BACKBONE_ATOMS + (("O", "O"),)  # what is written
# HEADER's classification field (columns 11-50); its date and ID stay blank so that the same
# sample gives the same bytes. mkdssp 4 reads a file as PDB only if it starts with HEADER.
_PDB_CLASSIFICATION = "PREDICTED MODEL"
_EXT_TO_FMT = {".pdb": "pdb", ".cif": "cif", ".mmcif": "cif"}
_REMARK_PREFIX = "REMARK 250 "
# PDB records are 80 columns wide; longer header lines are wrapped over several REMARKs.
_REMARK_WIDTH = 80 - len(_REMARK_PREFIX)
# Fixed-width PDB coordinate fields (%8.3f) cannot hold values outside this range.
_PDB_COORD_RANGE = (-999.999, 9999.999)


def resolve_format(path, fmt=None) -> str:
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = "cif" if fmt == "mmcif" else fmt
        if fmt not in ("pdb", "cif"):
            raise ValueError(f"unknown structure format {fmt!r}; use 'pdb' or 'cif'")
        return fmt
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _EXT_TO_FMT:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; "
                         "use .pdb, .cif or .mmcif, or pass fmt='pdb'/'cif'")
    return _EXT_TO_FMT[ext]


def residue_name(code) -> str:
    code = int(code)
    return AA_1TO3[AA_VOCAB[code]] if 0 <= code < 20 else "UNK"


def _as_coords(name, x, length):
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (length, 3):
        raise ValueError(f"{name} has shape {x.shape}, expected ({length}, 3)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite coordinates")
    return x


def _header_lines(header_lines) -> list[str]:
    if isinstance(header_lines, str):
        header_lines = [header_lines]
    # A newline inside a line would break both formats' record structure.
    return [part for line in header_lines for part in str(line).splitlines()]


def backbone_with_oxygen(coords_N, coords_CA, coords_C, length) -> list[np.ndarray]:
    """[N, CA, C, O] as float64 [L, 3] after checking shapes and finiteness; O rebuilt with
    ideal geometry (peptide plane, own frame at the chain's end and across breaks)."""
    coords = [_as_coords(n, x, length) for n, x in
              (("coords_N", coords_N), ("coords_CA", coords_CA), ("coords_C", coords_C))]
    # float64 numpy in, jax computes in float32: ~1e-5 A, far below PDB's 0.001 A.
    return coords + [np.asarray(backbone_oxygen(*coords), dtype=np.float64)]


def build_structure(sequence_codes, coords_N, coords_CA, coords_C, plddt=None,
                    name="nanoaf2") -> gemmi.Structure:
    """One model, chain A, residues 1..L with atoms N, CA, C, O; B-factor = pLDDT x 100."""
    codes = np.asarray(sequence_codes).reshape(-1)
    coords = backbone_with_oxygen(coords_N, coords_CA, coords_C, codes.shape[0])
    return _structure(codes, coords, _bfactors(plddt, codes.shape[0]), name)


def _bfactors(plddt, length) -> np.ndarray:
    if plddt is None:
        return np.zeros(length)
    bfactor = 100.0 * np.asarray(plddt, dtype=np.float64).reshape(-1)
    if bfactor.shape != (length,):
        raise ValueError(f"plddt has {bfactor.shape[0]} values for {length} residues")
    return bfactor


def _structure(codes, coords, bfactor, name) -> gemmi.Structure:
    st = gemmi.Structure()
    st.name = name
    st.info["_struct_keywords.pdbx_keywords"] = _PDB_CLASSIFICATION
    # No crystal: the 1 A cubic P 1 cell is the PDB's convention for that (CRYST1 in the file).
    st.cell = gemmi.UnitCell(1.0, 1.0, 1.0, 90.0, 90.0, 90.0)
    st.spacegroup_hm = "P 1"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    names = [residue_name(c) for c in codes]
    for i, resname in enumerate(names):
        res = gemmi.Residue()
        res.name = resname
        res.seqid = gemmi.SeqId(i + 1, " ")
        res.het_flag = "A"
        res.entity_type = gemmi.EntityType.Polymer
        # Explicit label_* ids so mmCIF gets label_asym_id 'A' and label_seq_id 1..L.
        res.subchain = "A"
        res.label_seq = i + 1
        for (atom_name, element), xyz in zip(WRITTEN_ATOMS, coords):
            atom = gemmi.Atom()
            atom.name = atom_name
            atom.element = gemmi.Element(element)
            atom.pos = gemmi.Position(*xyz[i])
            atom.occ = 1.0
            atom.b_iso = float(bfactor[i])
            res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)

    entity = gemmi.Entity("1")
    entity.entity_type = gemmi.EntityType.Polymer
    entity.polymer_type = gemmi.PolymerType.PeptideL
    entity.subchains = ["A"]
    entity.full_sequence = names
    st.entities.append(entity)
    return st


def _pdb_text(st, header) -> str:
    coords = np.array([a.pos.tolist() for r in st[0]["A"] for a in r])
    if coords.size and (coords.min() < _PDB_COORD_RANGE[0] or coords.max() > _PDB_COORD_RANGE[1]):
        raise ValueError("coordinates do not fit PDB's fixed-width fields; write mmCIF instead")
    if len(st[0]["A"]) > 9999:
        raise ValueError("more than 9999 residues do not fit PDB numbering; write mmCIF instead")
    st.raw_remarks = [_REMARK_PREFIX + line[k:k + _REMARK_WIDTH]
                      for line in header for k in range(0, max(len(line), 1), _REMARK_WIDTH)]
    return st.make_pdb_string()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file in the target directory, then rename over the target.

    os.replace within one directory is atomic, so readers see the old file or the new one,
    never a partial one, and a failure leaves no stray temporary file behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp_name = f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp = os.path.join(directory, tmp_name)
    # O_EXCL with mode 0666 (not mkstemp's 0600) so the result gets the umask's usual permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_backbone(path, sequence_codes, coords_N, coords_CA, coords_C, plddt=None,
                   header_lines=(), fmt=None) -> None:
    """Write one model, chain A, residues 1..L with atoms N, CA, C and O (rebuilt from the
    other three, backbone_with_oxygen); B-factor = pLDDT x 100."""
    fmt = resolve_format(path, fmt)
    header = _header_lines(header_lines)
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "nanoaf2"
    codes = np.asarray(sequence_codes).reshape(-1)
    # Validates shapes, finiteness and the pLDDT length for both formats.
    coords = backbone_with_oxygen(coords_N, coords_CA, coords_C, codes.shape[0])
    bfactor = _bfactors(plddt, codes.shape[0])
    if fmt == "pdb":
        text = _pdb_text(_structure(codes, coords, bfactor, stem), header)
    else:
        text = modelcif_text(stem, codes, tuple(coords), plddt, header)
    atomic_write_text(path, text)


def _read_header(path, fmt, st) -> list[str]:
    if fmt == "pdb":
        return [r[len(_REMARK_PREFIX):].rstrip() for r in st.raw_remarks
                if r.startswith(_REMARK_PREFIX)]
    header = []
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            header.append(line[1:].strip())
    return header


def read_backbone(path, fmt=None) -> dict:
    """Read the first chain of the first model.

    Returns sequence (int codes, UNK_IDX for non-standard residues), coords_N/CA/C/O [L, 3]
    (NaN where an atom is missing), bfactor [L] (the CA's, NaN if no CA) and header_lines.
    """
    fmt = resolve_format(path, fmt)
    coor_format = gemmi.CoorFormat.Pdb if fmt == "pdb" else gemmi.CoorFormat.Mmcif
    st = gemmi.read_structure(os.fspath(path), format=coor_format)
    chain = st[0][0]
    residues = [r for r in chain if r.het_flag != "H"] or list(chain)
    length = len(residues)
    codes = np.full(length, UNK_IDX, dtype=np.int32)
    coords = {name: np.full((length, 3), np.nan) for name, _ in WRITTEN_ATOMS}
    bfactor = np.full(length, np.nan)
    for i, res in enumerate(residues):
        codes[i] = AA_TO_IDX.get(AA_3TO1.get(res.name, "X"), UNK_IDX)
        for name, _ in WRITTEN_ATOMS:
            atom = res.find_atom(name, "*")
            if atom is not None:
                coords[name][i] = atom.pos.tolist()
                if name == "CA":
                    bfactor[i] = atom.b_iso
    return {
        "sequence": codes,
        "coords_N": coords["N"],
        "coords_CA": coords["CA"],
        "coords_C": coords["C"],
        "coords_O": coords["O"],
        "bfactor": bfactor,
        "header_lines": _read_header(path, fmt, st),
    }
