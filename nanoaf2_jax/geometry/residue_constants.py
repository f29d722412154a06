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
