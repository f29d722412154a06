"""Properties of the functional core: frames, IGSO3, schedules, FAPE; jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.geometry import rigid
from nanoaf2_jax.diffusion.se3 import (
    igso3_from_normals,
    r3_alpha_bar,
    r3_reverse_step,
    sample_igso3,
    se3_forward_marginal,
    so3_reverse_step,
    draw_frame_noise,
)
from nanoaf2_jax.model.losses import fape, frame_loss, plddt_loss
from nanoaf2_jax.geometry.residue_constants import IDEAL_CA_C_DIST, IDEAL_N_CA_C_ANGLE, IDEAL_N_CA_DIST


def random_rotations(key, shape):
    k1, k2 = jax.random.split(key)
    return igso3_from_normals(10.0, jax.random.normal(k1, shape), jax.random.normal(k2, (*shape, 3)))


def random_frames(key, shape):
    k1, k2 = jax.random.split(key)
    return rigid.Rigid(random_rotations(k1, shape), 5.0 * jax.random.normal(k2, (*shape, 3)))


def random_backbone(key, B, L):
    """A plausible chain: frames along a random walk, atoms from ideal geometry."""
    k1, k2 = jax.random.split(key)
    rots = random_rotations(k1, (B, L))
    steps = 3.8 * jax.random.normal(k2, (B, L, 3)) / jnp.sqrt(3.0)
    return rigid.backbone_from_frames(rigid.Rigid(rots, jnp.cumsum(steps, axis=1)))


def assert_proper_rotations(R, atol=1e-5):
    R = np.asarray(R, np.float64)
    eye = np.broadcast_to(np.eye(3), R.shape)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), eye, atol=atol)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=atol)


def test_rodrigues_gives_proper_rotations_with_the_right_angle():
    v = jax.random.normal(jax.random.PRNGKey(0), (200, 3)) * 2.0
    R = rigid.axis_angle_to_rotation(v)
    assert_proper_rotations(R)
    angle, _ = rigid.rotation_angle_between(R, jnp.broadcast_to(jnp.eye(3), R.shape))
    expected = np.linalg.norm(np.asarray(v), axis=-1)
    expected = np.abs((expected + np.pi) % (2 * np.pi) - np.pi)  # angles wrap at π
    np.testing.assert_allclose(angle, expected, atol=2e-3)
    # The rotation axis is fixed by R.
    np.testing.assert_allclose(rigid.rotate(R, v), v, atol=1e-4)


def test_rodrigues_at_zero_is_identity_with_finite_gradient():
    R = rigid.axis_angle_to_rotation(jnp.zeros(3))
    np.testing.assert_array_equal(R, np.eye(3))
    g = jax.grad(lambda v: jnp.sum(rigid.axis_angle_to_rotation(v) ** 2))(jnp.zeros(3))
    assert np.all(np.isfinite(g))


def test_compose_with_inverse_is_identity_and_apply_agrees():
    f = random_frames(jax.random.PRNGKey(1), (4, 9))
    ident = rigid.compose(f, rigid.invert(f))
    np.testing.assert_allclose(ident.rots, np.broadcast_to(np.eye(3), ident.rots.shape), atol=1e-5)
    np.testing.assert_allclose(ident.trans, 0.0, atol=1e-4)
    g = random_frames(jax.random.PRNGKey(2), (4, 9))
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 9, 3))
    np.testing.assert_allclose(
        rigid.apply(rigid.compose(f, g), x), rigid.apply(f, rigid.apply(g, x)), atol=1e-4
    )


def test_frames_and_backbone_round_trip_on_ideal_geometry():
    N, CA, C = random_backbone(jax.random.PRNGKey(4), 2, 15)
    np.testing.assert_allclose(jnp.linalg.norm(N - CA, axis=-1), IDEAL_N_CA_DIST, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(C - CA, axis=-1), IDEAL_CA_C_DIST, rtol=1e-5)
    cos = jnp.sum((N - CA) * (C - CA), -1) / (IDEAL_N_CA_DIST * IDEAL_CA_C_DIST)
    np.testing.assert_allclose(jnp.arccos(cos), IDEAL_N_CA_C_ANGLE, atol=1e-4)
    frames = rigid.frames_from_backbone(N, CA, C)
    assert_proper_rotations(frames.rots)
    for a, b in zip(rigid.backbone_from_frames(frames), (N, CA, C)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def global_motion(key, x_or_frames):
    R = random_rotations(key, ())
    t = jnp.array([3.0, -7.0, 11.0])
    motion = rigid.Rigid(R, t)
    if isinstance(x_or_frames, rigid.Rigid):
        return rigid.compose(rigid.Rigid(jnp.broadcast_to(R, x_or_frames.rots.shape), jnp.broadcast_to(t, x_or_frames.trans.shape)), x_or_frames)
    return rigid.apply(motion, x_or_frames)


def test_fape_invariant_to_global_rigid_motion_of_each_structure():
    B, L = 2, 12
    true = rigid.frames_from_backbone(*random_backbone(jax.random.PRNGKey(5), B, L))
    pred = rigid.frames_from_backbone(*random_backbone(jax.random.PRNGKey(6), B, L))
    mask = jnp.arange(L)[None, :] < jnp.array([[L], [9]])
    base = fape(pred, true, pred.trans, true.trans, mask, clamp=0.0)
    assert base > 1.0  # different structures: the invariance below is not vacuous
    moved_pred = global_motion(jax.random.PRNGKey(7), pred)
    moved_true = global_motion(jax.random.PRNGKey(8), true)
    for p, t in ((moved_pred, true), (pred, moved_true), (moved_pred, moved_true)):
        np.testing.assert_allclose(fape(p, t, p.trans, t.trans, mask, clamp=0.0), base, rtol=1e-4)
    # The frame loss compares absolute positions, so it is *not* invariant.
    assert abs(frame_loss(moved_pred, true, mask)[0] - frame_loss(pred, true, mask)[0]) > 1.0
    assert fape(pred, pred, pred.trans, pred.trans, mask) < 1e-3


def test_fape_mask_ignores_padding_and_clamp_bounds_error():
    B, L = 1, 10
    true = rigid.frames_from_backbone(*random_backbone(jax.random.PRNGKey(9), B, L))
    pred = rigid.frames_from_backbone(*random_backbone(jax.random.PRNGKey(10), B, L))
    mask = jnp.arange(L)[None] < 7
    garbage = rigid.Rigid(pred.rots, pred.trans.at[:, 7:].set(1e3))
    np.testing.assert_allclose(
        fape(garbage, true, garbage.trans, true.trans, mask), fape(pred, true, pred.trans, true.trans, mask), rtol=1e-6
    )
    assert fape(garbage, true, garbage.trans, true.trans) <= 10.0 + 1e-6


def test_igso3_angles_follow_folded_normal():
    sigma = 0.7
    R = sample_igso3(jax.random.PRNGKey(11), (40000,), sigma)
    assert_proper_rotations(R[:100])
    angle, _ = rigid.rotation_angle_between(R, jnp.broadcast_to(jnp.eye(3), R.shape))
    angle = np.asarray(angle, np.float64)
    # |N(0, σ²)|: mean σ·sqrt(2/π), second moment σ².
    assert abs(angle.mean() - sigma * np.sqrt(2 / np.pi)) < 0.01
    assert abs((angle**2).mean() - sigma**2) < 0.015
    # Median of a half-normal is σ·0.6745.
    assert abs(np.median(angle) - 0.6745 * sigma) < 0.01


def test_igso3_axis_is_uniform_on_the_sphere():
    omega = jnp.ones((20000,))
    axis_normal = jax.random.normal(jax.random.PRNGKey(12), (20000, 3))
    R = igso3_from_normals(0.5, omega, axis_normal)
    # Rotation axis from the antisymmetric part; its mean over uniform axes is ~0.
    axis = jnp.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], -1)
    axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    assert np.all(np.abs(np.asarray(axis.mean(0))) < 0.03)


def test_schedules_endpoints_and_reverse_steps():
    assert float(r3_alpha_bar(0.0)) == pytest.approx(1.0)
    assert float(r3_alpha_bar(1.0)) < 1e-6
    ab = np.asarray(r3_alpha_bar(jnp.linspace(0, 1, 50)))
    assert np.all(np.diff(ab) < 0)
    key = jax.random.PRNGKey(13)
    rots_t, pred = random_rotations(key, (50,)), random_rotations(jax.random.PRNGKey(14), (50,))
    # Stepping to t_next = 0 lands on the prediction; a step keeps rotations proper.
    np.testing.assert_allclose(so3_reverse_step(rots_t, pred, 0.5, 0.0), pred, atol=2e-4)
    assert_proper_rotations(so3_reverse_step(rots_t, pred, 0.5, 0.4))
    before, _ = rigid.rotation_angle_between(pred, rots_t)
    after, _ = rigid.rotation_angle_between(pred, so3_reverse_step(rots_t, pred, 0.5, 0.4))
    np.testing.assert_allclose(after, before * 0.8, atol=1e-3)
    x_t, x0 = jnp.ones((5, 3)), jnp.zeros((5, 3))
    noise = jnp.full((5, 3), 100.0)
    # No fresh noise on the final step.
    final = r3_reverse_step(x_t, x0, 0.01, 0.0, noise)
    assert np.all(np.abs(np.asarray(final)) < 1.0)


def test_vmap_equals_batched_call():
    B, L = 3, 8
    key = jax.random.PRNGKey(15)
    N, CA, C = random_backbone(key, B, L)
    frames = jax.jit(rigid.frames_from_backbone)(N, CA, C)
    vframes = jax.vmap(rigid.frames_from_backbone)(N, CA, C)
    np.testing.assert_allclose(frames.rots, vframes.rots, atol=1e-6)
    noise = draw_frame_noise(jax.random.PRNGKey(16), (B, L))
    t = jnp.array([0.1, 0.5, 0.9])
    batched = jax.jit(se3_forward_marginal)(frames, t, noise)
    per = jax.vmap(se3_forward_marginal)(frames, t, noise)
    np.testing.assert_allclose(batched.rots, per.rots, atol=1e-6)
    np.testing.assert_allclose(batched.trans, per.trans, atol=1e-5)
    # Losses reduce over the batch, so vmap over a leading axis of size-1 batches must equal
    # the per-structure values.
    pred = random_frames(jax.random.PRNGKey(17), (B, L))
    one = lambda p, t, ca_p, ca_t: fape(
        jax.tree_util.tree_map(lambda x: x[None], p), jax.tree_util.tree_map(lambda x: x[None], t), ca_p[None], ca_t[None]
    )
    vm = jax.vmap(one)(pred, frames, pred.trans, CA)
    loop = [fape(jax.tree_util.tree_map(lambda x: x[i:i + 1], pred), jax.tree_util.tree_map(lambda x: x[i:i + 1], frames),
                 pred.trans[i:i + 1], CA[i:i + 1]) for i in range(B)]
    np.testing.assert_allclose(vm, np.array(loop), rtol=1e-6)
    np.testing.assert_allclose(vm.mean(), fape(pred, frames, pred.trans, CA), rtol=1e-5)


def test_plddt_loss_has_no_gradient_into_coordinates():
    logits = jax.random.normal(jax.random.PRNGKey(18), (1, 6, 50))
    ca = jax.random.normal(jax.random.PRNGKey(19), (1, 6, 3))
    g = jax.grad(lambda x: plddt_loss(logits, x, jnp.zeros_like(x)))(ca)
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("theta", [1e-3, 0.05, 1.0, 3.1, 3.14])
def test_float32_rotation_angle_is_accurate_at_every_angle(theta):
    """In float32, arccos((tr R - 1)/2) loses ~ulp/sin θ near θ = 0 and π (6% at θ = 1e-3); the
    angle and its gradient must hold to float32 resolution of θ itself, against the exact angle."""
    axis = np.array([0.3, -0.5, 0.81])
    axis /= np.linalg.norm(axis)

    def angle_of(t, dtype):
        R = rigid.axis_angle_to_rotation(jnp.asarray(axis * t, dtype))
        return rigid.rotation_angle_between(R, jnp.eye(3, dtype=dtype))[0]

    truth = float(np.float32(theta))  # the angle of exp([θ·axis]×), for θ < π
    got = float(angle_of(np.float32(theta), jnp.float32))
    grad = float(jax.grad(angle_of)(np.float32(theta), jnp.float32))
    assert abs(got - truth) <= 1e-7 + 1e-6 * theta, (got, truth)
    assert abs(grad - 1.0) <= 1e-3, grad  # dθ/dθ through R
