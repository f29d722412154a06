"""Fold-level scores: Q3 from P-SEA secondary structure, the precision of the top L/5
long-range contacts read from a predicted structure or a predicted contact map, and the radius
of gyration against the native's."""

from pathlib import Path

import numpy as np
import pytest

from nanoaf2_jax.data.structures import parse_structure
from nanoaf2_jax.evaluation.baselines import backbone_from_torsions, ideal_helix
from nanoaf2_jax.evaluation.contacts import (long_range_contacts, top_long_range_precision,
                                             top_long_range_precision_of_map)
from nanoaf2_jax.evaluation.metrics import radius_of_gyration
from nanoaf2_jax.evaluation.scoring import best_and_mean, score_prediction
from nanoaf2_jax.evaluation.secondary_structure import psea, q3

UBIQUITIN = Path(__file__).parent / "fixtures" / "1UBQ_backbone.pdb"  # N, CA, C of PDB 1UBQ


@pytest.fixture(scope="module")
def ubiquitin():
    return parse_structure(UBIQUITIN)


def _strand(length):
    return backbone_from_torsions(length, -120.0, 130.0)[1]


def test_q3_of_a_helix_against_itself_is_one_and_against_a_strand_low():
    helix = ideal_helix(40)[1]
    assert q3(helix, helix) == 1.0
    assert q3(helix, _strand(40)) < 0.15  # only the coil ends agree
    assert "".join(psea(helix)).strip("c") == "a" * 38
    assert "".join(psea(_strand(40))).count("b") >= 37


@pytest.mark.parametrize("gap", [None, (30, 35)])
def test_psea_agrees_with_biotite_on_ubiquitin(ubiquitin, gap):
    pdb = pytest.importorskip("biotite.structure.io.pdb")
    structure = pytest.importorskip("biotite.structure")
    atoms = pdb.PDBFile.read(str(UBIQUITIN)).get_structure(model=1)
    keep = np.ones(ubiquitin.length, bool)
    if gap is not None:  # a chain break: no distance or angle may span it
        keep &= ~np.isin(ubiquitin.residue_index, np.arange(*gap))
        atoms = atoms[~np.isin(atoms.res_id, np.arange(*gap))]
    expected = structure.annotate_sse(atoms)
    ours = psea(ubiquitin.coords_CA[keep], ubiquitin.residue_index[keep])
    np.testing.assert_array_equal(ours, expected)
    # Ubiquitin has both: a 12-residue helix and a five-stranded sheet (the gap cuts the helix).
    assert (ours == "a").sum() >= (10 if gap is None else 5) and (ours == "b").sum() >= 20


def test_q3_of_ubiquitin_against_an_ideal_helix_is_its_non_helix_share_at_most(ubiquitin):
    native_states = psea(ubiquitin.coords_CA, ubiquitin.residue_index)
    score = q3(ideal_helix(ubiquitin.length)[1], ubiquitin.coords_CA, ubiquitin.residue_index)
    assert score <= np.mean(native_states == "a") + np.mean(native_states == "c") < 0.7


def test_long_range_contact_precision_of_the_native_is_one_and_of_a_helix_or_shuffle_low(ubiquitin):
    ca = ubiquitin.coords_CA
    assert long_range_contacts(ca) > ubiquitin.length // 5
    assert top_long_range_precision(ca, ca) == 1.0
    # A noisy copy keeps its contacts: ranking by predicted distance is what is scored.
    noisy = ca + np.random.default_rng(0).normal(0, 0.5, ca.shape)
    assert top_long_range_precision(noisy, ca) >= 0.9
    assert top_long_range_precision(ideal_helix(ubiquitin.length)[1], ca) < 0.3
    shuffled = ca[np.random.default_rng(1).permutation(ubiquitin.length)]
    assert top_long_range_precision(shuffled, ca) < 0.3


def test_long_range_contact_precision_is_nan_without_native_long_range_contacts():
    helix = ideal_helix(60)[1]
    assert long_range_contacts(helix) == 0
    assert np.isnan(top_long_range_precision(helix, helix))


def test_radius_of_gyration_ratio_is_one_for_the_native_and_follows_a_scaling(ubiquitin):
    ca = ubiquitin.coords_CA
    rotation = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    moved = ca @ rotation.T + np.array([5.0, -3.0, 40.0])
    assert score_prediction(moved, ca)["rg_ratio"] == pytest.approx(1.0, abs=1e-9)
    # A blob of the native shrunk by a third around its centroid: what a crop-trained model gives.
    centroid = ca.mean(axis=0)
    assert score_prediction(centroid + 0.64 * (ca - centroid), ca)["rg_ratio"] == pytest.approx(0.64)
    # Ubiquitin (76 residues, 11.7 Å) against the spec of a compact globule, 2.2 N^0.38 Å.
    assert radius_of_gyration(ca) == pytest.approx(2.2 * 76 ** 0.38, rel=0.15)
    # The best of several samples is the one whose size is nearest the native's, on a log scale.
    assert best_and_mean([{"rg_ratio": 0.5}, {"rg_ratio": 1.8}, {"rg_ratio": 0.9}])["rg_ratio_best"] == 0.9


def test_contact_map_precision_of_the_native_map_is_one_and_of_a_shuffled_map_low(ubiquitin):
    ca = ubiquitin.coords_CA
    distances = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    native_map = (distances < 8.0).astype(float)
    assert top_long_range_precision_of_map(native_map, ca) == 1.0
    # Ranking by predicted probability is what is scored: a map that only orders pairs by
    # closeness is as good as the native's, and the same ranking as the structure's own.
    assert top_long_range_precision_of_map(1.0 / distances.clip(1.0), ca) == top_long_range_precision(ca, ca)
    perm = np.random.default_rng(3).permutation(ubiquitin.length)
    assert top_long_range_precision_of_map(native_map[perm][:, perm], ca) < 0.3
    with pytest.raises(ValueError, match="L = 76"):
        top_long_range_precision_of_map(native_map[:10, :10], ca)
