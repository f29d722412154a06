"""Evaluation on structures made by the test: table, JSON and plots, and the scores themselves."""

import json

import jax
import numpy as np
import pytest

from nanoaf2_jax.cli import evaluate
from nanoaf2_jax.evaluation import scoring
from nanoaf2_jax.model.model_config import MODEL_PRESETS
from nanoaf2_jax.model.convert import params_to_state_dict, save_state_dict, template_params
from nanoaf2_jax.geometry.residue_constants import encode_sequence
from nanoaf2_jax.inference.structure_io import write_backbone
from nanoaf2_jax.training.training_sequences import write_sequences
from helpers import run_main

TINY = MODEL_PRESETS["tiny"]  # what `--preset tiny` loads a bare state_dict as


def random_params(config, seed=0):
    """Random non-zero weights for every tensor, without running the model (fast)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (0.2 * rng.standard_normal(x.shape)).astype(np.float32), template_params(config))


def helix_backbone(length, seed=0):
    """An alpha-helix-like CA trace (3.8 Å steps) with N and C placed near each CA."""
    rng = np.random.default_rng(seed)
    i = np.arange(length)
    theta = np.deg2rad(100.0) * i
    ca = np.stack([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * i], axis=-1)
    ca += rng.normal(scale=0.1, size=ca.shape)
    n = ca + np.array([-0.5, 1.2, -0.6])
    c = ca + np.array([1.4, 0.3, 0.5])
    return n, ca, c


def write_native(path, sequence, seed=0):
    n, ca, c = helix_backbone(len(sequence), seed)
    write_backbone(path, encode_sequence(sequence), n, ca, c)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    save_state_dict(params_to_state_dict(random_params(TINY)), path)
    return path


def run_eval(capsys, *argv):
    return run_main(evaluate.main, capsys, *argv)


def test_scores_of_the_native_itself_are_perfect():
    _, ca, _ = helix_backbone(30)
    rotated = ca @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]).T + 5.0
    s = scoring.score_prediction(rotated, ca)
    assert s["ca_rmsd"] == pytest.approx(0, abs=1e-6)
    assert s["tm_score"] == pytest.approx(1, abs=1e-6)
    assert s["lddt"] == pytest.approx(1, abs=1e-9)
    both = scoring.best_and_mean([s, {"ca_rmsd": 2.0, "tm_score": 0.5, "lddt": 0.25}])
    assert both["ca_rmsd_best"] == pytest.approx(0, abs=1e-6) and both["ca_rmsd_mean"] == pytest.approx(1)
    assert both["tm_score_best"] == pytest.approx(1) and both["lddt_mean"] == pytest.approx(0.625)


def test_evaluate_writes_table_json_and_plots(tmp_path, ckpt, capsys):
    data = tmp_path / "natives"
    data.mkdir()
    write_native(data / "helixA.pdb", "MKTAYIAKQRQI", seed=1)
    write_native(data / "helixB.cif", "GSHMLEDPVAAL", seed=2)
    out = tmp_path / "eval"
    # The run the checkpoint came from trained on helixA's sequence (and another).
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ckpt.name).write_bytes(ckpt.read_bytes())
    ckpt = run_dir / ckpt.name
    write_sequences(run_dir, [("trainA", "MKTAYIAKQRQI"), ("trainB", "WWWWPPPPCCCC")])
    rc, stdout, stderr = run_eval(capsys, "--checkpoint", ckpt, "--preset", "tiny",
                                  "--data-dir", data, "--num-samples", 2, "--steps", 4,
                                  "--out", out)
    assert rc == 0, stderr
    assert "[2/2] helixB" in stderr
    names = sorted(p.name for p in out.iterdir())
    assert {"evaluation.md", "evaluation.json", "calibration.png", "helixA.png", "helixB.png"} <= set(names)
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([n for n in names if n.endswith(".pdb")]) == 2

    md = (out / "evaluation.md").read_text()
    header = ("| protein | residues | CA-RMSD best (Å) | CA-RMSD mean (Å) | TM-score best | "
              "TM-score mean | lDDT best | lDDT mean | N-CA-C RMSD best (Å) | N-CA-C RMSD mean (Å) | "
              "frame rotation error mean (°) | C-N within 0.1 Å mean | mean pLDDT |")
    assert header in md and header in stdout
    rows = [line for line in md.splitlines() if line.startswith("| helix") or "**mean**" in line]
    assert len(rows) == 3 and rows[0].startswith("| helixA | 12 |")

    report = json.loads((out / "evaluation.json").read_text())
    assert report["num_samples"] == 2 and report["steps"] == 4
    proteins = {p["protein"]: p for p in report["proteins"]}
    assert set(proteins) == {"helixA", "helixB"}
    for p in proteins.values():
        assert p["residues"] == 12 and len(p["samples"]) == 2
        rmsds = [s["ca_rmsd"] for s in p["samples"]]
        assert p["ca_rmsd_best"] == min(rmsds) and p["ca_rmsd_mean"] == pytest.approx(np.mean(rmsds))
        assert 0 < p["tm_score_best"] <= 1 and 0 <= p["lddt_best"] <= 1
        assert 0 <= p["mean_plddt"] <= 100
        # The whole backbone is scored, per sample and best/mean.
        for s in p["samples"]:
            assert s["backbone_rmsd"] >= 0 and 0 <= s["rotation_error_deg"] <= 180
            assert 0 <= s["c_n_within_0.1"] <= 1 and s["c_n_mean"] > 0
        assert p["backbone_rmsd_best"] == min(s["backbone_rmsd"] for s in p["samples"])
        # Two samples: each one's per-residue agreement with the other, on the 0-100 scale.
        for s in p["samples"]:
            scored = [v for v in s["agreement_per_residue"] if v is not None]  # None: no neighbour
            assert len(s["agreement_per_residue"]) == 12 and scored
            assert all(0 <= v <= 100 for v in scored)
        assert (out / p["plot"]).read_bytes()[:4] == b"\x89PNG"
        assert p["file"] == f"{p['protein']}_sample{p['best_sample']}.pdb"
    assert f"| helixA | 12 | {proteins['helixA']['ca_rmsd_best']:.2f} |" in md
    assert -1 <= report["agreement_lddt_pearson_r"] <= 1 and "agreement" in md

    # Fold-level scores per sample, best and mean, and the helix baseline per protein.
    for p in proteins.values():
        for s in p["samples"]:
            assert 0 <= s["q3"] <= 1 and s["long_range_precision"] is None  # 12 residues: no contact (NaN)
        assert p["q3_best"] == max(s["q3"] for s in p["samples"])
        assert p["helix"]["q3"] > 0.5 and 0 < p["helix"]["tm_score"] <= 1  # the natives are helices
        assert p["padded_to"] == 32
    # Both 12-residue proteins share one bucket, so one compilation.
    assert report["sampler_compilations"] == 1 and "1 compilation(s) of the sampler" in stderr
    (bin_row, all_row) = report["by_length"]
    assert bin_row["bin"] == "<100" and bin_row["proteins"] == 2 and all_row["bin"] == "all"
    mean, median, count = bin_row["tm_score"]
    assert count == 2 and mean == pytest.approx(np.mean([p["tm_score_mean"] for p in proteins.values()]))
    assert median == pytest.approx(mean)  # two values: the median is their mean
    assert bin_row["helix_q3"][2] == 2 and bin_row["long_range_precision"][2] == 0
    assert "| length bin | proteins | TM-score model | TM-score helix |" in md and "| <100 | 2 |" in md
    # Identity to the nearest training sequence, and the note for the one below 30%.
    assert proteins["helixA"]["nearest_training_identity"] == 1.0
    assert proteins["helixA"]["nearest_training_sequence"] == "trainA"
    assert proteins["helixB"]["nearest_training_identity"] < 0.3
    notes = [line for line in stderr.splitlines() if "no training sequence above 30% identity" in line]
    assert len(notes) == 1 and "helixB" in notes[0]


def test_evaluate_errors(tmp_path, ckpt, capsys):
    rc, _, err = run_eval(capsys, "--checkpoint", ckpt, "--preset", "tiny",
                          "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "e")
    assert rc == 1 and err.startswith("error: ") and "nowhere" in err and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    rc, _, err = run_eval(capsys, "--checkpoint", ckpt, "--preset", "tiny",
                          "--data-dir", tmp_path / "empty", "--out", tmp_path / "e")
    assert rc == 1 and "no usable structure file" in err
    assert not (tmp_path / "e").exists()
