"""Sampling from the command line: golden parity, batching, output files, determinism, bad input.

A tiny model with random weights saved as a reference-style .npz state_dict stands in for a
trained checkpoint. Sequence length, sample count and step count are shared between tests where
possible, because every new combination compiles the sampler again.
"""

import json
import subprocess
import sys
from pathlib import Path

import gemmi
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.cli import sample
from nanoaf2_jax.inference import memory, output, predict
from nanoaf2_jax.model.model_config import MODEL_PRESETS, ModelConfig
from nanoaf2_jax.model.convert import (params_to_state_dict, save_state_dict, state_dict_to_params,
                                 template_params)
from nanoaf2_jax.geometry.residue_constants import encode_sequence
from nanoaf2_jax.inference.sampling import SampleNoise, sample_jit
from nanoaf2_jax.inference.structure_io import read_backbone, write_backbone
from nanoaf2_jax.training.training_sequences import write_sequences
from helpers import run_main

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "fixtures" / "small.npz"
# The `tiny` preset's model, so a bare state_dict loads with --preset tiny.
TINY = MODEL_PRESETS["tiny"]
SEQ = "MKTAYIAKQRQI"  # 12 residues
STEPS = "4"


def random_params(config, seed=0):
    """Random weights of every tensor (non-zero everywhere, unlike init's zero layers), made
    without running the model: much faster than init_params on a CPU."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (0.2 * rng.standard_normal(x.shape)).astype(np.float32), template_params(config))


@pytest.fixture(scope="module")
def tiny_params():
    return random_params(TINY)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_params):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    save_state_dict(params_to_state_dict(tiny_params), path)
    return path


def run_cli(capsys, *argv):
    return run_main(sample.main, capsys, *argv)


def base_args(ckpt, out, *extra):
    return ["--checkpoint", ckpt, "--preset", "tiny", "--steps", STEPS, "--out", out, *extra]


def assert_one_line_error(rc, err, *fragments, progress=False):
    """Exit status 1 and one 'error: ' line (after progress lines, if the run got that far)."""
    assert rc == 1, err
    lines = err.strip().splitlines()
    if progress:
        lines = [line for line in lines if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def test_golden_sampling_reproduced():
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} not present")
    z = np.load(GOLDEN)
    config = ModelConfig.from_json(str(z["config"]))
    params = state_dict_to_params(
        {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}, config)
    noise = SampleNoise(*(jnp.asarray(z[f"sample/noise/{k}"]) for k in SampleNoise._fields))
    assert noise.trans_steps.shape[0] + 1 == int(z["sample/num_steps"])
    result = sample_jit(params, jnp.asarray(z["sample/sequence"]), noise, config)
    for atom in ("N", "CA", "C"):
        key = f"sample/coords_{atom}"
        truth = z[f"f64/{key}"]
        got = np.asarray(result[f"coords_{atom}"][0], np.float64)
        # The golden pass rule: at most 20x the reference's own float32 error, or 1e-5 relative.
        allowed = max(20 * np.abs(z[key] - truth).max(), 1e-5 * max(1.0, np.abs(truth).max()))
        assert np.abs(got - truth).max() <= allowed, key


def test_n_samples_in_one_call_equal_single_calls(tiny_params):
    codes = jnp.asarray(encode_sequence(SEQ))
    noise = predict.draw_noise((5, 0), 2, len(SEQ), 4)
    batched = sample_jit(tiny_params, codes, noise, TINY)
    for k in range(2):
        one = SampleNoise(noise.rot_omega[k:k + 1], noise.rot_axis[k:k + 1],
                          noise.trans_init[k:k + 1], noise.trans_steps[:, k:k + 1])
        single = sample_jit(tiny_params, codes, one, TINY)
        for key in ("coords_N", "coords_CA", "coords_C"):
            np.testing.assert_allclose(batched[key][k], single[key][0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(batched["plddt"][k], single["plddt"][0], atol=1e-5)
    # Samples differ from each other.
    assert np.abs(batched["coords_CA"][0] - batched["coords_CA"][1]).max() > 1e-3


def test_noise_of_a_sample_does_not_depend_on_num_samples():
    three = predict.draw_noise((7, 2), 3, 9, 5)
    one = predict.draw_noise((7, 2), 1, 9, 5)
    for a, b in zip(three, one):
        np.testing.assert_array_equal(np.asarray(a)[:, :1] if a.ndim == 4 else np.asarray(a)[:1], b)
    assert three.trans_steps.shape == (4, 3, 9, 3) and three.rot_axis.shape == (3, 9, 3)
    other_record = predict.draw_noise((7, 3), 1, 9, 5)
    assert not np.array_equal(one.rot_omega, other_record.rot_omega)


# ---------------------------------------------------------------------------------------------
# Command line, end to end
# ---------------------------------------------------------------------------------------------


def test_cli_writes_structures_and_summary(tmp_path, ckpt, tiny_params, capsys):
    out = tmp_path / "preds"
    rc, stdout, stderr = run_cli(capsys, *base_args(ckpt, out, "--sequence", SEQ.lower(),
                                                    "--num-samples", 2, "--seed", 11))
    assert rc == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "seq1_sample0.pdb", "seq1_sample1.pdb", "summary.json"]
    assert "[1/1] seq1" in stderr
    assert "seq1_sample1.pdb" in stdout and "mean pLDDT" in stdout

    expected = predict.predict_codes(tiny_params, TINY, encode_sequence(SEQ),
                                     predict.record_seed(11, 0), 2, int(STEPS))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 11 and summary["steps"] == int(STEPS) and summary["num_samples"] == 2
    (rec,) = summary["records"]
    assert rec["name"] == "seq1" and rec["length"] == len(SEQ) and rec["sequence"] == SEQ
    assert rec["mean_plddt"] == pytest.approx(100 * float(np.mean(expected["plddt"])), abs=1e-4)
    assert [s["file"] for s in rec["samples"]] == ["seq1_sample0.pdb", "seq1_sample1.pdb"]
    assert "nearest_training_identity" not in rec  # a bare state_dict: no training sequences

    for k in range(2):
        path = out / f"seq1_sample{k}.pdb"
        st = gemmi.read_structure(str(path))
        chain = st[0][0]
        assert gemmi.one_letter_code([r.name for r in chain]) == SEQ
        assert [a.name for a in chain[0]] == ["N", "CA", "C", "O"]
        back = read_backbone(path)
        for atom in ("N", "CA", "C"):
            np.testing.assert_allclose(back[f"coords_{atom}"], expected[f"coords_{atom}"][k],
                                       atol=1e-3, rtol=0)
        np.testing.assert_allclose(back["bfactor"], 100 * expected["plddt"][k], atol=0.01)
        header = " ".join(back["header_lines"])
        assert f"sample={k}" in header and "seed=11" in header and f"steps={STEPS}" in header
        assert "checkpoint=" in header and "tiny.npz" in header


def test_summary_reports_identity_to_the_nearest_training_sequence(tmp_path, ckpt, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "final_model.npz").write_bytes(ckpt.read_bytes())
    write_sequences(run_dir, [("near", SEQ[:6] + "W" + SEQ[7:]), ("far", "GGGGGGGGGGGG")])
    rc, _, err = run_cli(capsys, *base_args(run_dir / "final_model.npz", tmp_path / "a", "--sequence", SEQ,
                                            "--sequence", "WPCHWPCHWPCH", "--num-samples", 1))
    assert rc == 0, err
    near, far = json.loads((tmp_path / "a" / "summary.json").read_text())["records"]
    assert near["nearest_training_identity"] == pytest.approx(11 / 12)
    assert near["nearest_training_sequence"] == "near"
    assert far["nearest_training_identity"] < 0.3
    notes = [line for line in err.splitlines() if "no training sequence above 30% identity" in line]
    assert len(notes) == 1 and "seq2" in notes[0]


def test_identity_prior_caps_the_plddt_of_unfamiliar_queries_only(tmp_path, ckpt, capsys):
    """The run's identity_prior.json (inference/identity_prior.py) lowers the pLDDT of a query
    unlike the training set to what the prior says, in summary.json and in the files' B-factors,
    by one factor per sample; a familiar query, the structures, and `--identity-prior off`
    keep the head's values."""
    from nanoaf2_jax.inference.identity_prior import IdentityPrior, PRIOR_FILE, save_prior

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "final_model.npz").write_bytes(ckpt.read_bytes())
    write_sequences(run_dir, [("near", SEQ)])
    save_prior(IdentityPrior((0.0, 0.5, 1.0), (0.01, 0.01, 1.0)), run_dir / PRIOR_FILE)
    runs, logs = {}, {}
    for name, extra in (("prior", ()), ("off", ("--identity-prior", "off"))):
        rc, _, err = run_cli(capsys, *base_args(run_dir / "final_model.npz", tmp_path / name,
                                                "--sequence", SEQ, "--sequence", "WPCHWPCHWPCH",
                                                "--num-samples", 2, *extra))
        assert rc == 0, err
        runs[name], logs[name] = json.loads((tmp_path / name / "summary.json").read_text())["records"], err
    (near, far), (near_off, far_off) = runs["prior"], runs["off"]
    assert far["nearest_training_identity"] < 0.5 and far_off["mean_plddt"] > 1.0
    assert far["mean_plddt"] == pytest.approx(1.0, abs=1e-6)  # 100 x the prior's 0.01
    assert far["mean_plddt_head"] == pytest.approx(far_off["mean_plddt"], abs=1e-6)
    ratio = np.asarray(far["plddt"]) / np.asarray(far_off["plddt"])
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-6)
    assert near["mean_plddt"] == pytest.approx(near_off["mean_plddt"], abs=1e-6)  # 100% identity
    assert "identity_prior_lddt" in near and "mean_plddt_head" not in near_off
    assert "seq2: pLDDT" in logs["prior"] and "capped at 1.0" in logs["prior"]
    assert "seq1: pLDDT" not in logs["prior"] and "capped" not in logs["off"]
    for k in range(2):
        capped = read_backbone(tmp_path / "prior" / f"seq2_sample{k}.pdb")
        head = read_backbone(tmp_path / "off" / f"seq2_sample{k}.pdb")
        np.testing.assert_allclose(capped["bfactor"], np.asarray(far["plddt"][k]), atol=0.01)
        np.testing.assert_array_equal(capped["coords_CA"], head["coords_CA"])


