"""Training-objective levers of the default recipe: diffusion multiplicity (several noise
samples per trunk pass), pLDDT decoys, t = u^k and the peptide-bond term. All are ModelConfig
fields whose reference values (1, off, 1, 0) keep the old draws and the old loss."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.diffusion.se3 import draw_frame_noise
from nanoaf2_jax.geometry.rigid import axis_angle_to_rotation
from nanoaf2_jax.model.alphafold2 import init_params
from nanoaf2_jax.model.losses import PEPTIDE_C_N_LENGTH, peptide_bond_loss, peptide_bond_mask
from nanoaf2_jax.model.model_config import MODEL_PRESETS, ModelConfig
from nanoaf2_jax.training.parallel import accumulated_train_step
from nanoaf2_jax.training.train_step import (DecoyNoise, OptimConfig, TrainNoise, draw_train_noise,
                                             loss_fn, loss_totals, make_optimizer, train_step)

from helpers import helix

# The tiny architecture with the default's levers, the peptide-bond term off: each test turns
# on the lever it is about.
TINY = dataclasses.replace(MODEL_PRESETS["tiny"], peptide_bond_weight=0.0, peptide_bond_start=0.0)
L = 14
# Compiled: one compilation per (config, shape) costs less than op-by-op execution here.
_loss = jax.jit(lambda params, batch, noise, config, totals=None, progress=None:
                loss_fn(params, batch, noise, config, True, totals, None, progress)[1], static_argnums=(3,))


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        params = jax.jit(init_params, static_argnums=(0, 2, 3))(TINY, jax.random.PRNGKey(0), L, jnp.float64)
        rng = np.random.default_rng(1)
        chains = [helix(L, seed=0), helix(L - 4, seed=1)]
        mask = np.zeros((2, L), bool)
        mask[0], mask[1, :L - 4] = True, True

        def stack(key):
            rows = [np.asarray(getattr(c, key)) for c in chains]
            rows = [np.concatenate([r, np.zeros((L - len(r), *r.shape[1:]), r.dtype)]) for r in rows]
            out = np.stack(rows)
            if key != "sequence":  # off-ideal backbones, so that every loss term is non-trivial
                out = (out + rng.normal(size=out.shape) * 0.3 * mask[..., None]).astype(np.float64)
            return jnp.asarray(out)

        batch = {"sequence": stack("sequence"), "mask": jnp.asarray(mask),
                 **{k: stack(k) for k in ("coords_N", "coords_CA", "coords_C")}}
        yield params, batch


def _column(noise: TrainNoise, k: int) -> TrainNoise:
    return TrainNoise(noise.t[:, k], jax.tree_util.tree_map(lambda x: x[:, k], noise.frames))


def test_default_draws_are_unchanged_by_the_new_fields():
    key = jax.random.PRNGKey(7)
    noise = draw_train_noise(key, 3, 5)
    k_t, k_frames = jax.random.split(key)
    np.testing.assert_array_equal(noise.t, jax.random.uniform(k_t, (3,)))
    for a, b in zip(noise.frames, draw_frame_noise(k_frames, (3, 5))):
        np.testing.assert_array_equal(a, b)
    assert noise.decoy is None
    with_decoys = draw_train_noise(key, 3, 5, decoys=True)  # drawn from their own key
    np.testing.assert_array_equal(with_decoys.t, noise.t)
    residues = np.asarray(with_decoys.decoy.residues)
    assert residues.min() >= 0 and residues.max() < 20


def test_multiplicity_is_the_mean_of_its_noise_samples(setup):
    """M noise samples of one trunk pass score exactly as M separate one-sample losses
    averaged: every row keeps its own t, noise and normalisation (padding included)."""
    params, batch = setup
    with jax.enable_x64(True):
        one = dataclasses.replace(TINY, peptide_bond_weight=0.5)
        config = dataclasses.replace(one, diffusion_multiplicity=3)
        noise = draw_train_noise(jax.random.PRNGKey(3), 2, L, jnp.float64, multiplicity=3)
        joint = _loss(params, batch, noise, config)
        parts = [_loss(params, batch, _column(noise, k), one) for k in range(3)]
        # The same with the batch's loss denominators given (gradient accumulation's path).
        with_totals = _loss(params, batch, noise, config, loss_totals(batch["mask"]))
    for name in ("trans_loss", "rot_loss", "fape_loss", "plddt_loss", "peptide_bond_loss", "loss"):
        expected = np.mean([float(p[name]) for p in parts])
        np.testing.assert_allclose(float(joint[name]), expected, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(float(with_totals[name]), expected, rtol=1e-12, err_msg=name)
    # The samples differ, so the test would see a sample dropped or duplicated.
    assert np.ptp([float(p["fape_loss"]) for p in parts]) > 1e-3


def _decoy(noise: TrainNoise, fraction, residues) -> TrainNoise:
    d = noise.decoy
    return noise._replace(decoy=DecoyNoise(jnp.full_like(d.fraction, fraction), d.replace_u,
                                           jnp.full_like(d.residues, residues), d.frames))


def test_decoys_train_only_the_plddt_head(setup):
    params, batch = setup
    config = dataclasses.replace(TINY, plddt_decoys=True)
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(5), 2, L, jnp.float64, decoys=True)
        grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, noise, config, True)[1]["plddt_decoy_loss"]))(params)
        with_decoys = _loss(params, batch, noise, config)
        without = _loss(params, batch, noise._replace(decoy=None), TINY)
        # Under gradient accumulation the decoy term divides by the whole batch's residues.
        with_totals = _loss(params, batch, noise, config, loss_totals(batch["mask"]))
    norms = {name: sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree_util.tree_leaves(tree))
             for name, tree in grads.items()}
    assert norms.pop("confidence_head") > 0
    assert all(v == 0.0 for v in norms.values()), norms
    # The structure's losses are untouched; pLDDT's is the mean of the real and decoy rows'.
    for name in ("trans_loss", "rot_loss", "fape_loss"):
        assert float(with_decoys[name]) == float(without[name])
    np.testing.assert_allclose(float(with_decoys["plddt_loss"]),
                               0.5 * (float(without["plddt_loss"]) + float(with_decoys["plddt_decoy_loss"])),
                               rtol=1e-12)
    np.testing.assert_allclose(float(with_totals["plddt_decoy_loss"]), float(with_decoys["plddt_decoy_loss"]),
                               rtol=1e-12)


def test_unmutated_decoy_is_the_one_step_prediction_from_t_1(setup):
    """With nothing replaced, a decoy is a training row at t = 1 with the decoy's frame noise;
    with everything replaced its pLDDT loss differs (the sequence reached the trunk)."""
    params, batch = setup
    config = dataclasses.replace(TINY, plddt_decoys=True)
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(6), 2, L, jnp.float64, decoys=True)
        none_replaced = _loss(params, batch, _decoy(noise, 0.0, 0), config)
        all_replaced = _loss(params, batch, _decoy(noise, 1.0, 0), config)
        at_one = TrainNoise(jnp.ones((2,), jnp.float64), noise.decoy.frames)
        row = _loss(params, batch, at_one, TINY)
    np.testing.assert_allclose(float(none_replaced["plddt_decoy_loss"]), float(row["plddt_loss"]), rtol=1e-12)
    assert abs(float(all_replaced["plddt_decoy_loss"]) - float(row["plddt_loss"])) > 1e-6


def test_t_exponent_trains_at_u_to_the_k(setup):
    """train_t_exponent k: the loss at drawn u is the uniform-t loss at t = u^k."""
    params, batch = setup
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(9), 2, L, jnp.float64)
        powered = _loss(params, batch, noise, dataclasses.replace(TINY, train_t_exponent=2.0))
        squared = _loss(params, batch, noise._replace(t=noise.t ** 2), TINY)
        uniform = _loss(params, batch, noise, TINY)
    for name in ("trans_loss", "rot_loss", "fape_loss", "plddt_loss"):
        np.testing.assert_allclose(float(powered[name]), float(squared[name]), rtol=1e-12, err_msg=name)
    assert abs(float(powered["fape_loss"]) - float(uniform["fape_loss"])) > 1e-6


def test_new_fields_validate_and_stay_off_in_reference():
    reference = MODEL_PRESETS["reference"]
    assert reference.diffusion_multiplicity == 1 and not reference.plddt_decoys
    assert reference.train_t_exponent == 1.0 and reference.peptide_bond_weight == 0.0
    with pytest.raises(ValueError, match="peptide_bond_weight"):
        ModelConfig(peptide_bond_weight=-1.0)
    with pytest.raises(ValueError, match="peptide_bond_max_t"):
        ModelConfig(peptide_bond_max_t=0.0)
    with pytest.raises(ValueError, match="peptide_bond_start"):
        ModelConfig(peptide_bond_start=1.0)
    with pytest.raises(ValueError, match="train_t_exponent"):
        ModelConfig(train_t_exponent=0.0)
    with pytest.raises(ValueError, match="diffusion_multiplicity"):
        ModelConfig(diffusion_multiplicity=0)
    with pytest.raises(ValueError, match="plddt_decoys needs plddt_head"):
        ModelConfig(plddt_decoys=True)


def test_accumulated_step_with_multiplicity_equals_the_whole_batch(setup):
    """Gradient accumulation splits the [B, M, ...] noise with its rows and divides every part
    by the whole batch's denominators: two micro-batches make the step one batch makes."""
    params, batch = setup
    config = dataclasses.replace(TINY, diffusion_multiplicity=2, peptide_bond_weight=0.5)
    optimizer = make_optimizer(OptimConfig(warmup_steps=0, total_steps=10))  # lr > 0 at step 0
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(8), 2, L, jnp.float64, 2)
        state = optimizer.init(params)
        p1, _, whole = jax.jit(functools.partial(train_step, config=config, optimizer=optimizer,
                                                 attention_mask=True))(params, state, batch, noise)
        p2, _, parts = jax.jit(functools.partial(accumulated_train_step, config=config, optimizer=optimizer,
                                                 grad_accum=2, attention_mask=True))(params, state, batch, noise)
    for name in ("loss", "fape_loss", "plddt_loss", "peptide_bond_loss", "grad_norm"):
        # float64: the losses agree to ~1e-12, gradients to ~1e-8, because FAPE's
        # sqrt(d² + 1e-8) at each frame's own CA (d ≈ 0) has a derivative of ~5e3 that magnifies
        # the rounding of the two summation orders; a wrong denominator would be off by O(1).
        np.testing.assert_allclose(float(parts[name]), float(whole[name]), rtol=1e-6, err_msg=name)
    moved = 0.0
    for a, b, p0 in zip(*(jax.tree_util.tree_leaves(x) for x in (p1, p2, params))):
        # atol 1e-7: AdamW's first update is lr·g/(|g| + 1e-8), so a parameter whose gradient is
        # near 1e-8 turns the gradients' ~1e-8 rounding into ~1e-8 of its value.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
        moved = max(moved, float(jnp.max(jnp.abs(a - p0))))
    assert moved > 1e-4  # the step did update the parameters


