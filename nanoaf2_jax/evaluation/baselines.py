"""Trivial predictions to score a model against: what a method that knows nothing about the
sequence but the length would give. docs/accuracy.md reports them beside the model on proteins
it never trained on."""

from __future__ import annotations

import numpy as np

# Ideal backbone geometry (Engh & Huber): bond lengths in Å, bond angles in degrees.
BOND = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329}
ANGLE = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7}
ALPHA_HELIX = (-57.0, -47.0, 180.0)  # φ, ψ, ω


def _place(a, b, c, bond, angle_deg, torsion_deg):
    """The point d with |cd| = bond, angle bcd and torsion abcd given (NeRF)."""
    angle, torsion = np.deg2rad(angle_deg), np.deg2rad(torsion_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.stack([bc, np.cross(n, bc), n], axis=-1)
    d2 = bond * np.array([-np.cos(angle), np.sin(angle) * np.cos(torsion), np.sin(angle) * np.sin(torsion)])
    return c + m @ d2


def backbone_from_torsions(length: int, phi: float, psi: float, omega: float = 180.0):
    """N, CA, C [length, 3] of a chain with the same (φ, ψ, ω) at every residue."""
    atoms = [np.zeros(3), np.array([BOND["N-CA"], 0.0, 0.0])]
    angle = np.deg2rad(180.0 - ANGLE["N-CA-C"])
    atoms.append(atoms[1] + BOND["CA-C"] * np.array([np.cos(angle), np.sin(angle), 0.0]))
    for _ in range(length - 1):
        n = _place(atoms[-3], atoms[-2], atoms[-1], BOND["C-N"], ANGLE["CA-C-N"], psi)
        ca = _place(atoms[-2], atoms[-1], n, BOND["N-CA"], ANGLE["C-N-CA"], omega)
        c = _place(atoms[-1], n, ca, BOND["CA-C"], ANGLE["N-CA-C"], phi)
        atoms += [n, ca, c]
    xyz = np.asarray(atoms).reshape(length, 3, 3)
    xyz -= xyz[:, 1].mean(axis=0)
    return xyz[:, 0], xyz[:, 1], xyz[:, 2]


def ideal_helix(length: int):
    """An ideal α-helix (φ -57°, ψ -47°) of `length` residues: N, CA, C [length, 3], centred."""
    return backbone_from_torsions(length, *ALPHA_HELIX)
