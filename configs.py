"""Named training recipes: `reference` (the PyTorch train.py exactly), `default` (same model and
hyperparameters, but padding masked out of attention and proteins padded to length buckets)
`chains` (thousands of chains), `chains_calibrate` (its pLDDT head at full length, a second
stage), `calibrate` (a trained `default` model's pLDDT head alone, issue 20) and `tiny` (a small
model for smoke runs and tests).

A recipe is a frozen `TrainConfig` (nanoaf2_jax/training/train_config.py); `get_preset(name)`
returns one and `dataclasses.replace` (or `TrainConfig.override`) derives variants. Everything
here is plain data: the library never imports this file, and the training loop lives in
nanoaf2_jax/training/trainer.py.
"""

from __future__ import annotations

from nanoaf2_jax.model.model_config import MODEL_PRESETS
from nanoaf2_jax.training.train_config import ConfigError, Optimisation, TrainConfig

_REFERENCE = TrainConfig(
    model=MODEL_PRESETS["reference"],
    pad_to=200,
    buckets=None,
    attention_mask=False,
    keep_checkpoints=3,  # the reference keeps every checkpoint; ours also hold optimiser state
    eval_every_epochs=0,  # the reference's train.py does not sample while training
    output_dir="outputs/reference",
)

# Issue 13's data pipeline (docs/data.md): a cache read through Grain, chains longer than the
# largest bucket cropped instead of dropped, modified residues kept as their parent, and the
# file's residue numbering in the relative-position features. The reference keeps its own.
_DATA = dict(loader="grain", crop_size=200, file_numbering=True, modified_residues=True)

# The diffusion fixes of issue 11 are model fields (they shape sampling too): see
# MODEL_PRESETS["default"] in nanoaf2_jax/model/model_config.py.
# 600 epochs: the whole run fits the 30 minutes the recipe is meant to take on a 2-core CPU
# (docs/accuracy.md has its scores and the ablations).
_DEFAULT = TrainConfig(model=MODEL_PRESETS["default"], epochs=600, **_DATA)

# Small enough that a CPU step takes milliseconds. The higher lr makes a single short protein
# overfit in a few hundred steps (tests/test_training.py relies on it).
_TINY = TrainConfig(
    model=MODEL_PRESETS["tiny"],  # the package names each preset's architecture (state_dicts)
    optimisation=Optimisation(lr=1e-2),
    epochs=20,
    log_every=10,
    checkpoint_every_epochs=5,
    eval_every_epochs=0,  # smoke runs: no sampling unless asked (--eval-every)
    output_dir="outputs/tiny",
    **_DATA,
)

# Thousands of chains (../shared/data/chains/train, issue 20; docs/generalisation.md). On a 2-core
# CPU the train step of the 8.8M-parameter model is ~8x slower at 128 residues than at 64 (its
# triangular updates and attentions grow as L^3), so the recipe crops to 64 residues (spatial
# crops keep residues far apart in sequence that pack together) and sees every chain once.
# One epoch (5,283 steps), not two: the run must fit 2 hours *beside other work* on this CPU,
# where a step takes 0.8-1.3 s (0.5-0.6 s alone); `--epochs 2` is the longer run. Chains under
# 64 residues share a step (a token budget of 64). Learning rate 1e-3 (AlphaFold 2's) with a
# 500-step warmup: many different chains give noisier gradients than eight memorised ones.
# Checkpoints and a small evaluation on held-out chains every few hundred steps. Spatial crops
# only (the 64 residues nearest a random one): over the whole epoch lDDT-Cα +0.011 and long-range
# P@L/5 +0.006 on the 150 `val` chains against half spatial, half contiguous; the worse per-residue
# ranking of its pLDDT (r 0.36 against 0.41) is what the second stage, `chains_calibrate`, mends
# (0.42). docs/generalisation.md.
_CHAINS = TrainConfig(
    model=MODEL_PRESETS["chains"],
    optimisation=Optimisation(lr=1e-3, warmup_steps=500),
    epochs=1,
    buckets=(32, 48, 64),
    batch_tokens=64,
    checkpoint_every_epochs=1,
    checkpoint_every_steps=500,
    eval_every_epochs=0,
    eval_every_steps=1000,
    eval_steps=25,
    eval_max_proteins=6,
    eval_train_proteins=2,
    eval_dir="../shared/data/chains/val",
    output_dir="outputs/chains",
    spatial_crop_fraction=1.0,
    **dict(_DATA, crop_size=64),
)

