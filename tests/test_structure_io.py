import os

import numpy as np
import pytest

from nanoaf2_jax.inference import structure_io
from nanoaf2_jax.geometry.residue_constants import UNK_IDX
from nanoaf2_jax.inference.structure_io import read_backbone, write_backbone

HEADER = ["nanoaf2-jax checkpoint=ckpt/step_1000 seed=7 steps=200", "sampler=euler"]


def synthetic_backbone(length=30, seed=0):
    """A helical CA trace with N and C placed roughly where a backbone puts them."""
    rng = np.random.default_rng(seed)
    i = np.arange(length)
    theta = np.deg2rad(100.0) * i
    ca = np.stack([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * i], axis=-1)
    ca = ca + rng.normal(scale=0.2, size=ca.shape) + np.array([123.4567, -56.789, 7.0])
    n = ca + rng.normal(scale=0.8, size=ca.shape)
    c = ca + rng.normal(scale=0.8, size=ca.shape)
    codes = rng.integers(0, 20, size=length)
    plddt = rng.uniform(0.0, 1.0, size=length)
    return codes, n, ca, c, plddt


@pytest.mark.parametrize("name", ["model.pdb", "model.cif", "model.mmcif"])
def test_round_trip(tmp_path, name):
    codes, n, ca, c, plddt = synthetic_backbone()
    path = tmp_path / name
    write_backbone(path, codes, n, ca, c, plddt=plddt, header_lines=HEADER)
    out = read_backbone(path)
    np.testing.assert_array_equal(out["sequence"], codes)
    for key, ref in (("coords_N", n), ("coords_CA", ca), ("coords_C", c)):
        np.testing.assert_allclose(out[key], ref, atol=1e-3, rtol=0)
    # O is written (rebuilt from N, CA, C) and reads back at the C=O length.
    assert np.all(np.abs(np.linalg.norm(out["coords_O"] - c, axis=-1) - 1.231) < 2e-3)
    np.testing.assert_allclose(out["bfactor"], 100.0 * plddt, atol=0.01, rtol=0)
    assert out["header_lines"] == HEADER
    assert os.listdir(tmp_path) == [name]


def test_file_layout(tmp_path):
    codes, n, ca, c, plddt = synthetic_backbone(length=4)
    pdb, cif = tmp_path / "m.pdb", tmp_path / "m.cif"
    write_backbone(pdb, codes, n, ca, c, plddt=plddt, header_lines=HEADER)
    write_backbone(cif, codes, n, ca, c, plddt=plddt, header_lines=HEADER)

    pdb_lines = pdb.read_text().splitlines()
    # mkdssp 4 (libcifpp) reads a file as PDB only if its first record is HEADER; CRYST1 is the
    # "no crystal" cell AlphaFold and ColabFold write, before the first ATOM.
    assert pdb_lines[0].startswith("HEADER    PREDICTED MODEL")
    assert pdb_lines[1].startswith("REMARK 250 nanoaf2-jax checkpoint=")
    cryst1 = [i for i, line in enumerate(pdb_lines) if line.startswith("CRYST1")]
    assert len(cryst1) == 1 and pdb_lines[cryst1[0]].startswith(
        "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1")
    atoms = [line for line in pdb_lines if line.startswith("ATOM")]
    assert cryst1[0] < pdb_lines.index(atoms[0])
    assert len(atoms) == 16
    assert [a[12:16].strip() for a in atoms[:4]] == ["N", "CA", "C", "O"]
    assert [a[76:78].strip() for a in atoms[:4]] == ["N", "C", "C", "O"]
    assert {a[21] for a in atoms} == {"A"}
    assert [int(a[22:26]) for a in atoms[::4]] == [1, 2, 3, 4]
    assert all(float(a[54:60]) == 1.0 for a in atoms)
    assert all(len(line) <= 80 for line in pdb_lines)

    text = cif.read_text()
    assert text.startswith("# nanoaf2-jax checkpoint=")
    gemmi = pytest.importorskip("gemmi")
    doc = gemmi.cif.read(str(cif))  # a strict CIF parse, not just gemmi's structure reader
    block = doc.sole_block()
    assert "checkpoint=ckpt/step_1000" in block.find_value("_ma_protocol_step.details")
    assert list(block.find_loop("_atom_site.label_atom_id"))[:4] == ["N", "CA", "C", "O"]
    assert list(block.find_loop("_atom_site.label_seq_id"))[::4] == ["1", "2", "3", "4"]
    assert set(block.find_loop("_atom_site.type_symbol")) == {"N", "C", "O"}