def test_same_seed_same_structures(tmp_path, ckpt, capsys):
    def coords(out):
        return {p.name: read_backbone(p)["coords_CA"] for p in sorted(out.glob("*.pdb"))}

    runs = {}
    for name, seed, n in (("a", 1, 2), ("b", 1, 2), ("c", 2, 2), ("d", 1, 1)):
        rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / name, "--sequence", SEQ,
                                                "--num-samples", n, "--seed", seed))
        assert rc == 0, err
        runs[name] = coords(tmp_path / name)
    assert (tmp_path / "a" / "seq1_sample0.pdb").read_bytes() == \
        (tmp_path / "b" / "seq1_sample0.pdb").read_bytes()
    assert not np.allclose(runs["a"]["seq1_sample0.pdb"], runs["c"]["seq1_sample0.pdb"])
    # Sample 0 is the same structure whether drawn alone or with others.
    np.testing.assert_allclose(runs["d"]["seq1_sample0.pdb"], runs["a"]["seq1_sample0.pdb"],
                               atol=2e-3)


def test_fasta_records_names_and_cif(tmp_path, ckpt, capsys):
    fasta = tmp_path / "in.fa"
    fasta.write_text(f">sp|P1|FIRST some protein\n{SEQ[:6].lower()}\n  {SEQ[6:]}\n\n"
                     f">second\n{SEQ}\n>second\n{SEQ}\n")
    out = tmp_path / "o"
    rc, stdout, err = run_cli(capsys, *base_args(ckpt, out, "--fasta", fasta, "--sequence", SEQ,
                                                 "--format", "cif"))
    assert rc == 0, err
    names = ["sp_P1_FIRST", "second", "second_2", "seq1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}_sample0.cif" for n in names] + ["summary.json"])
    assert [r["name"] for r in json.loads((out / "summary.json").read_text())["records"]] == names
    st = gemmi.read_structure(str(out / "sp_P1_FIRST_sample0.cif"))
    assert gemmi.one_letter_code([r.name for r in st[0][0]]) == SEQ
    # Records share length, samples and steps: all four come from one compiled function, and
    # different records get different noise.
    ca = [read_backbone(out / f"{n}_sample0.cif")["coords_CA"] for n in names]
    assert not np.allclose(ca[1], ca[2])