def test_peptide_bond_loss_is_the_mean_c_n_error_over_real_bonds():
    """Mean |C(i)-N(i+1) - 1.329| over the bonds between real, consecutively numbered residues;
    unchanged by a rigid motion of the structure."""
    with jax.enable_x64(True):
        chains = [helix(9, seed=0), helix(9, seed=1, offset=(0.0, 0.0, 0.0))]
        rng = np.random.default_rng(2)
        c = np.stack([p.coords_C for p in chains]).astype(np.float64) + rng.normal(size=(2, 9, 3)) * 0.2
        n = np.stack([p.coords_N for p in chains]).astype(np.float64) + rng.normal(size=(2, 9, 3)) * 0.2
        mask = np.ones((2, 9), bool)
        mask[1, 7:] = False  # padding: row 1 has 7 residues, 6 bonds
        residue_index = np.tile(np.arange(9), (2, 1))
        residue_index[0, 4:] += 10  # a chain break between residues 3 and 4 of row 0
        bonds = peptide_bond_mask(jnp.asarray(mask), jnp.asarray(residue_index))
        loss = float(peptide_bond_loss(jnp.asarray(c), jnp.asarray(n), bonds))
        rot = np.asarray(axis_angle_to_rotation(jnp.asarray([0.3, -1.2, 0.7], jnp.float64)))
        moved = float(peptide_bond_loss(jnp.asarray(c @ rot.T + 5.0), jnp.asarray(n @ rot.T + 5.0), bonds))
    d = np.linalg.norm(n[:, 1:] - c[:, :-1], axis=-1)
    keep = np.ones((2, 8), bool)
    keep[0, 3] = False
    keep[1, 6:] = False
    assert np.array_equal(np.asarray(bonds), keep)
    expected = np.mean(np.abs(d[keep] - PEPTIDE_C_N_LENGTH))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)  # 1e-6: the sqrt(x + 1e-8) smoothing
    np.testing.assert_allclose(moved, loss, rtol=1e-7)
    assert expected > 0.05  # the perturbation moved the bonds off 1.329, so the test can fail


