"""Checkpoints: round trip, half-written directories, non-finite losses, load_for_inference."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train as train_cli
from configs import get_preset
from nanoaf2_jax.training.checkpoint import (
    CheckpointError,
    CorruptCheckpoint,
    TrainCheckpointer,
    checkpoints_dir,
    is_complete,
    load_for_inference,
    scan,
    verify,
)
from nanoaf2_jax.training.write_errors import WriteFailure
from nanoaf2_jax.model.convert import params_to_state_dict, save_state_dict, template_params
from helpers import SCHEDULE_STEPS, helix, write_pdb, two_helices, run_faulty, run_train, read_metrics

TINY = get_preset("tiny").model


@pytest.fixture(scope="module")
def run(tmp_path_factory, compile_cache):
    """A tiny run stopped after 6 steps (3 epochs of 2 proteins), checkpointed every epoch."""
    root = tmp_path_factory.mktemp("run")
    data = two_helices(root / "data")
    out = root / "out"
    run_train(compile_cache, root, "--data-dir", str(data), "--output-dir", str(out),
              "--epochs", str(SCHEDULE_STEPS // 2), "--checkpoint-every", "1", "--log-every", "1",
              "--max-steps", "6")
    return {"data": data, "out": out}


def copy_run(run, tmp_path):
    return shutil.copytree(run["out"], tmp_path / "out")


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpointer_round_trip_keeps_the_newest(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": {"bias": jnp.ones(3)}}
    opt_state = optax.adamw(1e-3).init(params)
    rng = np.random.default_rng(42)
    rng.random(5)
    meta = {"data_rng_state": rng.bit_generator.state, "train_key": [1, 2**32 - 1]}
    ckpt = TrainCheckpointer(tmp_path, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, jax.tree_util.tree_map(lambda x: x * step, params), opt_state, meta)
    assert ckpt.steps() == [2, 3] and ckpt.latest_step() == 3
    restored, restored_opt, restored_meta = ckpt.restore(3, params, opt_state)
    ckpt.close()
    assert_trees_equal(restored, jax.tree_util.tree_map(lambda x: x * 3, params))
    assert_trees_equal(restored_opt, opt_state)
    # The 128-bit PCG64 state survives JSON exactly.
    assert restored_meta["data_rng_state"] == rng.bit_generator.state
    assert restored_meta["train_key"] == [1, 2**32 - 1] and restored_meta["step"] == 3


def test_optimiser_state_of_another_layout_is_refused_in_one_line(tmp_path):
    """Checkpoints written with optax.adamw's state (before training/adamw.py) cannot resume."""
    from nanoaf2_jax.training.train_step import OptimConfig, make_optimizer

    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    ckpt = TrainCheckpointer(tmp_path, keep=1)
    ckpt.save(1, params, optax.chain(optax.identity(), optax.adamw(1e-3)).init(params), {"step": 1})
    with pytest.raises(CheckpointError, match="cannot resume: its optimiser state has another layout") as err:
        ckpt.restore(1, params, make_optimizer(OptimConfig()).init(params))
    ckpt.close()
    assert "\n" not in str(err.value) and len(str(err.value)) < 500


def test_half_written_checkpoint_is_never_picked(run, tmp_path, compile_cache):
    out = copy_run(run, tmp_path)
    ckpts = checkpoints_dir(out)
    # A newer step directory without orbax's commit markers, and an orbax temporary directory.
    half = shutil.copytree(ckpts / "6", ckpts / "8")
    for marker in half.rglob("commit_success.txt"):
        marker.unlink()
    shutil.copytree(ckpts / "6", ckpts / "10.orbax-checkpoint-tmp-1234567")
    assert list(scan(ckpts)[0]) == [2, 4, 6] and not is_complete(half)

    _, _, info = load_for_inference(out)
    assert info["step"] == 6
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_for_inference(half)

    result = run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(out),
                       "--max-steps", "8")
    assert f"resuming from {ckpts.absolute() / '6'}" in result.stderr
    assert "ignoring incomplete checkpoint" in result.stderr
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 9))
    assert is_complete(ckpts / "8")  # written anew by the resumed run
    assert len(list((out / "incomplete_checkpoints").iterdir())) == 1  # set aside, not deleted


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run, tmp_path, compile_cache):
    out = copy_run(run, tmp_path)
    before = {p.name: sorted(q.name for q in p.rglob("*")) for p in checkpoints_dir(out).iterdir()}
    # The same proteins (names, lengths) with one NaN coordinate each: step 7 will be NaN.
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in sorted(run["data"].iterdir()):
        length = 22 if path.stem == "HLXA" else 26
        target = write_pdb(bad / path.name, helix(length))
        # Our writer refuses non-finite coordinates, so put the NaN into the text (gemmi reads it).
        lines = target.read_text().splitlines(keepends=True)
        ca_lines = [i for i, line in enumerate(lines) if line.startswith("ATOM") and line[12:16].strip() == "CA"]
        line = lines[ca_lines[3]]
        lines[ca_lines[3]] = line[:30] + f"{'nan':>8}" + line[38:]
        target.write_text("".join(lines))

    result = run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(out),
                       "--data-dir", str(bad), "--max-steps", "10", "--log-every", "5",
                       check=False)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "non-finite" in message and "step 7 " in message
    assert str(checkpoints_dir(out).absolute() / "6") in message
    assert "Traceback" not in result.stderr
    after = {p.name: sorted(q.name for q in p.rglob("*")) for p in checkpoints_dir(out).iterdir()}
    assert after == before
    assert not list(out.glob("final_model*"))
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 7))


