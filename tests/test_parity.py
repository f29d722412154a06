"""The parity checker, run as users run it, on copies of the golden fixtures.

Each run is a subprocess so float32 and float64 (jax_enable_x64) never share a process.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = [FIXTURES / "small.npz", FIXTURES / "small_single.npz", FIXTURES / "other_config.npz"]


def run_checker(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "nanoaf2_jax.parity", *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_golden_fixtures_pass_with_every_key_checked(x64):
    rc, out = run_checker(*GOLDEN, *(["--x64"] if x64 else []))
    assert rc == 0, out
    for path in GOLDEN:
        with np.load(path) as z:
            from nanoaf2_jax.reference.parity import is_output_key

            n_out = sum(is_output_key(k) and np.issubdtype(z[k].dtype, np.floating) for k in z.files)
        assert f"checked {n_out} of {n_out} output float keys" in out, out
    assert " 0 failed" in out and "FAIL" not in out


def _corrupted_copy(tmp_path, mutate):
    """A trimmed copy (no activations, optimiser steps or sampling, to keep it quick) with
    one change."""
    keep = ("config", "param/", "batch/", "noise/", "loss/", "geom/")
    with np.load(GOLDEN[1]) as z:
        data = {k: z[k] for k in z.files if k.removeprefix("f64/").startswith(keep)}
    mutate(data)
    path = tmp_path / "corrupted.npz"
    np.savez(path, **data)
    return path


def test_checker_fails_on_a_wrong_reference_number(tmp_path):
    def mutate(d):
        d["loss/fape_loss"] = d["loss/fape_loss"] + np.float32(1e-2)
        d["f64/loss/fape_loss"] = d["f64/loss/fape_loss"] + 1e-2

    rc, out = run_checker(_corrupted_copy(tmp_path, mutate))
    assert rc == 1
    assert "FAIL loss/fape_loss" in out


def test_checker_fails_on_an_output_it_cannot_compute(tmp_path):
    def mutate(d):
        d["loss/unknown_term"] = np.float32(1.0)
        d["f64/loss/unknown_term"] = np.float64(1.0)

    rc, out = run_checker(_corrupted_copy(tmp_path, mutate))
    assert rc == 1
    assert "NOT CHECKED" in out and "loss/unknown_term" in out


def test_checker_reports_unreadable_fixture(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz")
    rc, out = run_checker(bad)
    assert rc == 1
    assert "bad.npz" in out
