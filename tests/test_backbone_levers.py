"""The default recipe's whole-backbone levers (issue 11, stage 2): CA-trace rotation base,
global translation update, backbone FAPE, and the structure-aware pLDDT head trained on lDDT-Cα.
Each is a ModelConfig field; with the reference's values the old computation is kept (checked
in tests/test_diffusion_fixes.py::test_fields_off_compute_the_old_loss_exactly)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.evaluation.metrics import lddt_ca as lddt_ca_numpy
from nanoaf2_jax.evaluation.scoring import pearson_r, plddt_calibration
from nanoaf2_jax.geometry.rigid import (Rigid, backbone_from_frames, ca_trace_rotations,
                                        frames_from_backbone, quaternion_to_rotation)
from nanoaf2_jax.inference.sampling import draw_sample_noise, sample_jit
from nanoaf2_jax.model.alphafold2 import AlphaFold2, init_params
from nanoaf2_jax.model.convert import tensors_beyond_reference
from nanoaf2_jax.model.losses import fape, lddt_ca
from nanoaf2_jax.model.model_config import MODEL_PRESETS, ModelConfig
from nanoaf2_jax.training.train_step import draw_train_noise, loss_fn, nn_apply

from helpers import helix

# Every lever of this file on, whatever the presets choose.
TINY = dataclasses.replace(MODEL_PRESETS["tiny"], rotation_update="quaternion", translation_update="global",
                           rotation_base="ca_trace", rotation_head="local_geometry", fape_atoms="backbone",
                           plddt_head="structure", plddt_target="lddt_ca")


def _random_rotation(seed):
    return quaternion_to_rotation(jnp.asarray(np.random.default_rng(seed).normal(size=4), jnp.float32))


def _walk(rng, B, L):
    return jnp.asarray(np.cumsum(rng.normal(size=(B, L, 3)) * 2.2, axis=1), jnp.float32)


def _batch(rng, B=2, L=16, pad=0):
    p = [helix(L - pad, seed=s) for s in range(B)]

    def stack(key):
        return np.stack([np.concatenate([getattr(x, key), np.zeros((pad, *getattr(x, key).shape[1:]), getattr(x, key).dtype)])
                         for x in p])

    mask = np.zeros((B, L), bool)
    mask[:, :L - pad] = True
    return {"sequence": jnp.asarray(stack("sequence")), "mask": jnp.asarray(mask),
            **{k: jnp.asarray(stack(k) + rng.normal(size=(B, L, 3)).astype(np.float32) * 0.3 * mask[..., None])
               for k in ("coords_N", "coords_CA", "coords_C")}}


# ---------------------------------------------------------------------------------------------
# CA-trace frames
# ---------------------------------------------------------------------------------------------


def test_ca_trace_rotations_are_rotations_built_from_the_neighbours():
    ca = _walk(np.random.default_rng(0), 2, 9)
    R = np.asarray(ca_trace_rotations(ca), np.float64)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    inner = frames_from_backbone(ca[:, :-2], ca[:, 1:-1], ca[:, 2:]).rots
    np.testing.assert_allclose(R[:, 1:-1], inner, atol=1e-6)
    np.testing.assert_array_equal(R[:, 0], R[:, 1])  # chain ends: their inner neighbour's frame
    np.testing.assert_array_equal(R[:, -1], R[:, -2])


def test_ca_trace_rotations_are_equivariant_and_ignore_padding():
    rng = np.random.default_rng(1)
    ca = _walk(rng, 1, 10)
    Q = _random_rotation(2)
    moved = ca @ Q.T + jnp.asarray([5.0, -3.0, 9.0])
    np.testing.assert_allclose(ca_trace_rotations(moved), Q @ ca_trace_rotations(ca), atol=2e-5)
    # Seven real residues followed by padding (all at one point, as zero padding is): the real
    # residues' frames are those of the unpadded chain, and gradients stay finite.
    mask = jnp.asarray([[True] * 7 + [False] * 3])
    padded = ca.at[:, 7:].set(0.0)
    np.testing.assert_allclose(ca_trace_rotations(padded, mask)[:, :7], ca_trace_rotations(ca[:, :7]), atol=1e-6)
    grad = jax.grad(lambda x: jnp.sum(ca_trace_rotations(x, mask) ** 2 * jnp.arange(9.0).reshape(3, 3)))(padded)
    assert np.all(np.isfinite(grad))
    # Fewer than three real residues: no frame can be built, the identity is returned.
    tiny_mask = jnp.asarray([[True, True] + [False] * 8])
    np.testing.assert_array_equal(ca_trace_rotations(padded, tiny_mask)[0, 0], np.eye(3))


def test_ca_trace_frame_of_a_helix_is_a_constant_offset_from_the_backbone_frame():
    """Why the base helps: on a regular helix the N-CA-C frame is the CA-trace frame times one
    fixed rotation, so a correction the denoiser learns once applies to every residue."""
    # An α-helix as a screw (100° and 1.5 Å per residue) applied to one residue's N, CA, C.
    residue = np.asarray([[1.70, -1.30, -0.60], [2.30, 0.0, 0.0], [1.60, 1.05, 0.85]])
    turns = np.deg2rad(100.0) * np.arange(12)
    screw = np.stack([np.stack([np.cos(turns), -np.sin(turns), 0 * turns], -1),
                      np.stack([np.sin(turns), np.cos(turns), 0 * turns], -1),
                      np.broadcast_to([0.0, 0.0, 1.0], (12, 3))], -2)
    atoms = np.einsum("kij,aj->kai", screw, residue) + np.stack([0 * turns, 0 * turns, 1.5 * np.arange(12)], -1)[:, None]
    N, CA, C = (jnp.asarray(atoms[:, a], jnp.float32) for a in range(3))
    true = frames_from_backbone(N, CA, C).rots
    trace = ca_trace_rotations(CA)
    offset = np.asarray(jnp.swapaxes(trace, -1, -2) @ true, np.float64)[1:-1]
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-4)
    assert not np.allclose(offset[0], np.eye(3), atol=0.1)  # a real correction to learn


# ---------------------------------------------------------------------------------------------
# The denoiser's update
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("translation_update", ["local", "global"])
@pytest.mark.parametrize("rotation_base", ["noisy", "ca_trace"])
def test_untrained_denoiser_keeps_the_noisy_translations_and_builds_its_base(translation_update, rotation_base):
    config = dataclasses.replace(TINY, translation_update=translation_update, rotation_base=rotation_base)
    params = init_params(config, jax.random.PRNGKey(0))
    rng = np.random.default_rng(3)
    seq = jnp.asarray(rng.integers(0, 20, (1, 10)))
    noisy = Rigid(_random_rotation(4) @ jnp.broadcast_to(jnp.eye(3), (1, 10, 3, 3)), _walk(rng, 1, 10))

    def run(m):
        single, pair = m.trunk(seq, jnp.arange(10)[None])
        return m.diffusion_module(noisy, jnp.asarray([0.5]), single, pair)

    pred = nn_apply(AlphaFold2(config), params, run)
    np.testing.assert_array_equal(pred.trans, noisy.trans)  # zero-initialised output
    expected = ca_trace_rotations(noisy.trans) if rotation_base == "ca_trace" else noisy.rots
    np.testing.assert_allclose(pred.rots, expected, atol=1e-6)


def test_rotation_update_learns_from_zero_and_the_plddt_loss_moves_only_its_head():
    """From the zero initialisation the rotation update gets a gradient, from the rotation MLP
    and from output_proj's rotation rows alike (the reference's Rodrigues map: exactly none,
    test_diffusion_fixes). The structure head's inputs are detached: the pLDDT loss moves the
    head and nothing else."""
    params = init_params(TINY, jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(5))
    noise = draw_train_noise(jax.random.PRNGKey(6), 2, 16)

    def losses(p):
        total, metrics = loss_fn(p, batch, noise, TINY, True)
        return jnp.stack([total, metrics["plddt_loss"]])

    _, backward = jax.vjp(losses, params)
    g_total, = backward(jnp.asarray([1.0, 0.0]))
    g_plddt, = backward(jnp.asarray([0.0, 1.0]))
    last = g_total["diffusion_module"]["rotation_mlp_4"]  # zero-initialised: the update's output
    assert np.abs(last["kernel"]).max() > 1e-4 and np.abs(last["bias"]).max() > 1e-4
    shared = dataclasses.replace(TINY, rotation_head="output_proj")
    g = jax.grad(lambda p: loss_fn(p, batch, noise, shared, True)[0])(init_params(shared, jax.random.PRNGKey(0)))
    g = g["diffusion_module"]["output_proj"]
    assert np.abs(g["kernel"][:, :3]).max() > 1e-4 and np.abs(g["bias"][:3]).max() > 1e-4
    for name, sub in g_plddt.items():
        largest = max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(sub))
        if name == "confidence_head":
            assert largest > 1e-4
        else:
            assert largest == 0.0, name


# ---------------------------------------------------------------------------------------------
# Backbone FAPE
# ---------------------------------------------------------------------------------------------


def _frames_and_atoms(rng, B, L):
    ca = _walk(rng, B, L)
    frames = frames_from_backbone(ca + jnp.asarray(rng.normal(size=ca.shape), jnp.float32), ca,
                                  ca + jnp.asarray(rng.normal(size=ca.shape), jnp.float32))
    return frames, jnp.concatenate(backbone_from_frames(frames), axis=1)


def test_backbone_fape_is_zero_for_equal_structures_and_invariant_to_rigid_motion():
    rng = np.random.default_rng(7)
    f1, a1 = _frames_and_atoms(rng, 1, 12)
    f2, a2 = _frames_and_atoms(rng, 1, 12)
    assert float(fape(f1, f1, a1, a1)) < 1e-3
    Q, s = _random_rotation(8), jnp.asarray([3.0, 1.0, -7.0])
    moved = Rigid(Q @ f2.rots, f2.trans @ Q.T + s)
    np.testing.assert_allclose(fape(f1, moved, a1, a2 @ Q.T + s), fape(f1, f2, a1, a2), rtol=1e-5)


def test_backbone_fape_point_mask_excludes_padded_atoms():
    rng = np.random.default_rng(9)
    f1, a1 = _frames_and_atoms(rng, 1, 10)
    f2, a2 = _frames_and_atoms(rng, 1, 10)
    mask = jnp.asarray([[True] * 7 + [False] * 3])

    def real(f, a):  # the first 7 residues: frames [:7], atoms N, CA, C of residues 0..6
        return Rigid(f.rots[:, :7], f.trans[:, :7]), jnp.concatenate([a[:, k * 10:k * 10 + 7] for k in range(3)], 1)

    expected = fape(*real(f1, a1)[:1], *real(f2, a2)[:1], real(f1, a1)[1], real(f2, a2)[1])
    got = fape(f1, f2, a1, a2, mask, point_mask=jnp.tile(mask, (1, 3)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# pLDDT: lDDT-Cα targets and the structure head
# ---------------------------------------------------------------------------------------------


def test_training_lddt_ca_equals_the_evaluation_lddt_ca():
    rng = np.random.default_rng(10)
    true = _walk(rng, 2, 20)
    pred = true + jnp.asarray(rng.normal(size=true.shape) * 1.5, jnp.float32)
    mask = jnp.asarray(np.arange(20)[None] < np.asarray([[20], [14]]))
    ours = np.asarray(lddt_ca(pred, true, mask))
    for b, n in enumerate((20, 14)):
        ref = lddt_ca_numpy(np.asarray(pred[b, :n]), np.asarray(true[b, :n]))[1]
        np.testing.assert_allclose(ours[b, :n], np.where(np.isnan(ref), 1.0, ref), atol=1e-6)
    assert 0.2 < ours.mean() < 0.9  # a partly right structure, not a degenerate case


def test_structure_head_gives_each_sample_its_own_plddt():
    L, n = 12, 3
    seq = jnp.asarray(np.random.default_rng(13).integers(0, 20, L))
    noise = draw_sample_noise(jax.random.PRNGKey(14), n, L, 4)
    for config, differ in ((TINY, True), (dataclasses.replace(TINY, plddt_head="single"), False)):
        params = init_params(config, jax.random.PRNGKey(0))
        params = jax.tree_util.tree_map(  # untrained heads end in zeros: give them some weight
            lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape), params)
        plddt = np.asarray(sample_jit(params, seq, noise, config)["plddt"])
        assert plddt.shape == (n, L)
        assert (np.abs(plddt[0] - plddt[1]).max() > 1e-4) == differ


def test_export_names_the_tensors_the_reference_cannot_hold():
    extra = tensors_beyond_reference(TINY)
    assert {n.split(".")[0] for n in extra} == {"confidence_head", "diffusion_module"}
    assert all(n.startswith(("confidence_head.", "diffusion_module.rotation_")) for n in extra)
    assert tensors_beyond_reference(ModelConfig()) == []
    plain = dataclasses.replace(TINY, plddt_head="single", rotation_head="output_proj")
    assert tensors_beyond_reference(plain) == []


def test_plddt_calibration_and_pearson():
    rng = np.random.default_rng(15)
    native = np.cumsum(rng.normal(size=(15, 3)) * 2.2, axis=0)
    preds = np.stack([native + rng.normal(size=native.shape) * s for s in (0.2, 3.0)])
    per_res = np.stack([lddt_ca_numpy(p, native)[1] for p in preds])
    out = plddt_calibration(per_res, preds, native)  # a pLDDT equal to the truth
    assert abs(out["plddt_error"]) < 1e-3
    np.testing.assert_allclose([s["mean_plddt"] for s in out["samples"]], 100 * per_res.mean(1), atol=1e-6)
    assert pearson_r(per_res.ravel(), per_res.ravel()) == pytest.approx(1.0)
    assert np.isnan(pearson_r([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    flat = plddt_calibration(np.full_like(per_res, 0.9), preds, native)
    assert flat["plddt_error"] == pytest.approx(90 - 100 * np.nanmean(per_res), abs=1e-6)


def test_sample_agreement_is_high_where_samples_agree_and_tracks_the_error():
    from nanoaf2_jax.evaluation.scoring import sample_agreement

    rng = np.random.default_rng(16)
    native = np.cumsum(rng.normal(size=(30, 3)) * 2.2, axis=0)
    assert sample_agreement(native[None]) is None  # one sample: nothing to agree with
    same = sample_agreement(np.stack([native, native + 5.0, native]))  # a shift changes no distance
    np.testing.assert_allclose(same, 100.0)
    # Three samples: exact on residues 0-14, scattered by 3 Å elsewhere, each its own way. The
    # agreement is high on the first half, low on the second, as is each sample's true lDDT-Cα.
    noise = np.zeros((3, 30, 3))
    noise[:, 15:] = rng.normal(size=(3, 15, 3)) * 3.0
    preds = native + noise
    agreement = sample_agreement(preds)
    assert agreement.shape == (3, 30)
    assert agreement[:, :15].mean() > agreement[:, 15:].mean() + 20
    truth = np.stack([lddt_ca_numpy(p, native)[1] for p in preds])
    assert pearson_r(agreement.ravel(), truth.ravel()) > 0.8
    # Sample 0 against samples 1 and 2: the mean of its per-residue lDDT-Cα against each.
    expected = (lddt_ca_numpy(preds[0], preds[1])[1] + lddt_ca_numpy(preds[0], preds[2])[1]) / 2
    np.testing.assert_allclose(agreement[0], 100 * expected, atol=1e-9)
    out = plddt_calibration(truth, preds, native)
    np.testing.assert_allclose(out["samples"][1]["agreement_per_residue"], agreement[1], atol=0.006)


# ---------------------------------------------------------------------------------------------
# The translation reverse step
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_with_a_perfect_denoiser_keeps_the_forward_marginal(eta):
    """DDIM(η) is built so that, given x_0, x_t ~ q(x_t | x_0) stepped to t_next is distributed as
    q(x_next | x_0) = N(sqrt(ᾱ_next) x_0, (1 - ᾱ_next) I) for every η. 200,000 draws: the mean
    and standard deviation are then known to ±0.3% (4.5 standard errors)."""
    from nanoaf2_jax.diffusion.se3 import r3_alpha_bar, r3_forward_marginal, r3_reverse_step

    n, x0 = 200_000, jnp.asarray([0.7, -1.2, 0.3])
    k1, k2 = jax.random.split(jax.random.PRNGKey(16))
    for t_now, t_next in ((0.9, 0.8), (0.3, 0.25)):
        x_t = r3_forward_marginal(jnp.broadcast_to(x0, (n, 3)), jnp.full((n,), t_now), jax.random.normal(k1, (n, 3)))
        x_next = r3_reverse_step(x_t, x0, t_now, t_next, jax.random.normal(k2, (n, 3)), eta)
        ab = float(r3_alpha_bar(t_next))
        np.testing.assert_allclose(np.mean(x_next, 0), np.sqrt(ab) * x0, atol=0.003 * 3)
        np.testing.assert_allclose(np.std(x_next, 0), np.sqrt(1 - ab), rtol=0.003 * 1.5)


def test_reverse_step_noise_enters_only_with_eta():
    from nanoaf2_jax.diffusion.se3 import r3_alpha_bar, r3_reverse_step

    rng = np.random.default_rng(17)
    x_t, x0, z1, z2 = (jnp.asarray(rng.normal(size=(5, 3)), jnp.float32) for _ in range(4))
    np.testing.assert_array_equal(r3_reverse_step(x_t, x0, 0.6, 0.5, z1, 0.0), r3_reverse_step(x_t, x0, 0.6, 0.5, z2, 0.0))
    diff = r3_reverse_step(x_t, x0, 0.6, 0.5, z1, 1.0) - r3_reverse_step(x_t, x0, 0.6, 0.5, z2, 1.0)
    a_now, a_next = float(r3_alpha_bar(0.6)), float(r3_alpha_bar(0.5))
    posterior_sd = np.sqrt((1 - a_next) / (1 - a_now) * (1 - a_now / a_next))  # DDPM's β̃
    np.testing.assert_allclose(diff, posterior_sd * (z1 - z2), rtol=1e-4, atol=1e-6)
    # The last step lands on the prediction's mean, noise-free, whatever η.
    np.testing.assert_array_equal(r3_reverse_step(x_t, x0, 0.01, 0.0, z1, 1.0), r3_reverse_step(x_t, x0, 0.01, 0.0, z2, 1.0))
    # eta None is the reference's step: its noise term is the clamp's sqrt(1e-8).
    ref = r3_reverse_step(x_t, x0, 0.6, 0.5, z1) - r3_reverse_step(x_t, x0, 0.6, 0.5, z2)
    np.testing.assert_allclose(ref, 1e-4 * (z1 - z2), atol=1e-6)  # float32 ulp of x ~ 1: 1.2e-7
