"""Three-state secondary structure (H helix, E strand, C coil) from a backbone, for the plots.

DSSP's definitions (Kabsch & Sander 1983) on N, CA, C and the carbonyl O (rebuilt with ideal
geometry when not given, as the files we write carry it): an electrostatic hydrogen-bond energy
between C=O(i) and N-H(j), bonded below -0.5 kcal/mol; two consecutive n-turns make a helix
(n = 4: H, 3: G, 5: I), bridges between strands make E/B. Reduced to three states the usual
way: H, G, I -> H; E, B -> E; the rest -> C. Not DSSP itself: beta-bulges are not bridged over
and helix ends are not arbitrated against each other, so it can differ from mkdssp by a residue
at an element's end (tests/test_secondary_structure.py measures the agreement). Real mkdssp
needs a file on disk and a Debian package; the plots need neither.
"""

from __future__ import annotations

import numpy as np

from ..geometry.backbone_oxygen import backbone_oxygen, peptide_bonded

# DSSP's constants: partial charges 0.42 e and 0.20 e times 332 (kcal/mol, A), and the cut-off.
_Q1Q2_F = 0.084 * 332.0
HBOND_ENERGY_CUTOFF = -0.5
# DSSP puts H 1.0 A from N, along the previous residue's O->C direction.
_N_H_DIST = 1.0


def hbond_energy(n, ca, c, o, proline=None) -> np.ndarray:
    """E[i, j] (kcal/mol): C=O of residue i to N-H of residue j; 0 where j has no H (the first
    residue, a residue after a chain break, proline) and for |i - j| < 2, as DSSP sets it."""
    n, ca, c, o = (np.asarray(x, np.float64) for x in (n, ca, c, o))
    length = n.shape[0]
    co = c[:-1] - o[:-1]
    h = n.copy()
    h[1:] = n[1:] + _N_H_DIST * co / np.linalg.norm(co, axis=-1, keepdims=True)

    def dist(a, b):  # [i, j] = |a_i - b_j|
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)

    with np.errstate(divide="ignore"):
        energy = _Q1Q2_F * (1 / dist(o, n) + 1 / dist(c, h) - 1 / dist(o, h) - 1 / dist(c, n))
    has_h = np.ones(length, bool)
    has_h[0] = False
    has_h[1:] &= np.asarray(peptide_bonded(n, c))[:-1]
    if proline is not None:
        has_h &= ~np.asarray(proline, bool)
    i, j = np.indices((length, length))
    ok = has_h[None, :] & (np.abs(i - j) >= 2) & np.isfinite(energy)
    # DSSP's lower bound of -9.9 kcal/mol: atoms on top of each other are no bond of -inf.
    return np.where(ok, np.maximum(energy, -9.9), 0.0)


def _helix(hb, turn) -> np.ndarray:
    """Residues of helices of this turn: n-turns at i-1 and i make i..i+n-1 helical."""
    length = hb.shape[0]
    starts = np.zeros(length, bool)
    starts[:length - turn] = hb[np.arange(length - turn), np.arange(turn, length)]
    helix = np.zeros(length, bool)
    for i in range(1, length - turn):
        if starts[i - 1] and starts[i]:
            helix[i:i + turn] = True
    return helix


def _bridged(hb) -> np.ndarray:
    """Residues in a parallel or antiparallel bridge with a partner at least 3 residues away."""
    length = hb.shape[0]
    pad = np.zeros((length + 2, length + 2), bool)
    pad[1:-1, 1:-1] = hb
    # b(a, b) = hbond C=O(a) -> N-H(b), with out-of-range residues bonding nothing.
    def b(a, bb):
        return pad[a + 1, bb + 1]
    i, j = np.indices((length, length))
    parallel = (b(i - 1, j) & b(j, i + 1)) | (b(j - 1, i) & b(i, j + 1))
    antiparallel = (b(i, j) & b(j, i)) | (b(i - 1, j + 1) & b(j - 1, i + 1))
    bridge = (parallel | antiparallel) & (np.abs(i - j) >= 3)
    return bridge.any(axis=1)


def secondary_structure(n, ca, c, o=None, sequence=None) -> str:
    """'H'/'E'/'C' per residue of one chain (N, CA, C [L, 3], O rebuilt if None; sequence codes
    to leave proline without an N-H)."""
    n, ca, c = (np.asarray(x, np.float64) for x in (n, ca, c))
    length = n.shape[0]
    if length < 3:
        return "C" * length
    if o is None:
        o = np.asarray(backbone_oxygen(n, ca, c), np.float64)
    proline = None
    if sequence is not None:
        from ..geometry.residue_constants import AA_TO_IDX
        proline = np.asarray(sequence).reshape(-1) == AA_TO_IDX["P"]
    hb = hbond_energy(n, ca, c, o, proline) < HBOND_ENERGY_CUTOFF
    alpha = _helix(hb, 4)
    strand = _bridged(hb) & ~alpha
    other_helix = (_helix(hb, 3) | _helix(hb, 5)) & ~alpha & ~strand
    states = np.full(length, "C")
    states[alpha | other_helix] = "H"
    states[strand] = "E"
    return "".join(states)
