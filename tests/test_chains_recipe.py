"""The many-chain recipe (configs.py `chains`, issue 20): the distogram head and loss, the pLDDT
head trained on rollouts, and checkpoints/evaluation every N steps in the middle of an epoch."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import gemmi
import numpy as np
import pytest

from configs import get_preset
from helpers import FIXTURES, SCHEDULE_STEPS, helix, read_metrics, run_train, two_helices
from nanoaf2_jax.diffusion.se3 import from_diffusion_space
from nanoaf2_jax.geometry.virtual_cb import virtual_cb
from nanoaf2_jax.inference.sampling import SampleNoise, sample
from nanoaf2_jax.model.alphafold2 import AlphaFold2, init_params
from nanoaf2_jax.model.convert import layers_beyond_reference
from nanoaf2_jax.inference.predict import predict_codes
from nanoaf2_jax.model.distogram import DISTOGRAM_EDGES, NUM_DISTOGRAM_BINS, distogram_loss, distogram_targets
from nanoaf2_jax.model.model_config import MODEL_PRESETS
from nanoaf2_jax.training.train_config import ConfigError
from nanoaf2_jax.training.train_step import _rollout_ca, draw_train_noise_for, loss_fn, nn_apply

TINY = MODEL_PRESETS["tiny"]


def _batch(lengths, pad_to):
    rows = [helix(n, seed=i) for i, n in enumerate(lengths)]
    out = {k: np.zeros((len(rows), pad_to, 3), np.float32) for k in ("coords_N", "coords_CA", "coords_C")}
    out["sequence"] = np.zeros((len(rows), pad_to), np.int32)
    out["mask"] = np.zeros((len(rows), pad_to), bool)
    for b, p in enumerate(rows):
        n = len(p.sequence)
        for k in ("coords_N", "coords_CA", "coords_C"):
            out[k][b, :n] = getattr(p, k)
        out["sequence"][b, :n] = p.sequence
        out["mask"][b, :n] = True
    return {k: jnp.asarray(v) for k, v in out.items()}


def test_virtual_cb_lies_on_the_deposited_cb():
    """Ubiquitin's 70 residues with a CB: the virtual one within ~0.13 Å of it on average."""
    st = gemmi.read_structure(str(FIXTURES / "1UBQ.pdb"))
    atoms = np.array([[r[name][0].pos.tolist() for name in ("N", "CA", "C", "CB")]
                      for r in st[0][0] if r.find_atom("CB", "*") and r.find_atom("N", "*")])
    cb = np.asarray(virtual_cb(atoms[:, 0], atoms[:, 1], atoms[:, 2]))
    assert len(atoms) == 70
    assert np.linalg.norm(cb - atoms[:, 3], axis=-1).mean() < 0.2


def test_distogram_loss_scores_the_native_bins_and_ignores_padding():
    batch = _batch([14, 10], 16)
    n, ca, c, mask = batch["coords_N"], batch["coords_CA"], batch["coords_C"], batch["mask"]
    targets = distogram_targets(n, ca, c)
    assert targets.shape == (2, 16, 16) and int(targets.max()) < NUM_DISTOGRAM_BINS
    # Uniform logits: ln(64) per pair; logits peaked on the native's bins: ~0.
    uniform = jnp.zeros((2, 16, 16, NUM_DISTOGRAM_BINS))
    assert float(distogram_loss(uniform, n, ca, c, mask)) == pytest.approx(math.log(NUM_DISTOGRAM_BINS), rel=1e-5)
    peaked = 50.0 * jax.nn.one_hot(targets, NUM_DISTOGRAM_BINS)
    assert float(distogram_loss(peaked, n, ca, c, mask)) < 1e-6
    # Padding's coordinates and logits do not reach the loss.
    moved = {k: batch[k].at[1, 12:].set(99.0) for k in ("coords_N", "coords_CA", "coords_C")}
    noisy = uniform.at[1, 12:].set(7.0).at[1, :, 12:].set(-3.0)
    assert float(distogram_loss(noisy, moved["coords_N"], moved["coords_CA"], moved["coords_C"], mask)) == \
        pytest.approx(math.log(NUM_DISTOGRAM_BINS), rel=1e-5)


# One compiled program per config instead of op-by-op dispatch of every primitive (eagerly, the
# two losses below cost ~20 s of compiling hundreds of single-op programs).
_jitted_loss = jax.jit(loss_fn, static_argnums=(3, 4))


def test_distogram_head_exists_only_when_weighted_and_is_symmetric():
    assert "distogram_head" not in init_params(TINY, jax.random.PRNGKey(0))
    config = dataclasses.replace(TINY, distogram_weight=0.3)
    params = init_params(config, jax.random.PRNGKey(0))
    assert "distogram_head" in params and "distogram_head" in layers_beyond_reference(config)
    batch = _batch([9], 9)
    logits = nn_apply(AlphaFold2(config), params, lambda m: m.distogram_logits(
        m.trunk(batch["sequence"], jnp.arange(9)[None])[1]))
    assert logits.shape == (1, 9, 9, NUM_DISTOGRAM_BINS)
    np.testing.assert_allclose(logits, jnp.swapaxes(logits, 1, 2), atol=1e-6)
    noise = draw_train_noise_for(config, jax.random.PRNGKey(1), 1, 9)
    total, metrics = _jitted_loss(params, batch, noise, config, True)
    base = dataclasses.replace(config, distogram_weight=0.0)
    rest, _ = _jitted_loss({k: v for k, v in params.items() if k != "distogram_head"}, batch, noise, base, True)
    np.testing.assert_allclose(float(total), float(rest) + 0.3 * float(metrics["distogram_loss"]), rtol=1e-5)


