"""The sequence-identity prior on confidence (inference/identity_prior.py): the isotonic fit,
the cap, the fitting command and its errors. Its use by sample.py is in test_sample.py."""

import json

import numpy as np
import pytest

from nanoaf2_jax.cli import fit_identity_prior
from nanoaf2_jax.inference.identity_prior import (PRIOR_FILE, IdentityPrior, cap_plddt, fit_prior,
                                                  isotonic_fit, load_prior, prior_for, save_prior)
from nanoaf2_jax.training.training_sequences import write_sequences

from helpers import run_main


def test_isotonic_fit_keeps_monotone_data_and_pools_violators():
    x, y = isotonic_fit([0.1, 0.5, 0.9], [0.2, 0.4, 0.9])
    np.testing.assert_allclose(x, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(y, [0.2, 0.4, 0.9])
    # A dip is pooled with its neighbour into their mean (least squares under monotonicity).
    x, y = isotonic_fit([0.9, 0.1, 0.2, 0.3], [0.95, 0.3, 0.5, 0.3])
    np.testing.assert_allclose(x, [0.1, 0.25, 0.9])
    np.testing.assert_allclose(y, [0.3, 0.4, 0.95])
    # Equal identities become one knot at their mean value.
    x, y = isotonic_fit([0.2, 0.2, 1.0], [0.2, 0.4, 1.0])
    np.testing.assert_allclose(x, [0.2, 1.0])
    np.testing.assert_allclose(y, [0.3, 1.0])


def test_isotonic_fit_is_the_least_squares_monotone_fit():
    """Against brute force: no non-decreasing sequence on a grid fits better."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(6))
    y = rng.random(6)
    _, fy = isotonic_fit(x, y)
    fitted = np.interp(x, *isotonic_fit(x, y))
    assert np.all(np.diff(fy) >= 0)
    best = np.sum((fitted - y) ** 2)
    grid = np.linspace(0, 1, 11)
    for _ in range(2000):
        cand = np.sort(rng.choice(grid, 6))
        assert np.sum((cand - y) ** 2) >= best - 1e-12


def test_prior_interpolates_and_is_flat_beyond_its_knots():
    prior = IdentityPrior((0.2, 1.0), (0.3, 0.9))
    assert prior.expected(0.0) == pytest.approx(0.3)
    assert prior.expected(0.6) == pytest.approx(0.6)
    assert prior.expected(1.0) == pytest.approx(0.9)


@pytest.mark.parametrize("identity, lddt, fragment", [
    ((0.5, 0.2), (0.1, 0.2), "increase"),
    ((0.2, 0.5), (0.4, 0.2), "never decrease"),
    ((0.2, 1.5), (0.1, 0.2), "[0, 1]"),
    ((), (), "non-empty"),
])
def test_malformed_priors_are_refused(identity, lddt, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        IdentityPrior(identity, lddt)


def test_cap_lowers_only_confident_samples_and_keeps_the_residue_order():
    plddt = np.array([[0.9, 0.95, 0.8, 1.0], [0.2, 0.3, 0.25, 0.25]])
    capped = cap_plddt(plddt, 0.4)
    assert capped[0].mean() == pytest.approx(0.4)
    np.testing.assert_allclose(capped[0] / plddt[0], capped[0, 0] / plddt[0, 0])  # one factor
    np.testing.assert_array_equal(capped[1], plddt[1])  # already below the prior: unchanged
    np.testing.assert_array_equal(cap_plddt(plddt, 1.0), plddt)


TRAINED = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVV"  # 70
UNLIKE = ["WWPCHGWPCHGDDYWPCHGRRNWPCHG", "GSGSWYWYPPNPNPCYCYHGHG"]


def _evaluation(path, checkpoint, proteins):
    path.mkdir(parents=True)
    (path / "evaluation.json").write_text(json.dumps({
        "checkpoint": str(checkpoint),
        "proteins": [{"protein": f"p{i}", "sequence": seq, "mean_residue_lddt": 100 * lddt}
                     for i, (seq, lddt) in enumerate(proteins)]}))
    return path


def test_fit_command_writes_the_prior_beside_the_training_sequences(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_sequences(run, [("a", TRAINED)])
    a = _evaluation(tmp_path / "train", run, [(TRAINED, 0.97), (TRAINED, 0.99)])
    # Half of the training chain: 100% identical over its own length, 50% over the longer.
    b = _evaluation(tmp_path / "unseen", run, [(UNLIKE[0], 0.30), (UNLIKE[1], 0.25),
                                               (TRAINED[:35], 0.5)])
    assert fit_identity_prior.main([str(a), str(b / "evaluation.json")]) == 0
    prior = load_prior(run / PRIOR_FILE)
    assert prior.fitted_on["proteins"] == 5
    assert prior.identity[-2:] == pytest.approx((0.5, 1.0))
    assert prior.expected(1.0) == pytest.approx(0.98)
    assert prior.expected(0.5) == pytest.approx(0.5)
    assert prior.expected(0.0) == pytest.approx(0.275)  # the two unlike ones, pooled
    # The commands find it from any form of the checkpoint path; off and a path override it.
    assert prior_for(run, None) == prior
    assert prior_for(run / "checkpoints", None) == prior
    assert prior_for(run, "off") is None
    other = save_prior(fit_prior([0.0], [0.1]), tmp_path / "other.json")
    assert prior_for(run, str(other)).expected(1.0) == pytest.approx(0.1)
    assert "wrote" in capsys.readouterr().err


def test_fit_command_errors_name_the_problem(tmp_path, capsys):
    def fit(*argv):
        rc, _, err = run_main(fit_identity_prior.main, capsys, *argv)
        assert rc == 1 and err.startswith("error: "), err
        return err

    run = tmp_path / "run"
    run.mkdir()
    a = _evaluation(tmp_path / "a", run, [(TRAINED, 0.9)])
    assert "training_sequences.fasta" in fit(a)  # the run has no training sequences
    b = _evaluation(tmp_path / "b", tmp_path / "elsewhere", [(TRAINED, 0.3)])
    assert "different checkpoints" in fit(a, b, "--out", tmp_path / "p.json")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "evaluation.json").write_text(json.dumps(
        {"checkpoint": "x", "proteins": [{"protein": "q", "mean_residue_lddt": 30.0}]}))
    err = fit(tmp_path / "c", "--out", tmp_path / "p.json")
    assert "c/evaluation.json" in err and "sequence" in err
    assert "not an evaluation.json" in fit(tmp_path / "nowhere", "--out", tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        load_prior(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        prior_for(run, str(tmp_path / "nope.json"))
