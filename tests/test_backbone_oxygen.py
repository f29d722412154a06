"""The carbonyl O the structure files carry (geometry/backbone_oxygen.py): rebuilt from N, CA, C
of deposited structures it lands on the deposited O, with ideal C=O and angles, and it falls
back to the residue's own frame where there is no next residue to define the peptide plane."""

import math

import jax
import numpy as np
import pytest

from helpers import FIXTURES
from nanoaf2_jax.geometry import residue_constants as rc
from nanoaf2_jax.geometry.backbone_oxygen import backbone_oxygen, own_frame_oxygen, peptide_bonded
from nanoaf2_jax.inference.structure_io import read_backbone


def angle(a, b, c):
    u, v = a - b, c - b
    cos = np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cos, -1, 1))


def dihedral(a, b, c, d):
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1, -1, keepdims=True) * b1
    w = b2 - np.sum(b2 * b1, -1, keepdims=True) * b1
    return np.arctan2(np.sum(np.cross(b1, v) * w, -1), np.sum(v * w, -1))


def native(name):
    d = read_backbone(FIXTURES / f"{name}.pdb")
    assert not np.isnan(d["coords_O"]).any()
    return d["coords_N"], d["coords_CA"], d["coords_C"], d["coords_O"]


@pytest.mark.parametrize("name, mean_limit", [("1CRN", 0.1), ("1UBQ", 0.12)])
def test_rebuilt_o_matches_deposited(name, mean_limit):
    """Measured: mean deviation 0.055 A (1CRN, 1.5 A X-ray) and 0.072 A (1UBQ), max 0.19 A."""
    n, ca, c, o_true = native(name)
    o = np.asarray(backbone_oxygen(n, ca, c), np.float64)
    dev = np.linalg.norm(o - o_true, axis=-1)[:-1]  # the last residue has no peptide plane
    assert dev.mean() < mean_limit and dev.max() < 0.3, (dev.mean(), dev.max())
    np.testing.assert_allclose(np.linalg.norm(o - c, axis=-1), rc.IDEAL_C_O_DIST, atol=1e-4)
    # In the peptide plane: O-C-N(i+1) and CA-C-O are ideal up to how far CA-C-N is from ideal
    # (the leftover is shared): on average within 1 degree, at worst 3 (measured 2.9, where the
    # deposited CA-C-N is 6 degrees off)...
    ca_c_o = angle(ca[:-1], c[:-1], o[:-1])
    o_c_n = angle(o[:-1], c[:-1], n[1:])
    for measured, ideal in ((ca_c_o, rc.IDEAL_CA_C_O_ANGLE), (o_c_n, rc.IDEAL_O_C_N_ANGLE)):
        assert np.mean(np.abs(measured - ideal)) < math.radians(1.0)
        assert np.max(np.abs(measured - ideal)) < math.radians(3.5)
    # ... and the three angles around C sum to 360 (O planar with CA, C, N(i+1)).
    np.testing.assert_allclose(ca_c_o + o_c_n + angle(ca[:-1], c[:-1], n[1:]), 2 * np.pi, atol=1e-4)


def ideal_peptide(length=6, seed=0):
    """N, CA, C of a chain with every bond and angle ideal (CA-C-N 117.2) at random torsions."""
    from nanoaf2_jax.geometry.backbone_oxygen import place_atom

    rng = np.random.default_rng(seed)
    atoms = [np.array([0.0, 1.4, 0.3]), np.zeros(3), np.array([rc.IDEAL_CA_C_DIST, 0.0, 0.0])]
    bonds = (rc.IDEAL_C_N_DIST, rc.IDEAL_N_CA_DIST, rc.IDEAL_CA_C_DIST)
    angles = (rc.IDEAL_CA_C_N_ANGLE, math.radians(121.7), rc.IDEAL_N_CA_C_ANGLE)
    for k in range(3 * (length - 1)):
        torsion = math.pi if k % 3 == 1 else rng.uniform(-math.pi, math.pi)  # omega trans
        atoms.append(np.asarray(place_atom(*atoms[-3:], bonds[k % 3], angles[k % 3], torsion), np.float64))
    x = np.array(atoms).reshape(length, 3, 3)
    return x[:, 0], x[:, 1], x[:, 2]


