"""Secondary structure of the files we write: mkdssp (DSSP 4, what people run) reads our PDB and
ModelCIF files and assigns a native's own backbone, written through our writer, the DSSP string
of the deposited file; and the plots' own three-state assignment agrees with mkdssp.

mkdssp is Debian's `dssp` package, which .ci/run installs: under CI (CI=true) a missing mkdssp
fails these tests instead of skipping them. The pure-python pydssp was not used: it imports
torch unconditionally, which CI installs only from a local CPU wheel.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

from helpers import FIXTURES
from nanoaf2_jax.data.structures import parse_structure
from nanoaf2_jax.evaluation.dssp import secondary_structure
from nanoaf2_jax.inference.structure_io import write_backbone

# mkdssp 4.2.2 on the deposited files (eight states; blank = loop, written '-').
DEPOSITED_DSSP = {
    "1CRN": "-EE-SSHHHHHHHHHHHTTT--HHHHHHHHS-EE-SSS---GGG--",
    "1UBQ": "-EEEEEETTS-EEEEE--TTSBHHHHHHHHHHHH---GGGEEEEETTEEPPTTSBTGGGTPPTT-EEEEEE--S--",
}


def three_state(dssp: str) -> str:
    return "".join("H" if s in "HGI" else "E" if s in "EB" else "C" for s in dssp)


def mkdssp():
    path = shutil.which("mkdssp")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mkdssp is missing: .ci/run installs Debian's dssp package")
        pytest.skip("mkdssp not installed (apt-get install dssp)")
    return path


def run_mkdssp(path, tmp_path) -> str:
    out = tmp_path / (path.name + ".dssp")
    proc = subprocess.run([mkdssp(), "--output-format", "dssp", str(path), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  #  RESIDUE"))
    return "".join((line[16] if line[16] != " " else "-") for line in lines[start + 1:]
                   if line[13] != "!")


def differences_at_element_ends(ref: str, got: str, reach=2) -> list[int]:
    """Positions where the strings differ that are not within `reach` residues of an element
    boundary of ref (where DSSP's assignment is marginal)."""
    bounds = [i for i in range(1, len(ref)) if ref[i] != ref[i - 1]]
    return [i for i, (a, b) in enumerate(zip(ref, got))
            if a != b and not any(-reach - 1 <= i - k <= reach for k in bounds)]


@pytest.mark.parametrize("name", sorted(DEPOSITED_DSSP))
def test_mkdssp_on_deposited_fixture(name, tmp_path):
    assert run_mkdssp(FIXTURES / f"{name}.pdb", tmp_path) == DEPOSITED_DSSP[name]


@pytest.mark.parametrize("name", sorted(DEPOSITED_DSSP))
def test_mkdssp_reads_our_files_and_finds_the_native_secondary_structure(name, tmp_path):
    """Before issue 22 mkdssp refused our PDB files (no HEADER) and had no O to find H-bonds.
    Measured: 1UBQ differs in one residue (T -> G at a 3-10 helix end), 1CRN in its marginal
    3-residue 3-10 helix (GGG -> TTS), i.e. 3 residues in three states."""
    protein = parse_structure(FIXTURES / f"{name}.pdb")
    ref = three_state(DEPOSITED_DSSP[name])
    for fmt in ("pdb", "cif"):
        path = tmp_path / f"{name}_written.{fmt}"
        write_backbone(path, protein.sequence, protein.coords_N, protein.coords_CA, protein.coords_C,
                       plddt=np.full(protein.length, 0.9))
        got = three_state(run_mkdssp(path, tmp_path))
        assert len(got) == len(ref)
        assert sum(a != b for a, b in zip(ref, got)) <= 3, (fmt, ref, got)
        assert differences_at_element_ends(ref, got) == [], (fmt, ref, got)
        assert got.count("H") >= 10 and got.count("E") >= 4


@pytest.mark.parametrize("name", sorted(DEPOSITED_DSSP))
def test_own_assignment_agrees_with_mkdssp(name):
    """The plots' numpy assignment (rebuilt O): measured 93% (1CRN) and 99% (1UBQ) of residues
    as mkdssp in three states; 97.5% over the 19 structures of shared/data that mkdssp reads."""
    protein = parse_structure(FIXTURES / f"{name}.pdb")
    ref = three_state(DEPOSITED_DSSP[name])
    got = secondary_structure(protein.coords_N, protein.coords_CA, protein.coords_C,
                              sequence=protein.sequence)
    assert len(got) == len(ref)
    assert np.mean([a == b for a, b in zip(ref, got)]) >= 0.92, (ref, got)
    assert differences_at_element_ends(ref, got) == [], (ref, got)


def test_own_assignment_of_a_random_coil_is_not_structured():
    """A random walk of CA with no hydrogen-bond pattern is mostly coil."""
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(40, 3))
    ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True), axis=0)
    n = ca + rng.normal(scale=0.8, size=ca.shape)
    c = ca + rng.normal(scale=0.8, size=ca.shape)
    assert secondary_structure(n, ca, c).count("C") >= 30