# Honest confidence for the eight-protein model (issue 20; docs/generalisation.md). `default`
# folds its 8 training proteins to ~0.1 Å, but its pLDDT says ~99.9 on proteins it never saw
# too: its head was trained only on proteins the model knows. This recipe fine-tunes that head
# alone from a trained checkpoint (--init-from; the model is the checkpoint's) on what sampling
# really gives: 10-step rollouts scored by their lDDT-Cα (as `chains`), for the 8 proteins
# (high targets) and for unseen chains (low ones). Every other parameter stays bit-identical, so
# every sampled structure, and the training proteins' accuracy, is unchanged by construction.
# Per epoch 48 chains from each directory (the 8 proteins 6 times each, a new subset of the
# chains each epoch), so the 8 are not drowned by thousands; chains cropped to 128 residues, the
# 8 (20-76 residues) whole; one chain per step. One trunk sample per step (multiplicity 1):
# the one-step denoising losses train nothing here. lr 1e-3 with a short warmup: a small head
# on a frozen trunk. Sized for ~10-15 minutes on a 2-core CPU (not yet measured on a trained
# `default` checkpoint).
_CALIBRATE = TrainConfig(
    model=MODEL_PRESETS["calibrate"],  # default's, with plddt_rollout_steps 10 and multiplicity 1
    optimisation=Optimisation(lr=1e-3, warmup_steps=20),
    trainable="plddt_head",
    epochs=3,
    # Two padded lengths, two compilations: the step (a 10-step rollout of the 8.8M-parameter
    # model) took 3 minutes to compile per bucket on the loaded 2-core CPU, so six buckets would
    # spend the run's budget compiling. The 8 proteins (20-76 residues) all fit 80.
    buckets=(80, 128),
    data_dir=("../shared/data/pdb", "../shared/data/chains/train"),
    data_mix=(48, 48),
    checkpoint_every_epochs=1,
    eval_every_epochs=0,  # sampling is unchanged; score the confidence with evaluate afterwards
    log_every=16,
    output_dir="outputs/default_calibrated",
    **dict(_DATA, crop_size=128),
)

# The `chains` model's pLDDT head at the lengths it is asked about (issue 20; docs/generalisation.md,
# "Confidence at full length"). `chains` trains on 64-residue crops, so its head has only seen
# rollouts of 64 residues, while `sample.py` and `evaluate` fold whole chains (most of `val` is
# 100-200 residues). This second stage fine-tunes the head alone (every other parameter
# bit-identical, so every sampled structure is unchanged) on 10-step rollouts of chains up to 192
# residues whole, longer ones spatially cropped to 192, one chain per step, 1,200 chains: on the
# 150 `val` chains the per-residue r of pLDDT with lDDT-Cα 0.363 -> 0.425 and the mean
# |pLDDT - 100 lDDT-Cα| 1.8 -> 1.6 (on 50 of them, 400 steps at 192 residues: r 0.474, the same
# 400 steps on 64-residue crops 0.442). On the short `pdb_extra` domains it does worse (r 0.50 ->
# 0.40, gap 2.7 -> 5.4). One trunk sample per step: the one-step losses train nothing here.
# 34 minutes beside other work on the 2-core CPU (~22 alone, estimated from 0.92 steps/s).
_CHAINS_CALIBRATE = TrainConfig(
    model=MODEL_PRESETS["chains_calibrate"],
    optimisation=Optimisation(lr=1e-3, warmup_steps=20),
    trainable="plddt_head",
    init_from="outputs/chains",
    epochs=1,
    data_dir=("../shared/data/chains/train",),
    data_mix=(1200,),  # chains per epoch: the run's length, so the cosine schedule ends with it
    buckets=(64, 128, 192),
    spatial_crop_fraction=1.0,
    checkpoint_every_epochs=1,
    checkpoint_every_steps=400,
    eval_every_epochs=0,  # sampling is unchanged; score the confidence with evaluate afterwards
    log_every=20,
    output_dir="outputs/chains_calibrated",
    **dict(_DATA, crop_size=192),
)

PRESETS: dict[str, TrainConfig] = {"reference": _REFERENCE, "default": _DEFAULT, "chains": _CHAINS,
                                   "tiny": _TINY, "calibrate": _CALIBRATE,
                                   "chains_calibrate": _CHAINS_CALIBRATE}


def get_preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