def test_peptide_bond_term_adds_its_weighted_loss_and_trains_the_structure(setup):
    """peptide_bond_weight w: the total gains w × the C-N loss of the one-step prediction, the
    other terms are untouched, and its gradient reaches the denoiser (not the pLDDT head)."""
    params, batch = setup
    config = dataclasses.replace(TINY, peptide_bond_weight=2.0)
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(11), 2, L, jnp.float64)
        on, off = _loss(params, batch, noise, config), _loss(params, batch, noise, TINY)
        grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, noise, config, True)[1]["peptide_bond_loss"]))(params)
    for name in ("trans_loss", "rot_loss", "fape_loss", "plddt_loss"):
        assert float(on[name]) == float(off[name]), name
    assert "peptide_bond_loss" not in off
    np.testing.assert_allclose(float(on["loss"]), float(off["loss"]) + 2.0 * float(on["peptide_bond_loss"]),
                               rtol=1e-12)
    norms = {name: sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree_util.tree_leaves(tree))
             for name, tree in grads.items()}
    assert norms["confidence_head"] == 0.0
    assert norms["diffusion_module"] > 0.0


def test_peptide_bond_max_t_scores_only_low_t_rows_over_every_bond(setup):
    """peptide_bond_max_t: a row with t above it adds nothing to the bond term's sum but its
    bonds stay in the denominator (row 0 at t = 0.05 scores; row 1 at t = 0.9 does not)."""
    params, batch = setup
    cut = dataclasses.replace(TINY, peptide_bond_weight=1.0, peptide_bond_max_t=0.25)
    every_t = dataclasses.replace(cut, peptide_bond_max_t=1.0)
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(12), 2, L, jnp.float64)
        noise = noise._replace(t=jnp.asarray([0.05, 0.9], jnp.float64))
        both = _loss(params, batch, noise, cut)["peptide_bond_loss"]
        unweighted = _loss(params, batch, noise, every_t)["peptide_bond_loss"]
        first = jax.tree_util.tree_map(lambda x: x[:1], (batch, noise))
        row0 = _loss(params, *first, every_t)["peptide_bond_loss"]
    bonds = np.asarray(peptide_bond_mask(batch["mask"])).sum(axis=-1)  # [13, 9]
    np.testing.assert_allclose(float(both), float(row0) * bonds[0] / bonds.sum(), rtol=1e-10)
    assert float(unweighted) > float(both) + 1e-6  # row 1 does count without the cut


def test_peptide_bond_start_turns_the_term_on_late_in_the_run(setup):
    """peptide_bond_start s: before s of the run the total leaves the bond term out (it is
    still logged), from s on it adds it; the trainer's step passes its step / total_steps."""
    params, batch = setup
    late = dataclasses.replace(TINY, peptide_bond_weight=0.5, peptide_bond_start=0.8)
    with jax.enable_x64(True):
        noise = draw_train_noise(jax.random.PRNGKey(13), 2, L, jnp.float64)
        before = _loss(params, batch, noise, late, None, jnp.asarray(0.5))
        after = _loss(params, batch, noise, late, None, jnp.asarray(0.8))
        off = _loss(params, batch, noise, TINY)
    assert float(before["loss"]) == float(off["loss"])
    np.testing.assert_allclose(float(after["loss"]), float(off["loss"]) + 0.5 * float(after["peptide_bond_loss"]),
                               rtol=1e-12)
    assert float(before["peptide_bond_loss"]) == float(after["peptide_bond_loss"]) > 0
