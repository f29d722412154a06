"""Whole-backbone checks of a predicted structure: RMSD over N, CA and C, the rotation error of
the residue frames, and peptide geometry. A CA trace with N and C in the wrong places scores
well on CA-only metrics; these do not let it.

Plain numpy in float64. Backbones are (N, CA, C), each [L, 3], with the same residue
correspondence in prediction and native (row i is residue i).
"""

from __future__ import annotations

import numpy as np

from .metrics import apply_transform, kabsch

# Real backbones: the peptide C(i)-N(i+1) bond is 1.33 Å (Engh & Huber); consecutive CA atoms of
# trans peptides are 3.80 Å apart.
PEPTIDE_C_N = 1.33
CA_CA = 3.80
TOLERANCES = (0.1, 0.2)


def _stack(backbone) -> np.ndarray:
    n, ca, c = (np.asarray(x, np.float64) for x in backbone)
    if not (n.shape == ca.shape == c.shape) or n.ndim != 2 or n.shape[-1] != 3:
        raise ValueError(f"expected N, CA, C of shape [L, 3], got {n.shape}, {ca.shape}, {c.shape}")
    return np.stack([n, ca, c], axis=1)  # [L, 3 atoms, 3]


def backbone_superposition(pred, native):
    """(R, t) superposing all N, CA, C atoms of pred onto native."""
    P, Q = _stack(pred).reshape(-1, 3), _stack(native).reshape(-1, 3)
    if P.shape != Q.shape:
        raise ValueError(f"prediction has {P.shape[0] // 3} residues, native {Q.shape[0] // 3}")
    return kabsch(P, Q)


def backbone_rmsd(pred, native) -> float:
    """RMSD over N, CA and C after optimal superposition of all three."""
    R, t = backbone_superposition(pred, native)
    diff = apply_transform(_stack(pred).reshape(-1, 3), R, t) - _stack(native).reshape(-1, 3)
    return float(np.sqrt(np.mean(np.sum(diff * diff, axis=-1))))


def residue_frames(backbone) -> np.ndarray:
    """Rotation [L, 3, 3] of each residue's frame (columns x, y, z), as the model defines it:
    x along CA→C, z normal to the (CA→C, CA→N) plane."""
    atoms = _stack(backbone)
    x = atoms[:, 2] - atoms[:, 1]
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    z = np.cross(x, atoms[:, 0] - atoms[:, 1])
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-1)


def frame_rotation_errors(pred, native) -> np.ndarray:
    """Per-residue angle (degrees) between the predicted frame, after the backbone superposition,
    and the native frame."""
    R, _ = backbone_superposition(pred, native)
    rel = np.einsum("ij,ljk,lmk->lim", R, residue_frames(pred), residue_frames(native))
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def peptide_geometry(backbone) -> dict:
    """C(i)-N(i+1) and CA(i)-CA(i+1) distances: their means and the fractions within 0.1 Å and
    0.2 Å of 1.33 Å and 3.80 Å. NaN for a single residue."""
    atoms = _stack(backbone)
    c_n = np.linalg.norm(atoms[1:, 0] - atoms[:-1, 2], axis=-1)
    ca_ca = np.linalg.norm(atoms[1:, 1] - atoms[:-1, 1], axis=-1)
    out = {}
    for name, d, ideal in (("c_n", c_n, PEPTIDE_C_N), ("ca_ca", ca_ca, CA_CA)):
        out[f"{name}_mean"] = float(np.mean(d)) if d.size else float("nan")
        for tol in TOLERANCES:
            out[f"{name}_within_{tol}"] = float(np.mean(np.abs(d - ideal) <= tol)) if d.size else float("nan")
    return out


def backbone_scores(pred, native) -> dict:
    """backbone_rmsd, rotation_error_deg (mean over residues) and the prediction's peptide
    geometry (peptide_geometry's keys)."""
    return {
        "backbone_rmsd": backbone_rmsd(pred, native),
        "rotation_error_deg": float(np.mean(frame_rotation_errors(pred, native))),
        **peptide_geometry(pred),
    }
