"""The parity checker, run as users run it, on copies of the golden fixtures.

Each run is a subprocess so float32 and float64 (jax_enable_x64) never share a process. The
full-size fixture is in test_parity_full_size.py and the float64 run of these in
test_parity_x64.py, so that the two test workers (whole files each) share the work: each golden
run is ~2 min of one worker.
"""

import numpy as np

from helpers import GOLDEN, assert_every_key_checked_and_passed, run_checker


def test_golden_fixtures_pass_with_every_key_checked_float32():
    rc, out = run_checker(*GOLDEN)
    assert rc == 0, out
    assert_every_key_checked_and_passed(GOLDEN, out)


def _corrupted_copy(tmp_path, mutate, extra=()):
    """A trimmed copy (no activations, optimiser steps or sampling, to keep it quick) with
    one change."""
    keep = ("config", "param/", "batch/", "noise/", "loss/", "geom/", *extra)
    with np.load(GOLDEN[1]) as z:
        data = {k: z[k] for k in z.files if k.removeprefix("f64/").startswith(keep)}
    mutate(data)
    path = tmp_path / "corrupted.npz"
    np.savez(path, **data)
    return path


def test_checker_fails_on_a_wrong_reference_number_and_on_an_output_it_cannot_compute(tmp_path):
    """Two planted faults in one copy (one checker run, one compilation): a recorded loss off by
    1e-2 must FAIL, and an output key the port has no computation for must be reported as NOT
    CHECKED (and fail the run), never silently skipped."""
    def mutate(d):
        d["loss/fape_loss"] = d["loss/fape_loss"] + np.float32(1e-2)
        d["f64/loss/fape_loss"] = d["f64/loss/fape_loss"] + 1e-2
        d["loss/unknown_term"] = np.float32(1.0)
        d["f64/loss/unknown_term"] = np.float64(1.0)

    rc, out = run_checker(_corrupted_copy(tmp_path, mutate))
    assert rc == 1
    assert "FAIL loss/fape_loss" in out
    assert "NOT CHECKED" in out and "loss/unknown_term" in out
    assert "FAIL loss/trans_loss" not in out  # the unplanted keys still pass


def test_checker_reports_unreadable_fixture(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz")
    rc, out = run_checker(bad)
    assert rc == 1
    assert "bad.npz" in out


def test_nonsmooth_rule_passes_an_isolated_flip_and_still_fails_a_1e_3_scale_error(tmp_path):
    """One copy, two planted differences in the recorded gradients (float32 and float64 moved
    alike, so the port's unchanged result is off as a port with that error would be):
    - a ReLU flip: one element of a tensor off by 20× the golden allowance's floor, the
      tensor as a whole fine; the golden rule fails it, the nonsmooth rule passes it;
    - a 1e-3 scale error of a whole tensor: both rules fail it."""
    flipped = "grad/pairformer_blocks.0.pair_transition.linear1.weight"
    scaled = "grad/pairformer_blocks.0.single_transition.linear2.weight"

    def mutate(d):
        for key in (flipped, scaled):
            truth = d[f"f64/{key}"].astype(np.float64)
            if key == flipped:
                delta = np.zeros_like(truth)
                delta.flat[7] = 20 * 1e-5 * max(1.0, np.abs(truth).max())
            else:
                delta = 1e-3 * truth
            d[f"f64/{key}"] = truth + delta
            d[key] = (d[key].astype(np.float64) + delta).astype(np.float32)

    path = _corrupted_copy(tmp_path, mutate, extra=("grad/",))
    rc, out = run_checker(path)
    assert rc == 1 and f"FAIL {flipped}" in out and f"FAIL {scaled}" in out, out
    rc, out = run_checker(path, "--rule", "nonsmooth")
    assert rc == 1 and f"FAIL {scaled}" in out, out
    assert f"FAIL {flipped}" not in out and f"nonsmooth {flipped}" in out, out
