"""Issue 11's diffusion fixes, each a ModelConfig field that is off in the reference preset:
translations centred and scaled (center_coords, coord_scale), exact IGSO3 rotation noise with
a uniform-rotation prior (rotation_noise="igso3", rot_sigma_max), and a rotation update that
learns from zero-initialised weights (rotation_update="quaternion").

Sampling tests use Kolmogorov-Smirnov statistics of n = 20000 draws with a fixed seed. The
tolerance 0.0138 is the KS critical value at α = 0.001 (1.949/√n); the quantile table itself is
accurate to |F(Q(u)) - u| < 1e-3 (checked below, ~2.5e-4 measured), far inside it.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.diffusion.se3 import (
    FrameNoise,
    from_diffusion_space,
    igso3_angle_cdf,
    igso3_angle_density,
    igso3_angle_from_uniform,
    igso3_exact_from_normals,
    se3_forward_marginal,
    to_diffusion_space,
    uniform_rotation_angle_cdf,
    uniform_rotation_from_normals,
)
from nanoaf2_jax.geometry.rigid import Rigid, backbone_from_frames, frames_from_backbone, rotation_angle_between
from nanoaf2_jax.inference.sampling import draw_sample_noise, sample_jit
from nanoaf2_jax.model.alphafold2 import init_params
from nanoaf2_jax.model.losses import fape, frame_loss, plddt_loss
from nanoaf2_jax.model.model_config import MODEL_PRESETS, ModelConfig
from nanoaf2_jax.training.train_step import draw_train_noise, loss_fn

N = 20000
KS_TOL = 1.949 / math.sqrt(N)  # α = 0.001

NEW_FIELDS = ("center_coords", "coord_scale", "rotation_noise", "rot_sigma_max", "rotation_update",
              "translation_update", "rotation_base", "rotation_head", "fape_atoms", "plddt_head",
              "plddt_target", "sampling_eta", "diffusion_multiplicity", "plddt_decoys",
              "train_t_exponent", "peptide_bond_weight", "peptide_bond_max_t",
              "peptide_bond_start", "distogram_weight", "plddt_rollout_steps", "self_conditioning")
# The tiny architecture with every issue-11 field at the reference's value.
TINY_REF = dataclasses.replace(MODEL_PRESETS["tiny"], **{f: getattr(ModelConfig(), f) for f in NEW_FIELDS})


def ks_statistic(samples, cdf):
    x = np.sort(np.asarray(samples, np.float64))
    F = cdf(x)
    n = len(x)
    return max(np.max(np.arange(1, n + 1) / n - F), np.max(F - np.arange(n) / n))


def rotation_angles(rots):
    rots = np.asarray(rots, np.float64)
    return np.arccos(np.clip((np.trace(rots, axis1=-2, axis2=-1) - 1) / 2, -1, 1))


def maxwell_cdf(x):
    from math import erf

    x = np.asarray(x, np.float64)
    return np.vectorize(lambda v: erf(v / math.sqrt(2)))(x) - math.sqrt(2 / math.pi) * x * np.exp(-x**2 / 2)


# ---------------------------------------------------------------------------------------------
# The configs
# ---------------------------------------------------------------------------------------------


def test_fields_are_off_by_default_on_in_the_default_preset_and_fixture_configs_load():
    ref = ModelConfig()
    values = lambda c: tuple(getattr(c, f) for f in NEW_FIELDS)  # noqa: E731
    assert values(ref) == (False, 1.0, "reference", 1.5, "rodrigues", "local", "noisy",
                           "output_proj", "ca", "single", "ca_distance", None, 1, False, 1.0, 0.0, 1.0, 0.0,
                           0.0, 0, False)
    assert MODEL_PRESETS["reference"] == ref
    assert values(MODEL_PRESETS["default"]) == (True, 0.1, "igso3", 2.0, "quaternion", "global",
                                                "ca_trace", "output_proj", "ca", "structure",
                                                "lddt_ca", None, 8, False, 1.0, 0.1, 1.0, 0.8,
                                                0.0, 0, False)
    assert MODEL_PRESETS["default"].rot_weight == 0.05 and ref.rot_weight == 0.5
    # A config saved before the fields existed (the fixtures' JSON) is the reference's.
    old = {k: v for k, v in ref.to_dict().items() if k not in NEW_FIELDS}
    assert ModelConfig.from_dict(old) == ref
    assert ref.reference_kwargs() == old
    with pytest.raises(ValueError, match="rotation_noise"):
        ModelConfig(rotation_noise="gaussian")
    with pytest.raises(ValueError, match="coord_scale"):
        ModelConfig(coord_scale=0.0)
    with pytest.raises(ValueError, match="rotation_update"):
        ModelConfig(rotation_update="euler")


# ---------------------------------------------------------------------------------------------
# Translation centring and scaling
# ---------------------------------------------------------------------------------------------


def _chain(rng, B, L, offset=30.0):
    ca = np.cumsum(rng.normal(size=(B, L, 3)) * 2.2, axis=1) + offset
    return ca, ca + rng.normal(size=ca.shape), ca + rng.normal(size=ca.shape)


def test_centring_and_scaling_round_trip_and_ignore_padding():
    rng = np.random.default_rng(0)
    ca, n, c = (jnp.asarray(x) for x in _chain(rng, 2, 10))
    mask = jnp.asarray(np.arange(10)[None] < np.array([[10], [6]]))
    frames = frames_from_backbone(n, ca, c)
    diff = to_diffusion_space(frames, mask, center=True, scale=0.1)
    back = from_diffusion_space(diff, 0.1)
    centroid = (np.asarray(ca) * np.asarray(mask)[..., None]).sum(1) / np.asarray(mask).sum(1)[:, None]
    expected = (np.asarray(ca) - centroid[:, None]) * np.asarray(mask)[..., None]
    np.testing.assert_allclose(back.trans, expected, atol=1e-5)
    np.testing.assert_allclose(diff.trans, 0.1 * expected, atol=1e-6)
    # The real residues' centroid is the origin; padding sits at the origin; rotations untouched.
    np.testing.assert_allclose(np.asarray(diff.trans)[1, :6].mean(0), 0, atol=1e-6)
    assert np.all(np.asarray(diff.trans)[1, 6:] == 0)
    assert diff.rots is frames.rots
    # Adding the centroid back gives the input itself.
    np.testing.assert_allclose(np.asarray(back.trans)[0] + centroid[0], np.asarray(ca)[0], atol=1e-5)
    # Off: the very same frames.
    assert to_diffusion_space(frames, mask) is not None
    assert np.array_equal(to_diffusion_space(frames, mask).trans, frames.trans)
    assert from_diffusion_space(frames, 1.0) is frames


def _batch(rng, B=2, L=16):
    ca, n, c = _chain(rng, B, L)
    return {"sequence": jnp.asarray(rng.integers(0, 20, (B, L))),
            "mask": jnp.asarray(np.arange(L)[None] < np.array([[L], [L - 5]])),
            "coords_CA": jnp.asarray(ca, jnp.float32), "coords_N": jnp.asarray(n, jnp.float32),
            "coords_C": jnp.asarray(c, jnp.float32)}


def _perturbed_params(config, seed=1, scale=0.05):
    params = init_params(config, jax.random.PRNGKey(0))
    # numpy draws: jax.random.normal eagerly would compile once per distinct leaf shape (~75).
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: x + (scale * rng.standard_normal(x.shape)).astype(x.dtype), params)


def test_fields_off_compute_the_old_loss_exactly():
    """The reference path of loss_fn is the pre-issue-11 computation, bit for bit."""
    from nanoaf2_jax.model.alphafold2 import AlphaFold2
    from nanoaf2_jax.training.train_step import nn_apply, residue_index_of

    config = TINY_REF
    params = _perturbed_params(config)
    batch = _batch(np.random.default_rng(3))
    noise = draw_train_noise(jax.random.PRNGKey(4), 2, 16)
    _, metrics = loss_fn(params, batch, noise, config, True)

    true = frames_from_backbone(batch["coords_N"], batch["coords_CA"], batch["coords_C"])

    def run(m):
        single, pair = m.trunk(batch["sequence"], residue_index_of(batch), batch["mask"])
        noisy = se3_forward_marginal(true, noise.t, noise.frames)
        return m.diffusion_module(noisy, noise.t, single, pair, batch["mask"]), m.plddt_logits(single)

    pred, logits = nn_apply(AlphaFold2(config), params, run)
    _, pred_ca = backbone_from_frames(pred)[:2]
    trans, rot = frame_loss(pred, true, batch["mask"])
    assert np.array_equal(metrics["trans_loss"], trans) and np.array_equal(metrics["rot_loss"], rot)
    assert np.array_equal(metrics["fape_loss"], fape(pred, true, pred_ca, batch["coords_CA"], batch["mask"]))
    assert np.array_equal(metrics["plddt_loss"], plddt_loss(logits, pred_ca, batch["coords_CA"], batch["mask"]))


def test_loss_is_invariant_to_a_global_shift_when_centred():
    """Centring makes the objective independent of where the PDB file put the protein."""
    config = MODEL_PRESETS["tiny"]
    params = _perturbed_params(config)
    batch = _batch(np.random.default_rng(5))
    noise = draw_train_noise(jax.random.PRNGKey(6), 2, 16)
    shifted = dict(batch, **{k: batch[k] + jnp.asarray([50.0, -20.0, 7.0]) for k in ("coords_N", "coords_CA", "coords_C")})
    _, a = loss_fn(params, batch, noise, config, True)
    _, b = loss_fn(params, shifted, noise, config, True)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-5, err_msg=k)


def test_fape_and_trans_loss_spaces():
    """FAPE and the pLDDT targets are in Å, the translation loss in the scaled space. With a
    zero-initialised denoiser (prediction = noisy input) and translation normals scaled by s,
    the noisy frames of coord_scale s are exactly s times those of coord_scale 1: FAPE and the
    pLDDT loss must not change, the translation loss must scale by s²."""
    from nanoaf2_jax.training.train_step import TrainNoise

    one = dataclasses.replace(MODEL_PRESETS["tiny"], coord_scale=1.0)
    tenth = dataclasses.replace(one, coord_scale=0.1)
    params = init_params(one, jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(7))
    noise = draw_train_noise(jax.random.PRNGKey(8), 2, 16)
    scaled = TrainNoise(noise.t, noise.frames._replace(trans=noise.frames.trans * 0.1))
    _, a = loss_fn(params, batch, noise, one, True)
    _, b = loss_fn(params, batch, scaled, tenth, True)
    assert float(a["fape_loss"]) > 0.5  # a real error, not a clamped or vanishing one
    np.testing.assert_allclose(b["fape_loss"], a["fape_loss"], rtol=1e-4)
    np.testing.assert_allclose(b["plddt_loss"], a["plddt_loss"], rtol=1e-4)
    np.testing.assert_allclose(b["trans_loss"], 0.01 * a["trans_loss"], rtol=1e-4)
    np.testing.assert_allclose(b["rot_loss"], a["rot_loss"], rtol=1e-5)


def test_sampled_backbones_are_unscaled_to_angstrom_and_centred():
    """With a zero-initialised denoiser (it returns its input) the diffusion-space trajectory does
    not depend on coord_scale, so the Å output must be exactly 1/scale times larger."""
    base = dataclasses.replace(MODEL_PRESETS["tiny"], center_coords=False)
    params = init_params(base, jax.random.PRNGKey(0))
    noise = draw_sample_noise(jax.random.PRNGKey(1), 2, 12, 8)
    seq = jnp.arange(12) % 20
    one = sample_jit(params, seq, noise, dataclasses.replace(base, coord_scale=1.0))
    tenth = sample_jit(params, seq, noise, dataclasses.replace(base, coord_scale=0.1))
    np.testing.assert_allclose(tenth["coords_CA"], 10.0 * one["coords_CA"], rtol=1e-5, atol=1e-5)
    centred = sample_jit(params, seq, noise, MODEL_PRESETS["tiny"])
    ca = np.asarray(centred["coords_CA"])
    np.testing.assert_allclose(ca.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(ca, np.asarray(tenth["coords_CA"]) - np.asarray(tenth["coords_CA"]).mean(1, keepdims=True), atol=1e-4)
    # N(0, I) in units of 10 Å: a spread of ~10 Å per axis, not ~1 Å.
    assert 4 < ca.std() < 20
    # The sampled frames are rotations and N, C sit at bond length from CA.
    d = np.linalg.norm(np.asarray(centred["coords_N"]) - ca, axis=-1)
    np.testing.assert_allclose(d, 1.458, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Exact IGSO3
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 2.0])
def test_series_density_and_cdf_agree_and_normalise(sigma):
    omega = np.linspace(0, math.pi, 4001)
    p = igso3_angle_density(omega, sigma)
    F = igso3_angle_cdf(omega, sigma)
    assert F[0] == 0 and F[-1] == pytest.approx(1.0, abs=1e-9)
    assert np.all(p > -1e-9)
    np.testing.assert_allclose(np.gradient(F, omega), p, atol=2e-3 * p.max())


@pytest.mark.parametrize("sigma", [0.005, 0.03, 0.2345, 0.77, 1.5, 2.0, 3.3])
def test_quantile_table_inverts_the_cdf(sigma):
    u = np.linspace(0.0005, 0.9995, 999)
    w = np.asarray(igso3_angle_from_uniform(jnp.float32(sigma), jnp.asarray(u, jnp.float32)), np.float64)
    # Below the grid (σ < 0.02) the reference is the small-angle limit: ω/σ ~ Maxwell.
    F = maxwell_cdf(w / sigma) if sigma < 0.02 else igso3_angle_cdf(w, sigma)
    assert np.max(np.abs(F - u)) < 1e-3


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.0])
def test_sampled_igso3_angles_match_the_series_density(sigma):
    k1, k2 = jax.random.split(jax.random.PRNGKey(11))
    rots = jax.jit(igso3_exact_from_normals)(jnp.float32(sigma), jax.random.normal(k1, (N,)), jax.random.normal(k2, (N, 3)))
    angles = rotation_angles(rots)
    assert ks_statistic(angles, lambda x: igso3_angle_cdf(x, sigma)) < KS_TOL
    # and it is not the reference's folded normal, whose angle law differs (visibly at σ ≥ 0.5).
    if sigma >= 0.5:
        from math import erf

        folded = np.vectorize(lambda x: erf(x / (sigma * math.sqrt(2))))
        assert ks_statistic(angles, folded) > 5 * KS_TOL


def test_rotations_are_proper_and_axes_uniform():
    k1, k2 = jax.random.split(jax.random.PRNGKey(12))
    rots = np.asarray(igso3_exact_from_normals(1.0, jax.random.normal(k1, (N,)), jax.random.normal(k2, (N, 3))), np.float64)
    np.testing.assert_allclose(rots @ np.swapaxes(rots, -1, -2), np.broadcast_to(np.eye(3), rots.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rots), 1, atol=1e-5)
    axis = np.stack([rots[:, 2, 1] - rots[:, 1, 2], rots[:, 0, 2] - rots[:, 2, 0], rots[:, 1, 0] - rots[:, 0, 1]], -1)
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    # Uniform on the sphere: each coordinate is U[-1, 1].
    assert ks_statistic(axis[:, 2], lambda z: (z + 1) / 2) < KS_TOL


@pytest.mark.parametrize("sigma", [4.0, 10.0])
def test_large_sigma_approaches_the_uniform_rotation_angle_law(sigma):
    omega = np.linspace(0, math.pi, 1001)
    np.testing.assert_allclose(igso3_angle_density(omega, sigma), (1 - np.cos(omega)) / math.pi, atol=1e-3)
    u = jax.random.uniform(jax.random.PRNGKey(13), (N,))
    angles = np.asarray(igso3_angle_from_uniform(jnp.float32(sigma), u))
    assert ks_statistic(angles, uniform_rotation_angle_cdf) < KS_TOL


def test_small_sigma_below_the_grid_is_the_maxwell_limit():
    sigma = 0.01
    u = jax.random.uniform(jax.random.PRNGKey(14), (N,))
    angles = np.asarray(igso3_angle_from_uniform(jnp.float32(sigma), u))
    assert ks_statistic(angles / sigma, maxwell_cdf) < KS_TOL
    assert np.asarray(igso3_angle_from_uniform(0.0, jnp.float32(0.7))) == 0.0


def test_uniform_prior_rotations_are_haar():
    k1, k2 = jax.random.split(jax.random.PRNGKey(15))
    rots = np.asarray(uniform_rotation_from_normals(jax.random.normal(k1, (N,)), jax.random.normal(k2, (N, 3))), np.float64)
    np.testing.assert_allclose(np.linalg.det(rots), 1, atol=1e-5)
    assert ks_statistic(rotation_angles(rots), uniform_rotation_angle_cdf) < KS_TOL
    # Haar: a fixed vector is carried to a uniform point of the sphere.
    assert ks_statistic(rots[:, 2, 0], lambda z: (z + 1) / 2) < KS_TOL


def test_forward_marginal_uses_the_configured_noise():
    frames = Rigid(jnp.broadcast_to(jnp.eye(3), (1, 5000, 3, 3)), jnp.zeros((1, 5000, 3)))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(16), 3)
    noise = FrameNoise(jax.random.normal(k1, (1, 5000)), jax.random.normal(k2, (1, 5000, 3)), jax.random.normal(k3, (1, 5000, 3)))
    t = jnp.asarray([0.5])
    exact = se3_forward_marginal(frames, t, noise, 2.0, "igso3")
    angle, _ = rotation_angle_between(exact.rots, frames.rots)
    assert ks_statistic(np.asarray(angle[0]), lambda x: igso3_angle_cdf(x, 1.0)) < 1.949 / math.sqrt(5000)
    ref = se3_forward_marginal(frames, t, noise)
    assert np.array_equal(ref.rots, se3_forward_marginal(frames, t, noise, 1.5, "reference").rots)
    with pytest.raises(ValueError, match="rotation_noise"):
        se3_forward_marginal(frames, t, noise, 1.5, "nope")


# ---------------------------------------------------------------------------------------------
# A rotation update that learns
# ---------------------------------------------------------------------------------------------


def test_quaternion_update_is_identity_at_zero_with_a_first_order_term():
    from nanoaf2_jax.geometry.rigid import quaternion_update_to_rotation, skew_symmetric

    np.testing.assert_array_equal(quaternion_update_to_rotation(jnp.zeros(3)), np.eye(3))
    jac = jax.jacfwd(quaternion_update_to_rotation)(jnp.zeros(3))  # [3, 3, 3]
    for i in range(3):
        np.testing.assert_allclose(jac[..., i], 2 * skew_symmetric(jnp.eye(3)[i]), atol=1e-6)
    r = np.asarray(quaternion_update_to_rotation(jnp.asarray([[0.3, -1.2, 2.0], [5.0, 0.1, 0.0]])), np.float64)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(r), 1, atol=1e-6)


@pytest.mark.parametrize("update", ["rodrigues", "quaternion"])
def test_rotation_rows_of_output_proj_learn_only_with_the_quaternion_update(update):
    """From the zero initialisation, the rotation part of output_proj gets a gradient with the
    quaternion update, and exactly none with the reference's Rodrigues map."""
    config = dataclasses.replace(MODEL_PRESETS["tiny"], rotation_update=update)
    params = init_params(config, jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(9))
    noise = draw_train_noise(jax.random.PRNGKey(10), 2, 16)
    # One compiled program: the gradient run op by op compiles ~280 small ones.
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, noise, config, True)[0]))(params)
    g = grads["diffusion_module"]["output_proj"]
    rot = np.concatenate([np.ravel(g["kernel"][:, :3]), np.ravel(g["bias"][:3])])
    trans = np.concatenate([np.ravel(g["kernel"][:, 3:]), np.ravel(g["bias"][3:])])
    assert np.abs(trans).max() > 1e-4
    if update == "quaternion":
        assert np.abs(rot).max() > 1e-4
    else:
        assert np.all(rot == 0)
    # Both read the same parameters: the state_dict layout is the reference's.
    assert g["kernel"].shape[-1] == 6