def test_ideal_angles_exact_on_ideal_backbone():
    n, ca, c = ideal_peptide()
    o = np.asarray(backbone_oxygen(n, ca, c), np.float64)
    np.testing.assert_allclose(angle(ca[:-1], c[:-1], o[:-1]), rc.IDEAL_CA_C_O_ANGLE, atol=1e-4)
    np.testing.assert_allclose(angle(o[:-1], c[:-1], n[1:]), rc.IDEAL_O_C_N_ANGLE, atol=1e-4)
    # O lies in the plane of CA(i), C(i), N(i+1).
    normal = np.cross(ca[:-1] - c[:-1], n[1:] - c[:-1])
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.sum((o[:-1] - c[:-1]) * normal, -1), 0.0, atol=1e-4)


def test_last_residue_from_own_frame():
    n, ca, c, _ = native("1CRN")
    o = np.asarray(backbone_oxygen(n, ca, c), np.float64)
    np.testing.assert_allclose(o[-1], np.asarray(own_frame_oxygen(n, ca, c))[-1], atol=1e-5)
    np.testing.assert_allclose(angle(ca[-1], c[-1], o[-1]), rc.IDEAL_CA_C_O_ANGLE, atol=1e-4)
    np.testing.assert_allclose(abs(dihedral(n[-1], ca[-1], c[-1], o[-1])), math.pi, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(o[-1] - c[-1]), rc.IDEAL_C_O_DIST, atol=1e-4)


def test_chain_breaks_fall_back_to_own_frame():
    """A gap (residues 20-24 cut out of ubiquitin) leaves residue 19 with no N(i+1) bonded to its
    C: placing O in the plane of a far-away N would put it anywhere. Both a numbering gap and a
    C-N distance far from 1.33 A count as a break."""
    n, ca, c, _ = native("1UBQ")
    keep = np.r_[0:19, 24:len(n)]
    n, ca, c = n[keep], ca[keep], c[keep]
    residue_index = keep + 1
    own = np.asarray(own_frame_oxygen(n, ca, c))
    bonded = np.asarray(peptide_bonded(n, c))
    assert not bonded[18] and not bonded[-1] and bonded[:18].all() and bonded[19:-1].all()
    o = np.asarray(backbone_oxygen(n, ca, c))
    np.testing.assert_allclose(o[18], own[18], atol=1e-5)
    assert np.linalg.norm(o[17] - own[17]) > 0.1  # bonded residues keep the peptide-plane O
    # Numbering alone: a structure whose C-N distances all look bonded, with one gap in numbers.
    n, ca, c = ideal_peptide(8)
    numbers = np.array([1, 2, 3, 10, 11, 12, 13, 14])
    o = np.asarray(backbone_oxygen(n, ca, c, residue_index=numbers))
    own = np.asarray(own_frame_oxygen(n, ca, c))
    np.testing.assert_allclose(o[2], own[2], atol=1e-5)
    assert np.linalg.norm(np.asarray(backbone_oxygen(n, ca, c))[2] - own[2]) > 0.1


def test_jit_and_vmap():
    n, ca, c, _ = native("1CRN")
    batch = [np.stack([x, x[::-1] + 3.0]) for x in (n, ca, c)]
    expected = np.stack([np.asarray(backbone_oxygen(*(x[k] for x in batch))) for k in range(2)])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(backbone_oxygen))(*batch)), expected, atol=1e-5)
    # Leading batch axes work without vmap too.
    np.testing.assert_allclose(np.asarray(backbone_oxygen(*batch)), expected, atol=1e-5)
    assert np.asarray(backbone_oxygen(n[:1], ca[:1], c[:1])).shape == (1, 3)