def test_fresh_start_refuses_a_directory_with_checkpoints(run, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    args = ["--preset", "tiny", "--data-dir", str(run["data"]), "--output-dir", str(out),
            "--epochs", str(SCHEDULE_STEPS // 2)]
    assert train_cli.main(args) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    assert train_cli.main(["--resume", "--output-dir", str(out), "--lr", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "must keep its config" in err and "0.5" in err


def test_load_for_inference_from_run_and_step_directories(run):
    params, config, info = load_for_inference(run["out"])
    assert config == TINY and info["kind"] == "checkpoint" and info["step"] == 6
    template = template_params(TINY)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(template)
    for x, t in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(template)):
        assert x.shape == t.shape and x.dtype == t.dtype
    earlier, _, info4 = load_for_inference(checkpoints_dir(run["out"]) / "4")
    assert info4["step"] == 4
    assert not np.array_equal(jax.tree_util.tree_leaves(earlier)[0], jax.tree_util.tree_leaves(params)[0])
    same, _, _ = load_for_inference(checkpoints_dir(run["out"]))  # the checkpoints directory
    assert_trees_equal(same, params)


def test_load_for_inference_from_a_state_dict(run, tmp_path):
    params, _, _ = load_for_inference(run["out"])
    path = save_state_dict(params_to_state_dict(params), tmp_path / "weights.npz")
    loaded, config, info = load_for_inference(path, preset="tiny")
    assert config == TINY and info["kind"] == "state_dict"
    assert_trees_equal(loaded, jax.device_get(params))
    with pytest.raises(CheckpointError, match=r"weights\.npz.*preset 'default'"):
        load_for_inference(path)  # the default preset's model has other shapes


def test_load_for_inference_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere: no such file"):
        load_for_inference(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: not a checkpoint"):
        load_for_inference(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt: not a checkpoint"):
        load_for_inference(tmp_path / "notes.txt")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="junk.npz: cannot read"):
        load_for_inference(tmp_path / "junk.npz")


def test_tensorboard_scalars_equal_metrics_jsonl_across_a_resume(run, tmp_path, compile_cache):
    """The run logged steps 1-6; resuming from the checkpoint at step 4 recomputes 5 and 6. The
    TensorBoard reader must then see each step once, with metrics.jsonl's values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = copy_run(run, tmp_path)
    shutil.rmtree(checkpoints_dir(out) / "6")
    run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(out), "--max-steps", "8")
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 9))

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/fape_loss", "train/grad_norm", "train/lr", "train/steps_per_sec"} <= tags
    assert "train/step" not in tags and "train/time" not in tags
    for key in ("loss", "grad_norm", "lr"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == list(range(1, 9)), key
        # Event files hold float32.
        np.testing.assert_allclose([s.value for s in scalars], [r[key] for r in records], rtol=1e-6)


def test_no_tensorboard_writes_no_event_files(run, tmp_path, compile_cache):
    out = copy_run(run, tmp_path)
    shutil.rmtree(out / "tensorboard")
    run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(out), "--max-steps", "7",
              "--no-tensorboard")
    assert not (out / "tensorboard").exists()
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 8))


# ---------------------------------------------------------------------------------------------
# Faults: damaged checkpoints, full disks (docs/faults.md)
# ---------------------------------------------------------------------------------------------


def damage(step_dir, same_size=True):
    """Overwrite the largest data files of params/ as a disk error would: same size (only the
    checksum manifest can tell) or truncated (tensorstore fails reading it)."""
    files = sorted((p for p in (step_dir / "params").rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: -p.stat().st_size)[:2]
    for path in files:
        size = path.stat().st_size
        path.write_bytes(bytes(size) if same_size else b"\x01" * 100)
    return files


def test_every_checkpoint_has_a_manifest_that_names_a_damaged_file(run, tmp_path):
    out = copy_run(run, tmp_path)
    for step in (2, 4, 6):
        assert verify(checkpoints_dir(out) / str(step))  # written after each commit, still true
    damaged = damage(checkpoints_dir(out) / "6")
    with pytest.raises(CorruptCheckpoint, match=r"6: params/.* differs from the saved file") as err:
        verify(checkpoints_dir(out) / "6")
    assert "\n" not in str(err.value)
    assert damaged[0].relative_to(checkpoints_dir(out) / "6").as_posix() in str(err.value) or \
        damaged[1].relative_to(checkpoints_dir(out) / "6").as_posix() in str(err.value)


def test_resume_sets_a_damaged_checkpoint_aside_and_continues_from_the_previous(run, tmp_path, compile_cache):
    out = copy_run(run, tmp_path)
    ckpts = checkpoints_dir(out)
    damage(ckpts / "6")  # same size: orbax would restore other numbers without a word
    result = run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(out), "--max-steps", "8")
    warnings = [ln for ln in result.stderr.splitlines() if "unusable checkpoint" in ln]
    assert len(warnings) == 1 and f"{ckpts.absolute() / '6'}: params/" in warnings[0]
    assert "SHA-256 mismatch" in warnings[0] and "set aside as 6.corrupt" in warnings[0]
    assert "resuming from step 4 instead of step 6: 2 step(s) of training lost" in result.stderr
    assert (ckpts / "6.corrupt").is_dir() and is_complete(ckpts / "6")  # kept, and 6 written anew
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    original = {r["step"]: r for r in read_metrics(run["out"])}
    for r in records[4:6]:  # steps 5 and 6, recomputed from checkpoint 4: the same numbers
        np.testing.assert_allclose(r["loss"], original[r["step"]]["loss"], rtol=1e-6)


def test_truncated_files_are_caught_without_a_manifest_too(run, tmp_path, caplog):
    """Steps written before manifests existed: the restore's own failure is the report, one line."""
    out = copy_run(run, tmp_path)
    ckpts = checkpoints_dir(out)
    for step in (2, 4, 6):
        (ckpts / str(step) / "nanoaf2_manifest.json").unlink()
    damage(ckpts / "6", same_size=False)
    _, _, info = load_for_inference(out)
    assert info["step"] == 4 and info["skipped_corrupt"] == [str(ckpts / "6")]
    lines = [r.getMessage() for r in caplog.records if "unusable checkpoint" in r.getMessage()]
    assert len(lines) == 1 and "cannot restore the parameters" in lines[0] and "\n" not in lines[0]
    assert (ckpts / "6").is_dir()  # sampling only reads: a training run may own the directory
    with pytest.raises(CheckpointError, match="6: cannot restore the parameters"):
        load_for_inference(ckpts / "6")  # a step asked for by name: no fallback


def test_no_readable_checkpoint_is_one_clear_error(run, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    for step in (2, 4, 6):
        damage(checkpoints_dir(out) / str(step))
    assert train_cli.main(["--resume", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 3 checkpoints (steps 2, 4, 6) is readable" in err[0]
    with pytest.raises(CheckpointError, match="none of its 3 checkpoints restores"):
        load_for_inference(out)


def test_a_full_disk_during_a_save_is_one_line_and_leaves_no_temporary_directory(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    params = {"w": jnp.arange(6.0)}
    opt_state = optax.adamw(1e-3).init(params)
    ckpt = TrainCheckpointer(tmp_path, keep=3)
    ckpt.save(1, params, opt_state, {})

    async def full(self, *args, **kwargs):
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "params/d/0" in OCDBT database: '
                         "Failed to write 866 bytes: No space left on device [os_error_code='28']")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full)
    with pytest.raises(WriteFailure) as err:
        ckpt.save(2, params, opt_state, {})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot write checkpoint step 2 to {ckpt.dir}: ")
    assert "No space left on device [errno 28]" in message and " free there)" in message
    assert "the last complete checkpoint is step 1: train.py --resume continues from it" in message
    assert sorted(p.name for p in ckpt.dir.iterdir()) == ["1"]  # no orbax-checkpoint-tmp left
    assert verify(ckpt.dir / "1")


def test_a_full_disk_stops_train_py_in_one_line_and_resume_continues(run, tmp_path, compile_cache):
    out = copy_run(run, tmp_path)
    failed = run_faulty(compile_cache, tmp_path, "enospc-in-save:8", "--resume", "--output-dir", str(out),
                        "--max-steps", "10")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("train.py: error: cannot write checkpoint step 8 to ")
    assert "No space left on device" in line and "last complete checkpoint is step 6" in line
    assert not [p for p in checkpoints_dir(out).iterdir() if not p.name.isdigit()]
    assert max(r["step"] for r in read_metrics(out)) == 8  # logged before the save failed
    run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(out), "--max-steps", "10")
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 11))  # 7, 8 once each

    failed = run_faulty(compile_cache, tmp_path, "enospc-in-metrics", "--resume", "--output-dir", str(out),
                        "--max-steps", "12")
    line = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"cannot write the step metrics to {out / 'metrics.jsonl'}: No space left on device" in line
    assert "last complete checkpoint is step 10" in line
