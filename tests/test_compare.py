"""The side-by-side comparison with the PyTorch reference (python -m nanoaf2_jax.compare).

Needs torch and a checkout of the reference's alphafold2/ folder, found through the environment
variable NANOAF2_REFERENCE_DIR (e.g. a `git archive` of github.com/sungsoo-ahn/nano-protein-ais
unpacked outside this repository); the tests that need them are skipped otherwise.
"""

import importlib.util
import os
from pathlib import Path

import pytest

from nanoaf2_jax.cli import compare as compare_cli
from nanoaf2_jax.reference import compare, torch_reference

REFERENCE_DIR = os.environ.get("NANOAF2_REFERENCE_DIR", "")
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_REFERENCE = bool(REFERENCE_DIR) and (Path(REFERENCE_DIR) / "model.py").is_file()
needs_reference = pytest.mark.skipif(
    not (HAVE_TORCH and HAVE_REFERENCE),
    reason="needs torch and NANOAF2_REFERENCE_DIR pointing at the reference's alphafold2/ folder",
)


def test_missing_reference_dir_exits_2_with_a_message(tmp_path, capsys):
    rc = compare_cli.main(["--reference-dir", str(tmp_path / "nowhere"), "--skip-timing"])
    assert rc == compare_cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    # Without torch the tool says that first; with torch it names the missing model.py.
    assert ("model.py" in err) or ("torch" in err)


@pytest.mark.skipif(HAVE_TORCH, reason="torch is installed")
def test_missing_torch_exits_2_with_a_message(tmp_path, capsys):
    (tmp_path / "model.py").write_text("class AlphaFold2: pass\n")
    assert compare_cli.main(["--reference-dir", str(tmp_path), "--skip-timing"]) == compare_cli.EXIT_UNAVAILABLE
    assert "torch" in capsys.readouterr().err


@needs_reference
def test_a_folder_without_the_reference_model_is_refused(tmp_path, capsys):
    (tmp_path / "model.py").write_text("x = 1\n")
    assert compare_cli.main(["--reference-dir", str(tmp_path), "--skip-timing"]) == compare_cli.EXIT_UNAVAILABLE
    assert "AlphaFold2" in capsys.readouterr().err


@needs_reference
def test_scripted_draws_replace_the_reference_randomness():
    import numpy as np

    ref = torch_reference.load_reference(REFERENCE_DIR)
    draws = [np.full((2,), 0.25, np.float32), np.ones((2, 3), np.float32)]
    with torch_reference.scripted_draws(ref, draws):
        assert ref.torch.rand(2).tolist() == [0.25, 0.25]
        assert ref.torch.randn(2, 3).sum().item() == 6.0
    with pytest.raises(RuntimeError, match="used 0 of 1"):
        with torch_reference.scripted_draws(ref, draws[:1]):
            pass


@needs_reference
@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_loss_gradients_and_sampling_match_the_reference(x64):
    """Small config, every weight random and non-zero, identical draws: the numbers agree
    (float64: to rounding, which shows the same function is computed)."""
    import jax
    import torch

    from nanoaf2_jax.model.model_config import ModelConfig

    ref = torch_reference.load_reference(REFERENCE_DIR)
    config = ModelConfig(**compare.SMALL_CONFIG)
    old_dtype = torch.get_default_dtype()
    with jax.enable_x64(x64):
        if x64:
            torch.set_default_dtype(torch.float64)
        try:
            diffs = compare.compare_numbers(ref, config, lengths=(12, 9), num_steps=10, x64=x64, log=lambda *_: None)
        finally:
            torch.set_default_dtype(old_dtype)
    assert diffs and all(d.ok for d in diffs), [d.line() for d in diffs if not d.ok]
    by_name = {d.what: d for d in diffs}
    assert by_name["loss: loss"].relative < (1e-12 if x64 else 1e-5)
    if x64:
        assert all(d.relative < 1e-9 for d in diffs)


@needs_reference
def test_timing_runs_and_prints_ratio_lines(capsys):
    rc = compare_cli.main([
        "--reference-dir", REFERENCE_DIR, "--small", "--skip-numbers", "--lengths", "16",
        "--repeats", "1", "--num-steps", "3", "--skip-epoch",
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert "train step L=16: reference" in out and "speed-up" in out
    assert "sampling 3 steps L=16: reference" in out
    assert "8 samples L=16" in out
