"""Confidence fine-tuning (issue 20; configs.py `calibrate`, docs/generalisation.md): a trained
checkpoint's weights as the start (--init-from), only the pLDDT head trained (--trainable), on a
mix of data directories (--data-dir twice, --data-mix)."""

import logging
from pathlib import Path

import jax
import numpy as np
import pytest

import train as train_cli
from configs import get_preset
from helpers import helix, run_main, two_helices, write_pdb
from nanoaf2_jax.model.model_config import checkpoint_model_with
from nanoaf2_jax.training.checkpoint import load_for_inference
from nanoaf2_jax.training.data_source import training_data
from nanoaf2_jax.training.train_config import ConfigError, TrainConfig, TrainingError
from nanoaf2_jax.training.trainer import RunOptions


def _leaves(params):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps: the checkpoint the fine-tuning runs start from."""
    tmp = tmp_path_factory.mktemp("trained")
    data = two_helices(tmp / "data")
    out = tmp / "run"
    rc = train_cli.main(["--preset", "tiny", "--no-progress", "--data-dir", str(data), "--epochs", "2",
                         "--output-dir", str(out), "--no-tensorboard"])
    assert rc == 0
    return data, out


def test_head_only_finetuning_leaves_every_other_parameter_bit_identical(trained, tmp_path, capsys):
    data, start = trained
    out = tmp_path / "calibrated"
    rc, _, err = run_main(train_cli.main, capsys, "--preset", "tiny", "--no-progress", "--data-dir", data,
                          "--init-from", start, "--trainable", "plddt_head", "--plddt-rollout-steps", "2",
                          "--lr", "0.05", "--epochs", "2", "--output-dir", out, "--no-tensorboard")
    assert rc == 0, err
    before, config, _ = load_for_inference(start)
    after, tuned_config, info = load_for_inference(out)
    assert info["step"] == 4  # step 0 of its own: 2 proteins x 2 epochs, not the start's steps on top
    assert tuned_config.plddt_rollout_steps == 2 and config.plddt_rollout_steps == 0
    before, after = _leaves(before), _leaves(after)
    assert before.keys() == after.keys()
    head = [k for k in before if k.startswith("['confidence_head']")]
    assert head and any(not np.array_equal(before[k], after[k]) for k in head)
    for key in before.keys() - set(head):
        assert before[key].tobytes() == after[key].tobytes(), key


def test_init_from_a_checkpoint_of_another_architecture_names_its_path(trained, tmp_path, capsys):
    data, start = trained
    rc, _, err = run_main(train_cli.main, capsys, "--preset", "tiny", "--no-progress", "--data-dir", data,
                          "--init-from", start, "--c-s", "48", "--epochs", "1",
                          "--output-dir", tmp_path / "other", "--no-tensorboard")
    assert rc == 1
    assert str(start / "checkpoints") in err and "do not fit" in err and "48" in err
    rc, _, err = run_main(train_cli.main, capsys, "--preset", "tiny", "--data-dir", data,
                          "--init-from", tmp_path / "nowhere", "--output-dir", tmp_path / "x")
    assert rc == 1 and str(tmp_path / "nowhere") in err


def test_data_mix_draws_each_directory_as_often_as_it_says(tmp_path):
    few, many = tmp_path / "few", tmp_path / "many"
    for directory, count, seed in ((few, 2, 0), (many, 5, 10)):
        directory.mkdir()
        for i in range(count):
            write_pdb(directory / f"{directory.name}{i}.pdb", helix(22 + 2 * i, seed=seed + i, name=f"{directory.name}{i}"))
    config = get_preset("tiny").override(data_dir=(str(few), str(many)), data_mix=(4, 3),
                                         output_dir=str(tmp_path / "out"))
    data = training_data(config, RunOptions(), logging.getLogger("test"))
    plan = data.plan
    entries = plan.cache.entries
    source = {i: Path(entries[i].source).parent.name for i in plan.members}
    assert plan.steps_per_epoch == 7 and "4 of the 2 chains" in plan.describe()
    subsets = set()
    for epoch in range(4):
        drawn = [int(i) for batch in plan.epoch_batches(epoch) for i in batch]
        by_dir = {"few": [i for i in drawn if source[i] == "few"], "many": [i for i in drawn if source[i] == "many"]}
        # The 2 chains of `few` twice each; 3 different chains of the 5 of `many`.
        assert sorted(np.unique(by_dir["few"], return_counts=True)[1]) == [2, 2]
        assert len(by_dir["many"]) == 3 == len(set(by_dir["many"]))
        subsets.add(frozenset(by_dir["many"]))
    assert len(subsets) > 1  # a new subset each epoch
    # A subset each epoch needs one chain per step (else the steps per epoch would vary).
    with pytest.raises(TrainingError, match="one chain per step"):
        training_data(config.override(batch_size=2), RunOptions(), logging.getLogger("test"))


def test_calibrate_preset_and_the_mix_fields_validate():
    calibrate = get_preset("calibrate")
    assert calibrate.trainable == "plddt_head" and calibrate.model.plddt_rollout_steps > 0
    assert len(calibrate.data_dirs) == len(calibrate.data_mix) == 2 and calibrate.loader == "grain"
    assert calibrate.crop_size >= 76  # the 8 reference proteins (20-76 residues) stay whole
    assert TrainConfig.from_json(calibrate.to_json()) == calibrate
    for changes, word in (({"data_mix": (1, 2, 3)}, "data_mix"), ({"trainable": "trunk"}, "trainable"),
                          ({"loader": "memory", "crop_size": None}, "grain")):
        with pytest.raises(ConfigError, match=word):
            calibrate.override(**changes)
    # The checkpoint's model with the recipe's training-only fields: the parameter tree is the checkpoint's.
    tiny = get_preset("tiny").model
    merged = checkpoint_model_with(tiny, calibrate.model)
    assert merged.c_s == tiny.c_s and merged.plddt_rollout_steps == calibrate.model.plddt_rollout_steps


def test_one_directory_mix_is_an_epoch_of_that_many_of_its_chains(tmp_path):
    """data_mix with one data directory (the `chains_calibrate` recipe): each epoch a new seeded
    subset of that many chains, each once; given the prepared cache as the directory too."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        write_pdb(data / f"H{i}.pdb", helix(22 + 2 * i, seed=i, name=f"H{i}"))
    config = get_preset("tiny").override(data_dir=str(data), data_mix=(3,), output_dir=str(tmp_path / "out"))
    plan = training_data(config, RunOptions(), logging.getLogger("test")).plan
    assert plan.steps_per_epoch == 3 and "3 of the 5 chains" in plan.describe()
    epochs = [sorted(int(i) for batch in plan.epoch_batches(e) for i in batch) for e in range(4)]
    assert all(len(set(drawn)) == 3 for drawn in epochs) and len({tuple(d) for d in epochs}) > 1
    # The cache the first run prepared, given as the data directory, mixes the same way.
    cached = config.override(data_dir=str(tmp_path / "out" / "data_cache"), output_dir=str(tmp_path / "out2"))
    again = training_data(cached, RunOptions(), logging.getLogger("test")).plan
    assert again.steps_per_epoch == 3 and [sorted(map(int, np.concatenate(again.epoch_batches(e))))
                                           for e in range(4)] == epochs


def test_chains_calibrate_preset_fine_tunes_the_head_at_full_length():
    recipe, chains = get_preset("chains_calibrate"), get_preset("chains")
    assert recipe.trainable == "plddt_head" and recipe.init_from == chains.output_dir
    assert recipe.crop_size > chains.crop_size and max(recipe.buckets) == recipe.crop_size
    assert recipe.data_dirs == ("../shared/data/chains/train",) and len(recipe.data_mix) == 1
    assert recipe.model.plddt_rollout_steps == chains.model.plddt_rollout_steps
    assert TrainConfig.from_json(recipe.to_json()) == recipe