def test_native_scores_and_plot(tmp_path, ckpt, capsys):
    native = tmp_path / "nat.pdb"
    ca = np.stack([2.3 * np.cos(np.arange(12) * 1.75), 2.3 * np.sin(np.arange(12) * 1.75),
                   1.5 * np.arange(12)], axis=-1)  # a helix-like CA trace
    write_backbone(native, encode_sequence(SEQ), ca + [-0.5, 1.2, -0.6], ca, ca + [1.4, 0.3, 0.5])
    out = tmp_path / "o"
    rc, stdout, err = run_cli(capsys, *base_args(ckpt, out, "--native", f"{native}:A",
                                                 "--num-samples", 2))
    assert rc == 0, err
    assert "TM-score" in stdout and "CA-RMSD" in stdout
    summary = json.loads((out / "summary.json").read_text())
    (rec,) = summary["records"]
    assert rec["name"] == "nat" and rec["sequence"] == SEQ
    for s in rec["samples"]:
        assert s["ca_rmsd"] > 0 and 0 < s["tm_score"] <= 1 and 0 <= s["lddt"] <= 1
    assert rec["tm_score_best"] == max(s["tm_score"] for s in rec["samples"])
    assert (out / "nat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Another length than the native's is an error.
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "x", "--native", native,
                                            "--sequence", SEQ + "A"))
    assert_one_line_error(rc, err, "13 residues", "12")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    # Positions count residues: whitespace is skipped.
    (["--sequence", "MKTAYIA", "--sequence", "MKT\n AZQ"], ["'seq2'", "position 5", "'Z'"]),
    (["--sequence", "MKB"], ["'seq1'", "position 3", "'B'"]),
    (["--sequence", "  \n "], ["'seq1'", "empty"]),
])
def test_bad_sequences(tmp_path, ckpt, capsys, args, fragments):
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "o", *args))
    assert_one_line_error(rc, err, *fragments)
    assert not (tmp_path / "o").exists()