def test_unknown_residue_and_no_plddt(tmp_path):
    codes = np.array([0, UNK_IDX, 20, 19])
    _, n, ca, c, _ = synthetic_backbone(length=4)
    for name in ("u.pdb", "u.cif"):
        write_backbone(tmp_path / name, codes, n, ca, c)
        out = read_backbone(tmp_path / name)
        np.testing.assert_array_equal(out["sequence"], [0, UNK_IDX, UNK_IDX, 19])
        np.testing.assert_array_equal(out["bfactor"], np.zeros(4))
    assert " UNK A   2" in (tmp_path / "u.pdb").read_text()


def test_explicit_format_and_bad_extension(tmp_path):
    codes, n, ca, c, plddt = synthetic_backbone(length=5)
    write_backbone(tmp_path / "model.txt", codes, n, ca, c, plddt, fmt="cif")
    out = read_backbone(tmp_path / "model.txt", fmt="cif")
    np.testing.assert_allclose(out["coords_CA"], ca, atol=1e-3)
    with pytest.raises(ValueError, match="extension"):
        write_backbone(tmp_path / "model.xyz", codes, n, ca, c)
    with pytest.raises(ValueError, match="shape"):
        write_backbone(tmp_path / "bad.pdb", codes, n[:-1], ca, c)
    assert sorted(os.listdir(tmp_path)) == ["model.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    codes, n, ca, c, plddt = synthetic_backbone(length=6)
    path = tmp_path / "keep.pdb"
    write_backbone(path, codes, n, ca, c, plddt)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(structure_io.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_backbone(path, codes, n + 1.0, ca + 1.0, c + 1.0, plddt)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.pdb"]


def test_pdb_refuses_coordinates_it_cannot_hold(tmp_path):
    codes, n, ca, c, _ = synthetic_backbone(length=3)
    with pytest.raises(ValueError, match="mmCIF"):
        write_backbone(tmp_path / "far.pdb", codes, n, ca - 5000.0, c)
    assert os.listdir(tmp_path) == []


def test_plot_prediction(tmp_path):
    pytest.importorskip("matplotlib")
    from nanoaf2_jax.evaluation.plots import plot_prediction

    codes, n, ca, c, plddt = synthetic_backbone(length=40)
    pred = ca + np.random.default_rng(1).normal(scale=1.0, size=ca.shape)
    path = tmp_path / "pred.png"
    plot_prediction(path, pred, ca, plddt, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["pred.png"]
    # With backbones the secondary-structure tracks and the superposition are drawn too.
    plot_prediction(path, pred, ca, plddt, title="test", pred_backbone=(n, pred, c),
                    native_backbone=(n, ca, c), sequence=codes)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_prediction(path, pred, None, plddt, pred_backbone=(n, pred, c))  # no native


def test_modelcif_round_trip_with_plddt_as_quality_metrics(tmp_path):
    """The mmCIF output is ModelCIF: the modelcif reader gets back the sequence, the backbone,
    pLDDT per residue (ma_qa_metric_local) and its mean (ma_qa_metric_global), and the
    checkpoint/seed/steps in the protocol; gemmi still reads it as a structure."""
    import modelcif.reader
    import modelcif.qa_metric

    codes, n, ca, c, plddt = synthetic_backbone(length=5)
    codes = np.asarray(codes).copy()
    codes[2] = UNK_IDX
    path = tmp_path / "p.cif"
    write_backbone(path, codes, n, ca, c, plddt=plddt, header_lines=HEADER)
    with open(path) as f:
        (system,) = modelcif.reader.read(f)
    (entity,) = system.entities
    assert [comp.id for comp in entity.sequence][2] == "UNK"
    assert len(entity.sequence) == 5
    (group,) = system.model_groups
    (model,) = list(group)
    atoms = list(model.get_atoms())
    assert [a.atom_id for a in atoms[:4]] == ["N", "CA", "C", "O"]
    np.testing.assert_allclose([[a.x, a.y, a.z] for a in atoms[1::4]], ca, atol=1e-3)
    # B-factors stay pLDDT x 100 on every atom, O included.
    np.testing.assert_allclose([a.biso for a in atoms], np.repeat(100 * np.asarray(plddt), 4), atol=1e-3)
    local = [m for m in model.qa_metrics if isinstance(m, modelcif.qa_metric.Local)]
    glob = [m for m in model.qa_metrics if isinstance(m, modelcif.qa_metric.Global)]
    assert [m.residue.seq_id for m in local] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([m.value for m in local], 100 * np.asarray(plddt), atol=1e-3)
    assert glob and abs(glob[0].value - 100 * float(np.mean(plddt))) < 1e-3
    details = system.protocols[0].steps[0].details
    assert "checkpoint=ckpt/step_1000" in details
    back = read_backbone(path)  # gemmi
    np.testing.assert_allclose(back["coords_CA"], ca, atol=1e-3)
    np.testing.assert_allclose(back["coords_O"], [[a.x, a.y, a.z] for a in atoms[3::4]], atol=1e-3)
    np.testing.assert_allclose(back["bfactor"], 100 * np.asarray(plddt), atol=1e-3)
