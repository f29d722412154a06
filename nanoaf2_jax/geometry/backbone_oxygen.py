"""Backbone carbonyl O from N, CA, C with ideal geometry.

The model predicts frames, i.e. N, CA, C; the files we write also carry O because secondary
structure (DSSP, PyMOL's dss, Mol*) is assigned from N-H..O=C hydrogen bonds. O(i) lies in the
peptide plane of CA(i), C(i), N(i+1), at the ideal C=O length, opposite N(i+1); the 360 degrees
around C that CA-C-N(i+1) leaves are shared between CA-C-O and O-C-N in the ratio of their ideal
values, so both are ideal whenever CA-C-N is. Where there is no N(i+1) to define the plane (the
last residue, a chain break) O comes from the residue's own frame at a fixed N-CA-C-O dihedral.

Pure jax.numpy on [..., L, 3]: jit- and vmap-able, and numpy arrays go in as they are.
"""

from __future__ import annotations

import jax.numpy as jnp

from .residue_constants import (IDEAL_C_N_DIST, IDEAL_C_O_DIST, IDEAL_CA_C_O_ANGLE, IDEAL_O_C_N_ANGLE,
                                OWN_FRAME_N_CA_C_O_DIHEDRAL)

# A C(i)-N(i+1) distance further than this from 1.329 A is no peptide bond: no plane to place O in.
# Real structures stay within ~0.05 A; predictions of a trained model within ~0.1 A.
CHAIN_BREAK_TOLERANCE = 0.5
_EPS = 1e-8
# Share of the angle left around C that goes to CA-C-O (120.1 / (120.1 + 122.7)).
_CA_C_O_SHARE = IDEAL_CA_C_O_ANGLE / (IDEAL_CA_C_O_ANGLE + IDEAL_O_C_N_ANGLE)


def _unit(v):
    return v / (jnp.linalg.norm(v, axis=-1, keepdims=True) + _EPS)


def place_atom(a, b, c, bond, angle, dihedral):
    """The atom d with |c-d| = bond, angle b-c-d = angle and dihedral a-b-c-d = dihedral (NeRF)."""
    bc = _unit(c - b)
    n = _unit(jnp.cross(b - a, bc))
    m = jnp.cross(n, bc)
    return (c - bond * jnp.cos(angle) * bc + bond * jnp.sin(angle) * jnp.cos(dihedral) * m
            + bond * jnp.sin(angle) * jnp.sin(dihedral) * n)


def own_frame_oxygen(n, ca, c):
    """O of each residue from its own N, CA, C alone (no psi known): CA-C-O ideal, in the N-CA-C
    plane trans to N."""
    return place_atom(n, ca, c, IDEAL_C_O_DIST, IDEAL_CA_C_O_ANGLE, OWN_FRAME_N_CA_C_O_DIHEDRAL)


def peptide_plane_oxygen(ca, c, n_next):
    """O in the plane CA(i), C(i), N(i+1), on the far side of C from both, at 1.231 A."""
    to_ca = _unit(ca - c)
    to_n = n_next - c
    across = _unit(to_n - jnp.sum(to_n * to_ca, axis=-1, keepdims=True) * to_ca)
    ca_c_n = jnp.arctan2(jnp.linalg.norm(jnp.cross(to_ca, to_n), axis=-1),
                         jnp.sum(to_ca * to_n, axis=-1))[..., None]
    ca_c_o = (2 * jnp.pi - ca_c_n) * _CA_C_O_SHARE
    return c + IDEAL_C_O_DIST * (jnp.cos(ca_c_o) * to_ca - jnp.sin(ca_c_o) * across)


def peptide_bonded(n, c, residue_index=None):
    """[..., L] bool: residue i has a peptide bond to i+1 (C(i)-N(i+1) within the tolerance of
    1.329 A and, given residue numbers, consecutive numbering). The last residue has none."""
    d = jnp.linalg.norm(n[..., 1:, :] - c[..., :-1, :], axis=-1)
    bonded = jnp.abs(d - IDEAL_C_N_DIST) <= CHAIN_BREAK_TOLERANCE
    if residue_index is not None:
        residue_index = jnp.asarray(residue_index)
        bonded = bonded & (residue_index[..., 1:] - residue_index[..., :-1] == 1)
    return jnp.concatenate([bonded, jnp.zeros((*bonded.shape[:-1], 1), bool)], axis=-1)


def backbone_oxygen(n, ca, c, residue_index=None):
    """O [..., L, 3] for backbones N, CA, C [..., L, 3]: in the peptide plane where residue i is
    bonded to i+1 (peptide_bonded), from the residue's own frame otherwise."""
    n, ca, c = (jnp.asarray(x) for x in (n, ca, c))
    if n.shape[-2] == 0:
        return jnp.zeros_like(c)
    # N(i+1), with the last residue's own N standing in (its result is not used).
    n_next = jnp.concatenate([n[..., 1:, :], n[..., -1:, :]], axis=-2)
    planar = peptide_plane_oxygen(ca, c, n_next)
    own = own_frame_oxygen(n, ca, c)
    return jnp.where(peptide_bonded(n, c, residue_index)[..., None], planar, own)
