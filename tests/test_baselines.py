"""The trivial baseline of docs/accuracy.md: an ideal α-helix built from torsions."""

import numpy as np

from nanoaf2_jax.evaluation.backbone_metrics import peptide_geometry
from nanoaf2_jax.evaluation.baselines import BOND, backbone_from_torsions, ideal_helix


def _dihedral(a, b, c, d):
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0 @ b1 * b1, b2 - b2 @ b1 * b1
    return np.degrees(np.arctan2(np.cross(b1, v) @ w, v @ w))


def test_ideal_helix_has_ideal_bonds_its_torsions_and_alpha_helix_geometry():
    n, ca, c = ideal_helix(30)
    np.testing.assert_allclose(np.linalg.norm(ca - n, axis=1), BOND["N-CA"], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(c - ca, axis=1), BOND["CA-C"], atol=1e-9)
    assert peptide_geometry((n, ca, c))["c_n_within_0.1"] == 1.0
    np.testing.assert_allclose(_dihedral(c[9], n[10], ca[10], c[10]), -57.0, atol=1e-6)  # φ
    np.testing.assert_allclose(_dihedral(n[10], ca[10], c[10], n[11]), -47.0, atol=1e-6)  # ψ
    # α-helix: 3.6 residues per turn, 1.5 Å rise: CA(i)-CA(i+3) ≈ 5.0-5.4 Å, CA(i)-CA(i+4) ≈ 6.2 Å.
    d3 = np.linalg.norm(ca[3:] - ca[:-3], axis=1)
    d4 = np.linalg.norm(ca[4:] - ca[:-4], axis=1)
    assert 4.9 < d3.mean() < 5.5 and 5.9 < d4.mean() < 6.5
    axis_length = np.linalg.norm(ca[-1] - ca[0])
    assert 1.4 * 29 < axis_length < 1.6 * 29 + 2.3 * 2
    np.testing.assert_allclose(ca.mean(axis=0), 0.0, atol=1e-9)


def test_extended_strand_is_far_longer_than_the_helix():
    _, ca_strand, _ = backbone_from_torsions(10, -120.0, 130.0)
    _, ca_helix, _ = ideal_helix(10)
    assert np.linalg.norm(ca_strand[-1] - ca_strand[0]) > 2 * np.linalg.norm(ca_helix[-1] - ca_helix[0])
