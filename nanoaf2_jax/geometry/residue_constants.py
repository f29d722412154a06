"""Amino-acid vocabulary and ideal backbone geometry, as the reference defines them."""

import math

# The reference's 20-letter vocabulary; index i is the one-hot position.
AA_VOCAB = "ACDEFGHIKLMNPQRSTVWY"
AA_TO_IDX = {aa: i for i, aa in enumerate(AA_VOCAB)}
# The reference's parser codes unknown residues as 24; its one-hot clamps any code > 20 to 20,
# so 24 and 20 embed identically. We keep 24 so parsed sequences equal the reference's.
UNK_IDX = 24
NUM_ONE_HOT = 21

AA_3TO1 = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLU": "E", "GLN": "Q",
    "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
    "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}
AA_1TO3 = {v: k for k, v in AA_3TO1.items()}

# Ideal backbone geometry (Angstrom / radians), the reference's constants.
IDEAL_N_CA_DIST = 1.458
IDEAL_CA_C_DIST = 1.523
IDEAL_N_CA_C_ANGLE = 1.937
# Positions of N and C in a residue's local frame (CA at the origin, C on +x).
LOCAL_C = (IDEAL_CA_C_DIST, 0.0, 0.0)
LOCAL_N = (
    -IDEAL_N_CA_DIST * math.cos(math.pi - IDEAL_N_CA_C_ANGLE),
    IDEAL_N_CA_DIST * math.sin(math.pi - IDEAL_N_CA_C_ANGLE),
    0.0,
)

# Backbone carbonyl O (Engh & Huber 1991, the values AlphaFold's residue_constants carry): the
# files we write need it because secondary structure (DSSP, PyMOL's dss) is read off the N-H..O=C
# hydrogen bonds. O lies in the peptide plane CA(i), C(i), N(i+1); with CA-C-N at its ideal
# 117.2 degrees the three angles around C sum to 360.
IDEAL_C_O_DIST = 1.231
IDEAL_CA_C_O_ANGLE = math.radians(120.1)
IDEAL_O_C_N_ANGLE = math.radians(122.7)
IDEAL_CA_C_N_ANGLE = math.radians(117.2)
IDEAL_C_N_DIST = 1.329
# Without a next residue (the chain's last, or across a break) O is placed from the residue's own
# frame at this N-CA-C-O dihedral: in the N-CA-C plane, trans to N. Over the 1,767 residues of
# the 33 structures in shared/data it is the circular mean of the deposited dihedrals to 11
# degrees (168.8) and within 0.01 A of the lowest RMS deviation any fixed dihedral gives
# (~1.33 A: psi is unknown, so this placement is a guess by design).
OWN_FRAME_N_CA_C_O_DIHEDRAL = math.pi


def encode_sequence(seq: str) -> list[int]:
    """One-letter string -> reference codes; 'X' maps to UNK_IDX. Raises on other letters."""
    out = []
    for i, ch in enumerate(seq):
        if ch in AA_TO_IDX:
            out.append(AA_TO_IDX[ch])
        elif ch == "X":
            out.append(UNK_IDX)
        else:
            raise ValueError(f"letter {ch!r} at position {i + 1} is not an amino acid")
    return out


def decode_sequence(codes) -> str:
    return "".join(AA_VOCAB[int(c)] if 0 <= int(c) < 20 else "X" for c in codes)
