"""Shared test helpers: synthetic backbones, structure files and train.py subprocess runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from nanoaf2_jax.data.structures import Protein
from nanoaf2_jax.inference.structure_io import write_backbone

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
# The golden fixtures small enough to check in every test run (the full-size one has its own file).
GOLDEN = [FIXTURES / "small.npz", FIXTURES / "small_single.npz", FIXTURES / "other_config.npz"]
SCHEDULE_STEPS = 200  # every run below: proteins × epochs = 200, so they share one compilation




def helix(n: int, seed: int = 0, offset=(8.0, -4.0, 3.0), name="HLX") -> Protein:
    """An ideal-ish α-helix backbone, away from the origin as real coordinates are."""
    i = np.arange(-1, n + 1)
    theta = np.deg2rad(100.0) * i
    ca = np.stack([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * i], -1) + np.asarray(offset)

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    n_atoms = ca[1:-1] + 1.458 * unit(ca[:-2] - ca[1:-1])
    c_atoms = ca[1:-1] + 1.523 * unit(ca[2:] - ca[1:-1])
    seq = np.random.default_rng(seed).integers(0, 20, n).astype(np.int32)
    f32 = np.float32
    return Protein(seq, n_atoms.astype(f32), ca[1:-1].astype(f32), c_atoms.astype(f32),
                   np.arange(1, n + 1, dtype=np.int32), name, "A")


def write_pdb(path: Path, protein: Protein) -> Path:
    write_backbone(path, protein.sequence, protein.coords_N, protein.coords_CA, protein.coords_C)
    return path


def two_helices(directory: Path) -> Path:
    """The kill/resume data set: two proteins, so the shuffled epoch order matters."""
    directory.mkdir(parents=True, exist_ok=True)
    write_pdb(directory / "HLXA.pdb", helix(22, seed=1, offset=(6.0, 2.0, -5.0)))
    write_pdb(directory / "HLXB.pdb", helix(26, seed=2, offset=(-3.0, 7.0, 4.0)))
    return directory


def train_command(*args):
    return [sys.executable, str(REPO / "train.py"), "--preset", "tiny", "--no-progress", *args]


def subprocess_env(cache):
    """The commands' environment: CPU, and the test run's compilation cache (conftest.py)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["NANOAF2_JAX_COMPILATION_CACHE"] = str(cache) if cache is not None else "off"
    return env


def run_train(cache, cwd, *args, check=True):
    result = subprocess.run(train_command(*args), cwd=cwd, env=subprocess_env(cache),
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_faulty(cache, cwd, fault, *args):
    """train.py with a planted fault (tests/fault_injection.py); never checked."""
    command = [sys.executable, str(Path(__file__).parent / "fault_injection.py"), fault,
               "--preset", "tiny", "--no-progress", *args]
    return subprocess.run(command, cwd=cwd, env=subprocess_env(cache), capture_output=True,
                          text=True, timeout=600)


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def run_main(main, capsys, *argv):
    """A CLI's main(argv) in this process (sharing the jit cache): (rc, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------------------------------------
# The parity checker as a user runs it (tests/test_parity*.py)
# ---------------------------------------------------------------------------------------------


def run_checker(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "nanoaf2_jax.parity", *map(str, args)],
        # ~90 s quiet for the three golden fixtures; on a shared, loaded machine 6x that was seen.
        capture_output=True, text=True, timeout=1800,
    )
    return proc.returncode, proc.stdout + proc.stderr


def assert_every_key_checked_and_passed(paths, out):
    for path in paths:
        with np.load(path) as z:
            from nanoaf2_jax.reference.parity import is_output_key

            n_out = sum(is_output_key(k) and np.issubdtype(z[k].dtype, np.floating) for k in z.files)
        assert f"checked {n_out} of {n_out} output float keys" in out, out
    assert " 0 failed" in out and "FAIL" not in out
