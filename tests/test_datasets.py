"""Issue 13's data pipeline: modified residues and numbering, the prepared cache (ArrayRecord),
crops, and Grain batches with exact resume. Every structure here is written by the test."""

import gzip
import json

import gemmi
import numpy as np
import pytest

from nanoaf2_jax.data.batching import feature_residue_index
from nanoaf2_jax.data.cache import SKIPPED, Cache, CacheError, read_manifest
from nanoaf2_jax.data.crops import choose_crop, contiguous_crop, spatial_crop
from nanoaf2_jax.data.loader import CachedBatches
from nanoaf2_jax.data.prepare import ParseOptions, find_structure_files, prepare
from nanoaf2_jax.data.structures import parse_structure
from nanoaf2_jax.geometry.residue_constants import AA_TO_IDX, UNK_IDX

# ---------------------------------------------------------------------------------------------
# Synthetic structure files
# ---------------------------------------------------------------------------------------------

STANDARD = ("ALA", "GLY", "LEU", "SER", "LYS", "GLU", "VAL", "THR")


def backbone_xyz(i, atom, seed):
    """A wobbly helix-like trace: consecutive CAs ~3.8 Å apart, unique per file (seed)."""
    theta = np.deg2rad(100.0) * i
    ca = np.array([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * i]) + seed
    shift = {"N": (-0.6, 1.2, -0.4), "CA": (0.0, 0.0, 0.0), "C": (1.1, 0.7, 0.5), "O": (1.6, 1.5, 0.9)}
    return np.round(ca + np.array(shift[atom]), 3)


def pdb_lines(residues, chain="A", seed=0.0, het=(), altloc_at=None, gap_at=None):
    """ATOM/HETATM records of one chain; residue numbers 1.. (skipping gap_at: a chain break)."""
    lines, number = [], 0
    for i, resname in enumerate(residues):
        number += 2 if gap_at is not None and i == gap_at else 1
        record = "HETATM" if resname in het else "ATOM"
        for atom in ("N", "CA", "C", "O"):
            altlocs = ("A", "B") if i == altloc_at else (" ",)
            for k, alt in enumerate(altlocs):
                x, y, z = backbone_xyz(i, atom, seed) + 0.5 * k
                lines.append(f"{record:<6s}{len(lines) + 1:>5d}  {atom:<3s}{alt}{resname:>3s} "
                             f"{chain}{number:>4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00"
                             f"           {atom[0]}")
    return lines + ["TER"]


def write_pdb(path, *chains, extra=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([line for c in chains for line in c] + list(extra) + ["END"]) + "\n")
    return path