def test_fasta_stop_codon_at_the_end_is_dropped():
    from nanoaf2_jax.inference.records import parse_fasta_text

    (rec,) = parse_fasta_text(">p1 exported\nMKTAY\nIAK*\n", "in.fa")
    assert rec.sequence == "MKTAYIAK" and rec.length == 8


@pytest.mark.parametrize("text, fragments", [
    (">a\nMKT\n>b\n\n>c\nMK\n", ["'b'", "empty", "line 3"]),
    (">a\nMKT\n>b desc\nMK1Q\n", ["'b'", "position 3", "'1'"]),
    (">a\nMK*T\n", ["'a'", "position 3", "'*'"]),  # a stop codon is allowed only at the end
    (">a\n*\n", ["'a'", "empty"]),
    ("", ["no records"]),
    ("\n\n", ["no records"]),
    ("MKTAYIAK\n>a\nMKT\n", ["not a FASTA file", "line 1"]),
    ("HEADER    PROTEIN\nATOM      1  N   MET A   1\n", ["not a FASTA file"]),
])
def test_bad_fasta(tmp_path, ckpt, capsys, text, fragments):
    fasta = tmp_path / "in.fa"
    fasta.write_text(text)
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "o", "--fasta", fasta))
    assert_one_line_error(rc, err, str(fasta), *fragments)


def test_fasta_missing_or_binary(tmp_path, ckpt, capsys):
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "o", "--fasta", tmp_path / "no.fa"))
    assert_one_line_error(rc, err, "no.fa", "not found")
    binary = tmp_path / "bin.fa"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "o", "--fasta", binary))
    assert_one_line_error(rc, err, "bin.fa", "not a FASTA file")


def test_bad_checkpoints(tmp_path, ckpt, capsys):
    seq = ["--sequence", SEQ]
    rc, _, err = run_cli(capsys, *base_args(tmp_path / "missing.npz", tmp_path / "o", *seq))
    assert_one_line_error(rc, err, "missing.npz", "not found")

    # Weights of the tiny model read as the default architecture.
    args = base_args(ckpt, tmp_path / "o", *seq)
    args[args.index("tiny")] = "default"
    rc, _, err = run_cli(capsys, *args)
    assert_one_line_error(rc, err, "tiny.npz")
    assert "shape" in err or "missing" in err or "unexpected" in err

    junk = tmp_path / "junk.npz"
    junk.write_text("not a checkpoint")
    rc, _, err = run_cli(capsys, *base_args(junk, tmp_path / "o", *seq))
    assert_one_line_error(rc, err, "junk.npz")

    # A valid archive of unrelated arrays.
    other = tmp_path / "other.npz"
    np.savez(other, foo=np.zeros(3))
    rc, _, err = run_cli(capsys, *base_args(other, tmp_path / "o", *seq))
    assert_one_line_error(rc, err, "other.npz", "foo")
    assert not (tmp_path / "o").exists()