def test_rollout_is_what_sampling_gives():
    config = dataclasses.replace(TINY, plddt_rollout_steps=4)
    params = init_params(config, jax.random.PRNGKey(2))
    L = 11
    codes = jnp.asarray(np.arange(L) % 20, jnp.int32)
    noise = draw_train_noise_for(config, jax.random.PRNGKey(3), 1, L).rollout
    model = AlphaFold2(config)

    def cond_of(m):
        single, pair = m.trunk(codes[None], jnp.arange(L)[None])
        return m.condition(single, pair)

    cond = nn_apply(model, params, cond_of)
    rolled = _rollout_ca(model, params, cond, noise, config,
                         lambda f: from_diffusion_space(f, config.coord_scale))[0]
    sampled = sample(params, codes, SampleNoise(noise.start.rot_omega, noise.start.rot_axis, noise.start.trans,
                                                noise.trans_steps), config)["coords_CA"][0]
    # The sampler centres its samples; distances are what lDDT reads.
    def dist(x):
        return np.linalg.norm(np.asarray(x)[:, None] - np.asarray(x)[None], axis=-1)

    np.testing.assert_allclose(dist(rolled), dist(sampled), atol=1e-4)


def test_rollout_plddt_loss_trains_only_the_confidence_head():
    config = dataclasses.replace(TINY, plddt_rollout_steps=3, fape_weight=0.0, trans_weight=0.0,
                                 rot_weight=0.0, peptide_bond_weight=0.0, plddt_weight=1.0)
    params = init_params(config, jax.random.PRNGKey(4))
    batch = _batch([12, 9], 12)
    noise = draw_train_noise_for(config, jax.random.PRNGKey(5), 2, 12)
    # Jitted: eager op-by-op dispatch of the rollout and its backward took ~85 s of CI.
    grad_fn = jax.jit(jax.grad(loss_fn, has_aux=True), static_argnums=(3, 4))
    grads, metrics = grad_fn(params, batch, noise, config, True)
    assert float(metrics["plddt_loss"]) > 0
    norms = {k: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(v))) for k, v in grads.items()}
    assert norms.pop("confidence_head") > 0
    assert all(v == 0.0 for v in norms.values()), norms


def test_chains_preset_and_its_fields():
    chains = get_preset("chains")
    assert chains.model.distogram_weight > 0 and chains.model.plddt_rollout_steps > 0
    assert chains.loader == "grain" and chains.crop_size == max(chains.buckets)
    assert chains.checkpoint_every_steps > 0 and chains.eval_every_steps > 0 and chains.eval_dir
    assert chains.eval_train_proteins is not None
    for changes in ({"checkpoint_every_steps": -1}, {"eval_every_steps": 1.5}, {"eval_train_proteins": -2}):
        with pytest.raises(ConfigError, match=next(iter(changes))):
            chains.override(**changes)
    with pytest.raises(ConfigError, match="plddt_head"):
        get_preset("reference").override(plddt_rollout_steps=2)


def test_mid_epoch_checkpoints_keep_the_data_order_and_resume_exactly(tmp_path, compile_cache):
    """Two proteins, batch 1: an epoch is 2 steps, so checkpoints every 3 steps fall mid-epoch.
    Breaking the epoch for them must not change what is drawn, and resuming from one continues
    as the uninterrupted run does."""
    data = two_helices(tmp_path / "data")
    common = ["--data-dir", str(data), "--epochs", str(SCHEDULE_STEPS // 2), "--log-every", "1",
              "--checkpoint-every", "1000", "--max-steps", "8"]
    plain = tmp_path / "plain"
    run_train(compile_cache, tmp_path, *common, "--output-dir", str(plain))
    # Stopped at 3 and resumed with checkpoints every 3 steps: the resumed run breaks epoch 3
    # in the middle (step 6) for a checkpoint and must draw what the plain run drew.
    resumed = tmp_path / "resumed"
    run_train(compile_cache, tmp_path, *common[:-1], "3", "--checkpoint-every-steps", "3",
              "--output-dir", str(resumed))
    run_train(compile_cache, tmp_path, "--resume", "--output-dir", str(resumed), "--max-steps", "8")
    assert {3, 6} <= {int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit()}
    got, want = read_metrics(resumed), read_metrics(plain)
    assert [r["step"] for r in got] == list(range(1, 9))
    for a, b in zip(got, want):
        for key in ("loss", "fape_loss", "grad_norm", "lr", "epoch"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=f"step {a['step']} {key}")


def test_sampler_returns_the_trunks_contact_map_only_with_a_distogram_head():
    """evaluate scores the trunk's contacts (the distogram head's P(CB-CB < 8 Å)) beside the
    sampled structure's: the map comes with the samples, one per sequence, padding cut away."""
    config = dataclasses.replace(TINY, distogram_weight=0.3)
    params = init_params(config, jax.random.PRNGKey(6))
    L = 10
    codes = np.arange(L, dtype=np.int32) % 20
    logits = nn_apply(AlphaFold2(config), params, lambda m: m.distogram_logits(
        m.trunk(jnp.asarray(codes)[None], jnp.arange(L)[None])[1]))[0]
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    ends_under_8 = np.append(np.asarray(DISTOGRAM_EDGES) <= 8.0, False)  # bin k ends at edge k; the last is open
    expected = probs[..., ends_under_8].sum(-1)
    for pad_to in (None, 16):
        got = predict_codes(params, config, codes, (0, 0), 2, 3, pad_to=pad_to)["contact_probability"]
        assert got.shape == (L, L)
        np.testing.assert_allclose(got, expected, atol=2e-5)
    no_head = init_params(TINY, jax.random.PRNGKey(6))
    assert "contact_probability" not in predict_codes(no_head, TINY, codes, (0, 0), 1, 3)