def synthetic_tree(root, n=240):
    """n small chains in nested directories, every format, a few with HETATM MSE, altlocs,
    chain breaks, two chains; plus bad files. Returns (good paths, bad paths)."""
    rng = np.random.default_rng(0)
    good = []
    for k in range(n):
        length = int(rng.integers(8, 40))
        residues = [STANDARD[j] for j in rng.integers(0, len(STANDARD), length)]
        kw = {}
        if k % 17 == 0:
            residues[length // 2] = "MSE"
            kw["het"] = ("MSE",)
        if k % 23 == 0:
            kw["altloc_at"] = 3
        if k % 29 == 0:
            kw["gap_at"] = length // 3
        chains = [pdb_lines(residues, "A", seed=float(k), **kw)]
        if k % 31 == 0:
            chains.append(pdb_lines(residues[:10], "B", seed=k + 50.0))
        path = write_pdb(root / f"d{k % 7}" / f"P{k:04d}.pdb", *chains)
        if k % 5 == 1:  # the same structure as mmCIF
            doc = gemmi.read_structure(str(path)).make_mmcif_document()
            cif = path.with_suffix(".cif")
            doc.write_file(str(cif))
            path.unlink()
            path = cif
        elif k % 5 == 2:
            gz = path.with_name(path.name + ".gz")
            gz.write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
            path = gz
        good.append(path)
    bad = [root / "bad" / "empty.pdb", root / "bad" / "garbage.cif", root / "bad" / "water.pdb"]
    bad[0].parent.mkdir(parents=True)
    bad[0].write_text("")
    bad[1].write_text("data_x\n_this is not; mmcif at all\n")
    write_pdb(bad[2], [], extra=["HETATM    1  O   HOH A 101      1.000   2.000   3.000  1.00 20.00           O"])
    (root / "notes.txt").write_text("not a structure")
    return sorted(good), sorted(bad)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    good, bad = synthetic_tree(root)
    return root, good, bad


@pytest.fixture(scope="module")
def cache_dir(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    prepare([tree[0]], out, workers=1, files_per_shard=64)
    return out


# ---------------------------------------------------------------------------------------------
# Modified residues and numbering
# ---------------------------------------------------------------------------------------------


def test_mse_becomes_met_with_no_gap_and_reference_drops_it(tmp_path):
    residues = ["ALA", "MSE", "GLY", "NLE", "ALA"]
    water = "HETATM   99  O   HOH A 101      9.000   9.000   9.000  1.00 20.00           O"
    path = write_pdb(tmp_path / "m.pdb", pdb_lines(residues, het=("MSE", "NLE")), extra=[water])
    kept = parse_structure(path, modified_residues=True)
    assert kept.length == 5  # the water after TER is no polymer residue
    assert kept.sequence.tolist() == [AA_TO_IDX[a] for a in "AMGLA"]
    assert kept.residue_index.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(kept.coords_CA[1], backbone_xyz(1, "CA", 0.0), atol=1e-3)
    reference = parse_structure(path)  # ATOM only: MSE and NLE dropped, the numbering shows it
    assert reference.sequence.tolist() == [AA_TO_IDX[a] for a in "AGA"]
    assert reference.residue_index.tolist() == [1, 3, 5]


def test_modified_residue_without_a_standard_parent_is_unknown(tmp_path):
    # An ATOM-recorded non-standard residue: the reference codes it unknown, and so does the
    # parent table when gemmi knows no amino-acid parent (a made-up name here).
    path = write_pdb(tmp_path / "u.pdb", pdb_lines(["ALA", "ZZZ", "MSE", "ALA"]))
    assert parse_structure(path).sequence.tolist() == [0, UNK_IDX, UNK_IDX, 0]
    assert parse_structure(path, modified_residues=True).sequence.tolist() == [
        0, UNK_IDX, AA_TO_IDX["M"], 0]


def test_feature_residue_index_keeps_gaps_and_separates_insertions():
    numbers = np.array([5, 6, 9, 10, 10, 11])  # a break after 6; 10 and 10A
    assert feature_residue_index(numbers).tolist() == [0, 1, 4, 5, 6, 7]
    assert feature_residue_index(numbers, 8).tolist() == [0, 1, 4, 5, 6, 7, 8, 9]


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


def test_cache_holds_what_parse_structure_reads(tree, cache_dir):
    root, good, bad = tree
    assert find_structure_files([root]) == sorted(good + bad)
    cache = Cache(cache_dir)
    by_source = {}
    for i, entry in enumerate(cache.entries):
        by_source.setdefault(entry.source, []).append(i)
    assert sorted(by_source) == [str(p) for p in good]
    for path in good[::3]:
        want = parse_structure(path, modified_residues=True)
        got = cache[by_source[str(path)][0]]
        assert (got.name, got.chain, got.length) == (want.name, want.chain, want.length)
        for field in ("sequence", "coords_N", "coords_CA", "coords_C", "residue_index"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    assert len(cache.manifest["shards"]) > 1  # files_per_shard=64: several shards
    skipped = read_manifest(cache_dir)["skipped"]
    assert sorted(skipped) == [str(p) for p in bad]
    assert "empty" in skipped[str(bad[0])]["reason"]
    assert "no protein chain" in skipped[str(bad[2])]["reason"]
    assert len((cache_dir / SKIPPED).read_text().splitlines()) == 1 + len(bad)


def test_all_chains_gives_one_record_per_protein_chain(tmp_path):
    a, b = pdb_lines(["ALA"] * 6, "A"), pdb_lines(["GLY"] * 4, "B", seed=30.0)
    write_pdb(tmp_path / "src" / "two.pdb", a, b)
    prepare([tmp_path / "src"], tmp_path / "first")
    prepare([tmp_path / "src"], tmp_path / "all", options=ParseOptions(all_chains=True))
    assert [(e.chain, e.length) for e in Cache(tmp_path / "first").entries] == [("A", 6)]
    assert read_manifest(tmp_path / "first")["files"][str(tmp_path / "src" / "two.pdb")]["chains"] == ["A", "B"]
    assert [(e.chain, e.length) for e in Cache(tmp_path / "all").entries] == [("A", 6), ("B", 4)]
    with pytest.raises(CacheError, match="prepared with"):
        prepare([tmp_path / "src"], tmp_path / "all")  # other options into the same cache


def records(cache):
    return [(e.source, e.chain, cache[i].coords_CA.tobytes(), cache[i].sequence.tobytes())
            for i, e in enumerate(cache.entries)]


def test_interrupted_preparation_resumed_gives_the_same_cache(tree, cache_dir, tmp_path):
    root, good, bad = tree
    out = tmp_path / "cache"
    # One subdirectory first, so that the shards do not hold the files in sorted order.
    subset = prepare([root / "d6"], out, files_per_shard=50)
    first = prepare([root], out, files_per_shard=50, stop_after=80)  # "interrupted"
    assert first.prepared + first.skipped == 80
    done = subset.prepared + subset.skipped + 80
    # What a kill leaves: a shard written but never listed, and a half-written temporary file.
    (out / "shard-00042.array_record").write_bytes(b"half a shard")
    (out / "manifest.json.tmp").write_text("{")
    assert len(Cache(out)) < len(Cache(cache_dir))  # a reader sees only what is listed
    second = prepare([root], out, workers=2, files_per_shard=50)
    assert second.unchanged == done and second.prepared + second.skipped == len(good) + len(bad) - done
    assert not (out / "shard-00042.array_record").exists() and not (out / "manifest.json.tmp").exists()
    assert records(Cache(out)) == records(Cache(cache_dir))
    again = prepare([root], out)
    assert again.unchanged == again.files and again.prepared == 0


def test_prune_keeps_only_the_files_found_now(tmp_path):
    """A run's own cache follows its --data-dir; a shared cache keeps what it was given."""
    write_pdb(tmp_path / "one" / "a.pdb", pdb_lines(["ALA"] * 5))
    write_pdb(tmp_path / "two" / "b.pdb", pdb_lines(["GLY"] * 6))
    prepare([tmp_path / "one"], tmp_path / "c")
    prepare([tmp_path / "two"], tmp_path / "c")
    assert [e.name for e in Cache(tmp_path / "c").entries] == ["a", "b"]
    prepare([tmp_path / "two"], tmp_path / "c", prune=True)
    assert [e.name for e in Cache(tmp_path / "c").entries] == ["b"]


def test_changed_file_is_prepared_again(tmp_path):
    path = write_pdb(tmp_path / "src" / "x.pdb", pdb_lines(["ALA"] * 5))
    prepare([tmp_path / "src"], tmp_path / "c")
    write_pdb(path, pdb_lines(["GLY"] * 7))
    report = prepare([tmp_path / "src"], tmp_path / "c")
    assert report.prepared == 1
    cache = Cache(tmp_path / "c")
    assert len(cache) == 1 and cache[0].length == 7
    meta = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert meta["files"][str(path)]["records"][0]["length"] == 7


# ---------------------------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------------------------


def test_contiguous_crop_is_a_window_and_deterministic_per_seed():
    starts = set()
    for seed in range(20):
        crop = contiguous_crop(100, 30, np.random.default_rng(seed))
        assert crop.tolist() == list(range(crop[0], crop[0] + 30)) and 0 <= crop[0] <= 70
        assert crop.tolist() == contiguous_crop(100, 30, np.random.default_rng(seed)).tolist()
        starts.add(int(crop[0]))
    assert len(starts) > 5
    assert contiguous_crop(20, 30, np.random.default_rng(0)).tolist() == list(range(20))


def test_spatial_crop_keeps_the_nearest_residues_to_a_random_centre():
    ca = np.stack([backbone_xyz(i, "CA", 0.0) for i in range(120)]).astype(np.float32)
    ca[60:] = ca[:60][::-1] + np.array([6.0, 0.0, 0.0])  # a hairpin: i and 119 - i are 6 Å apart
    for seed in range(10):
        rng = np.random.default_rng(seed)
        crop = spatial_crop(ca, 40, rng)
        centre = int(np.random.default_rng(seed).integers(0, 120))
        assert len(crop) == 40 and np.all(np.diff(crop) > 0)
        assert centre in crop
        d = np.linalg.norm(ca - ca[centre], axis=-1)
        outside = np.setdiff1d(np.arange(120), crop)
        assert d[crop].max() <= d[outside].min()
        assert crop.tolist() == spatial_crop(ca, 40, np.random.default_rng(seed)).tolist()
    # Across the hairpin the crop holds two stretches far apart in sequence.
    crop = spatial_crop(ca, 40, np.random.default_rng(3))
    assert np.any(np.diff(crop) > 1)


def test_choose_crop_mixes_kinds_by_fraction():
    from nanoaf2_jax.data.structures import Protein

    n = 80
    ca = np.stack([backbone_xyz(i, "CA", 0.0) for i in range(n)]).astype(np.float32)
    p = Protein(np.zeros(n, np.int32), ca, ca, ca, np.arange(n, dtype=np.int32), "p", "A")
    kinds = [choose_crop(p, 30, 0.5, np.random.default_rng(s))[1] for s in range(200)]
    assert 60 < kinds.count("spatial") < 140 and kinds.count("contiguous") == 200 - kinds.count("spatial")
    assert choose_crop(p, 30, 0.0, np.random.default_rng(0))[1] == "contiguous"
    assert choose_crop(p, 100, 0.5, np.random.default_rng(0))[1] == "none"


# ---------------------------------------------------------------------------------------------
# Grain batches
# ---------------------------------------------------------------------------------------------


def make_batches(cache_dir, **kw):
    args = dict(batch_size=4, seed=7, buckets=(16, 24, 32), crop_size=20, file_numbering=True,
                min_length=8)
    return CachedBatches(Cache(cache_dir), **{**args, **kw})


def test_batches_are_bucketed_cropped_and_numbered(cache_dir):
    plan = make_batches(cache_dir)
    cache = plan.cache
    assert set(plan.groups) == {16, 24}  # every chain cropped to 20 fits the 24 bucket
    assert plan.cropped == int(np.sum(cache.lengths > 20)) > 0
    assert sum(len(m) for m in plan.groups.values()) == len(cache)  # crops, not drops
    plan.start(3 * plan.steps_per_epoch, 0)
    seen = []
    for step in plan.epoch_order()[0:]:
        batch = plan.batch(step)
        assert batch["sequence"].shape[0] == 4 and batch["sequence"].shape[1] in (16, 24)
        assert batch["mask"].sum(1).max() <= 20
        assert batch["residue_index"].shape == batch["sequence"].shape
        seen.append(batch["mask"].any(1).sum())
    assert sum(seen) == len(cache)  # one epoch visits every chain once
    # A chain with a break keeps it in the numbering the model sees (crops aside).
    broken = next(i for i, e in enumerate(cache.entries) if np.any(np.diff(cache[i].residue_index) > 1))
    assert np.any(np.diff(feature_residue_index(cache[broken].residue_index)) > 1)
    reference_like = make_batches(cache_dir, crop_size=None, max_length=20, file_numbering=False)
    assert reference_like.dropped == int(np.sum(cache.lengths > 20))
    reference_like.start(10, 0)
    assert "residue_index" not in reference_like.batch(0)


def test_token_budget_puts_more_short_chains_in_a_step(cache_dir):
    plan = make_batches(cache_dir, batch_tokens=64)
    assert dict(plan.shapes) == {4: 16, 2: 24}  # 64 // 16 and 64 // 24 chains
    plan.start(plan.steps_per_epoch, 0)
    rows = [plan.batch(s)["mask"].any(1).sum() for s in plan.epoch_order()[0:]]
    assert sum(rows) == len(plan.cache)
    two = make_batches(cache_dir, batch_tokens=64, shard_index=1, shard_count=2)
    assert dict(two.shapes) == {2: 16, 1: 24}  # each process holds half of every step


@pytest.mark.parametrize("workers", [0, 1], ids=["threads", "worker-process"])
def test_resume_from_grain_state_equals_an_uninterrupted_run(cache_dir, workers):
    total = 2 * make_batches(cache_dir).steps_per_epoch + 3
    straight = make_batches(cache_dir)
    straight.start(total, 0)
    expected = [straight.batch(s) for s in range(total)]

    first = make_batches(cache_dir, worker_count=workers)
    first.start(total, 0)
    stop = first.steps_per_epoch + 2  # mid-epoch
    for s in range(stop):
        first.batch(s)
    state = json.loads(json.dumps(first.iterator_state()))  # as a checkpoint stores it
    first.close()
    resumed = make_batches(cache_dir, worker_count=workers)
    resumed.start(total, stop, state)
    for s in range(stop, total):
        got = resumed.batch(s)
        for key, value in expected[s].items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"step {s} {key}")
    resumed.close()
    other_seed = make_batches(cache_dir, seed=8)
    other_seed.start(total, 0)
    assert not all(np.array_equal(other_seed.batch(s)["coords_CA"], expected[s]["coords_CA"])
                   for s in range(5))


def test_processes_read_disjoint_rows_of_the_global_batch(cache_dir):
    whole = make_batches(cache_dir)
    halves = [make_batches(cache_dir, shard_index=i, shard_count=2) for i in range(2)]
    for step in range(whole.steps_per_epoch):
        full = whole.batch_at(step)
        parts = [h.batch_at(step) for h in halves]
        np.testing.assert_array_equal(np.concatenate([p["coords_CA"] for p in parts]), full["coords_CA"])


# ---------------------------------------------------------------------------------------------
# Through train.py
# ---------------------------------------------------------------------------------------------


def test_training_crops_long_chains_and_checkpoints_the_grain_state(tmp_path, compile_cache):
    from helpers import helix, read_metrics, run_train
    from helpers import write_pdb as write_backbone_pdb
    from nanoaf2_jax.training.checkpoint import checkpoints_dir, latest_complete, read_meta

    data = tmp_path / "data"
    data.mkdir()
    for k, n in enumerate((60, 30, 36)):  # 60 is cropped to 40, not dropped (max length 50)
        write_backbone_pdb(data / f"H{k}.pdb", helix(n, seed=k, name=f"H{k}"))
    out = tmp_path / "run"
    result = run_train(compile_cache, tmp_path, "--data-dir", str(data), "--output-dir", str(out),
                       "--crop-size", "40", "--max-length", "50", "--buckets", "48",
                       "--batch-size", "2", "--epochs", "2", "--log-every", "1",
                       "--checkpoint-every", "1")
    assert "3 chains from" in result.stderr and "1 cropped to 40" in result.stderr
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # 2 batches of 2 rows per epoch
    assert all(np.isfinite(r["loss"]) for r in records)
    meta = read_meta(latest_complete(checkpoints_dir(out)))
    assert meta["data_loader_state"] == {"next_index": 4}
    assert sorted(meta["dataset"]) == [["H0", "A", 60], ["H1", "A", 30], ["H2", "A", 36]]
    # Every chain's whole sequence (the 60-residue one uncropped), named as the fingerprint.
    from nanoaf2_jax.geometry.residue_constants import decode_sequence
    from nanoaf2_jax.training.training_sequences import SEQUENCES_FILE, read_sequences

    names, seqs = read_sequences(out / SEQUENCES_FILE)
    expected = {f"H{k}_A": decode_sequence(helix(n, seed=k).sequence) for k, n in enumerate((60, 30, 36))}
    assert dict(zip(names, seqs)) == expected