def test_bad_options_and_no_input(tmp_path, ckpt, capsys):
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "o"))
    assert_one_line_error(rc, err, "nothing to predict")
    for bad in (["--num-samples", "0"], ["--steps", "-1"], ["--seed", "x"]):
        rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "o", "--sequence", SEQ, *bad))
        assert rc == 2 and bad[0] in err  # argparse usage error
    (tmp_path / "file").write_text("")
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "file", "--sequence", SEQ))
    assert_one_line_error(rc, err, "not a directory")


def test_memory_limit_refuses_and_force_overrides(tmp_path, ckpt, capsys):
    args = base_args(ckpt, tmp_path / "o", "--sequence", SEQ, "--max-memory-gb", "0.00001")
    rc, _, err = run_cli(capsys, *args)
    assert_one_line_error(rc, err, "'seq1'", "12 residues", "GiB", "--max-memory-gb", "--force")
    assert not (tmp_path / "o").exists()
    rc, _, err = run_cli(capsys, *args, "--force")
    assert rc == 0, err


def test_failed_run_leaves_nothing(tmp_path, ckpt, capsys, monkeypatch):
    real = output.write_backbone
    calls = []

    def failing(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(output, "write_backbone", failing)
    out = tmp_path / "o"
    rc, _, err = run_cli(capsys, *base_args(ckpt, out, "--sequence", SEQ, "--sequence", SEQ[::-1],
                                            "--num-samples", 2))
    assert_one_line_error(rc, err, "No space left", progress=True)
    assert list(tmp_path.iterdir()) == [], "partial output or staging directory left behind"

    # An existing output directory keeps its other files; new ones are added.
    monkeypatch.setattr(output, "write_backbone", real)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc, _, err = run_cli(capsys, *base_args(ckpt, out, "--sequence", SEQ))
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "seq1_sample0.pdb", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_subprocess_error_has_no_traceback(tmp_path, ckpt):
    proc = subprocess.run(
        [sys.executable, "sample.py", "--checkpoint", str(ckpt), "--preset", "tiny",
         "--sequence", "MKTJ", "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: record 'seq1' (--sequence): 'J' at position 4 is not "
                                   "an amino acid (allowed: ACDEFGHIKLMNPQRSTVWYX, any case)")
    help_proc = subprocess.run([sys.executable, "sample.py", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert help_proc.returncode == 0
    for option in ("--checkpoint", "--sequence", "--fasta", "--num-samples", "--seed", "--steps",
                   "--out", "--format", "--native", "--preset", "--max-memory-gb", "--force"):
        assert option in help_proc.stdout


# ---------------------------------------------------------------------------------------------
# Memory estimate
# ---------------------------------------------------------------------------------------------


def test_memory_estimate_bounds_compiled_sampler(tiny_params):
    """The formula is an upper bound on what XLA allocates for the whole sampler."""
    for length in (40,):
        noise = predict.draw_noise((0, 0), 2, length, 4)
        compiled = sample_jit.lower(tiny_params, jnp.zeros(length, jnp.int32), noise,
                                    TINY).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            pytest.skip("this backend reports no memory analysis")
        used = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
        estimate = memory.estimate_peak_bytes(length, TINY, num_samples=2, num_steps=4)
        assert used <= estimate, (length, used, estimate)
    # Cubic growth: doubling L multiplies the estimate by close to 8 at large L.
    big = [memory.estimate_peak_bytes(n, ModelConfig(), 1, num_params=0) for n in (1000, 2000)]
    assert 7 < big[1] / big[0] <= 8


def test_available_memory_is_known():
    limit, source = memory.available_memory_bytes()
    assert limit is not None and limit > 0 and source


def test_chunks_give_the_structures_of_one_call(tmp_path, ckpt, tiny_params, capsys):
    """N = 5 in calls of 2 (padded to 2, 2, 1 + a discarded sample): each sample is the one
    a single call gives, since its noise is drawn from (seed, record, k) alone."""
    codes = encode_sequence(SEQ)
    whole = predict.predict_codes(tiny_params, TINY, codes, (3, 0), 5, int(STEPS))
    assert predict.chunk_plan(5, 2) == [(0, 2), (2, 2), (4, 1)]
    assert predict.chunk_plan(10, 4) == [(0, 4), (4, 4), (8, 2)]
    chunked = predict.predict_codes(tiny_params, TINY, codes, (3, 0), 5, int(STEPS), per_call=2)
    for key in ("coords_N", "coords_CA", "coords_C", "plddt"):
        np.testing.assert_allclose(chunked[key], whole[key], atol=1e-4, rtol=0, err_msg=key)
    out = tmp_path / "preds"
    rc, _, stderr = run_cli(capsys, *base_args(ckpt, out, "--sequence", SEQ, "--num-samples", 5,
                                               "--seed", 3, "--batch-samples", 2))
    assert rc == 0, stderr
    assert "calls of 2 samples" in stderr
    assert sorted(p.name for p in out.glob("*.pdb")) == [f"seq1_sample{k}.pdb" for k in range(5)]


def test_memory_estimate_grows_with_the_samples_and_chunks_follow_it():
    from nanoaf2_jax.inference import memory

    config = MODEL_PRESETS["default"]
    one = memory.estimate_peak_bytes(46, config, 1, 100, num_params=0)
    per_sample = memory.estimate_peak_bytes(46, config, 2, 100, num_params=0) - one
    # Measured: 3.4 MiB per sample at L = 46 (memory.py); the estimate must not be below it.
    assert per_sample >= 3.4 * 2**20
    fits = memory.samples_that_fit(46, config, 100, one + 10 * per_sample, num_params=0)
    assert fits == 11
    assert memory.samples_that_fit(46, config, 100, one - 1, num_params=0) == 0


def test_an_out_holding_predictions_is_refused_unless_overwrite(tmp_path, ckpt, capsys):
    out = tmp_path / "preds"
    args = base_args(ckpt, out, "--sequence", SEQ, "--seed", 1)
    assert run_cli(capsys, *args)[0] == 0
    before = (out / "seq1_sample0.pdb").read_bytes()
    rc, _, err = run_cli(capsys, *base_args(ckpt, out, "--sequence", SEQ, "--seed", 2))
    assert_one_line_error(rc, err, "already holds predictions", "summary.json", "--overwrite")
    assert (out / "seq1_sample0.pdb").read_bytes() == before  # untouched
    rc, _, err = run_cli(capsys, *base_args(ckpt, out, "--sequence", SEQ, "--seed", 2), "--overwrite")
    assert rc == 0, err
    assert (out / "seq1_sample0.pdb").read_bytes() != before


def test_native_is_read_with_the_training_rules_of_the_checkpoint(tmp_path, ckpt, capsys, monkeypatch):
    """A run trained with modified residues and file numbering: its natives keep MSE (as M) and
    the trunk sees their numbering gap; the reference's rules drop the MSE residue."""
    codes = encode_sequence("ACDEFGHIKLMN")
    native = tmp_path / "native.pdb"
    from helpers import helix

    h = helix(12)
    write_backbone(native, codes, h.coords_N, h.coords_CA, h.coords_C)
    lines = []
    for line in native.read_text().splitlines(keepends=True):
        if line.startswith("ATOM"):
            number = int(line[22:26])
            if number == 11:  # MET -> MSE recorded as HETATM
                line = "HETATM" + line[6:17] + "MSE" + line[20:]
            if number >= 7:  # a gap of 10 in the numbering: a chain break
                line = line[:22] + f"{number + 10:>4}" + line[26:]
        lines.append(line)
    native.write_text("".join(lines))
    seen = {}
    original = sample.predict_chunks

    def spy(*args, **kwargs):
        seen["residue_index"] = args[7] if len(args) > 7 else kwargs.get("residue_index")
        yield from original(*args, **kwargs)

    monkeypatch.setattr(sample, "predict_chunks", spy)
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "ref", "--native", native))
    assert rc == 0, err  # a bare state_dict: the reference's rules, MSE dropped
    assert json.loads((tmp_path / "ref" / "summary.json").read_text())["records"][0]["length"] == 11
    assert seen["residue_index"] is None
    monkeypatch.setattr(sample, "native_rules", lambda info: (True, True))
    rc, _, err = run_cli(capsys, *base_args(ckpt, tmp_path / "train", "--native", native))
    assert rc == 0, err
    (rec,) = json.loads((tmp_path / "train" / "summary.json").read_text())["records"]
    assert rec["length"] == 12 and rec["sequence"] == "ACDEFGHIKLMN"
    np.testing.assert_array_equal(seen["residue_index"], [0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 20, 21])
