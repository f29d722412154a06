"""Product SE(3) = SO(3) × R(3) diffusion: IGSO3 rotations on a linear sigma schedule,
translations on a cosine DDPM schedule.

Randomness is explicit: each noising function takes the standard normals it needs
(`*_from_normals`), and thin key-based wrappers draw them. That is what lets us replay the
reference's recorded draws exactly.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..geometry.rigid import NORM_EPS, Rigid, axis_angle_to_rotation, rotation_angle_between, safe_norm

SO3_SIGMA_MAX = 1.5
R3_COSINE_S = 0.008


class FrameNoise(NamedTuple):
    """The standard normals one forward-noising of frames [..., L] consumes."""

    rot_omega: jnp.ndarray  # [..., L]      angle normal, scaled by sigma(t)
    rot_axis: jnp.ndarray  # [..., L, 3]    axis direction normal
    trans: jnp.ndarray  # [..., L, 3]       translation normal


def draw_frame_noise(key, shape, dtype=jnp.float32) -> FrameNoise:
    k1, k2, k3 = jax.random.split(key, 3)
    return FrameNoise(
        jax.random.normal(k1, shape, dtype),
        jax.random.normal(k2, (*shape, 3), dtype),
        jax.random.normal(k3, (*shape, 3), dtype),
    )


# ---------------------------------------------------------------------------------------------
# IGSO3
# ---------------------------------------------------------------------------------------------


def igso3_from_normals(sigma, omega_normal, axis_normal):
    """Rotation with angle |ω·σ| about the direction of `axis_normal` (Rodrigues).

    sigma broadcasts against omega_normal [...]; axis_normal is [..., 3].
    """
    omega = jnp.abs(omega_normal * sigma)
    axis = axis_normal / (safe_norm(axis_normal) + NORM_EPS)
    return axis_angle_to_rotation(axis * omega[..., None])


def sample_igso3(key, shape, sigma, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return igso3_from_normals(
        sigma, jax.random.normal(k1, shape, dtype), jax.random.normal(k2, (*shape, 3), dtype)
    )


# ---------------------------------------------------------------------------------------------
# SO(3): linear sigma schedule
# ---------------------------------------------------------------------------------------------


def so3_sigma(t, sigma_max=SO3_SIGMA_MAX):
    return t * sigma_max


def so3_forward_marginal(rots_0, t, omega_normal, axis_normal, sigma_max=SO3_SIGMA_MAX):
    """Noisy rotations R_t = R_noise @ R_0, R_noise ~ IGSO3(σ(t)). t broadcasts to rots' batch."""
    noise = igso3_from_normals(so3_sigma(t, sigma_max), omega_normal, axis_normal)
    return noise @ rots_0


def so3_reverse_step(rots_t, pred_rots_0, t_now, t_next, sigma_max=SO3_SIGMA_MAX):
    """Move R_t towards the predicted R_0 along the geodesic by the fraction 1 - σ_next/σ_now.

    Deterministic, as in the reference. At σ_now < 1e-8 the prediction is returned as is.
    """
    sigma_now = t_now * sigma_max
    sigma_next = t_next * sigma_max
    interp = 1.0 - sigma_next / (sigma_now + 1e-8)
    angle, rel = rotation_angle_between(pred_rots_0, rots_t)
    axis = jnp.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]],
        axis=-1,
    )
    axis = axis / (safe_norm(axis) + NORM_EPS)
    stepped = axis_angle_to_rotation(axis * (angle * interp)[..., None]) @ rots_t
    return jnp.where(sigma_now < 1e-8, pred_rots_0, stepped)


# ---------------------------------------------------------------------------------------------
# R(3): cosine DDPM schedule
# ---------------------------------------------------------------------------------------------


def r3_alpha_bar(t, s=R3_COSINE_S):
    t = jnp.asarray(t)
    f_t = jnp.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    f_0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f_t / f_0


def r3_forward_marginal(trans_0, t, normal):
    """x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε; t [...] broadcasts over the trailing xyz axis."""
    ab = r3_alpha_bar(t)[..., None]
    return jnp.sqrt(ab) * trans_0 + jnp.sqrt(1 - ab) * normal


def r3_reverse_step(trans_t, pred_trans_0, t_now, t_next, normal):
    """DDIM-style mean from the implied noise, plus sqrt(1 - ᾱ_next/ᾱ_now) fresh noise when
    t_next > 0 (no noise on the last step)."""
    ab_now, ab_next = r3_alpha_bar(t_now), r3_alpha_bar(t_next)
    noise_est = (trans_t - jnp.sqrt(ab_now) * pred_trans_0) / (jnp.sqrt(1 - ab_now) + 1e-8)
    mean = jnp.sqrt(ab_next) * pred_trans_0 + jnp.sqrt(1 - ab_next) * noise_est
    beta = 1 - ab_next / ab_now
    noisy = mean + jnp.sqrt(jnp.maximum(beta, 1e-8)) * normal
    return jnp.where(t_next > 0, noisy, mean)


# ---------------------------------------------------------------------------------------------
# SE(3)
# ---------------------------------------------------------------------------------------------


def se3_forward_marginal(frames: Rigid, t, noise: FrameNoise) -> Rigid:
    """Noise clean frames [..., L] to time t [...] (one t per structure, shared by its residues)."""
    t_res = jnp.broadcast_to(jnp.asarray(t)[..., None], frames.trans.shape[:-1])
    rots = so3_forward_marginal(frames.rots, t_res, noise.rot_omega, noise.rot_axis)
    trans = r3_forward_marginal(frames.trans, t_res, noise.trans)
    return Rigid(rots, trans)


def se3_reverse_step(frames_t: Rigid, pred_0: Rigid, t_now, t_next, trans_normal) -> Rigid:
    return Rigid(
        so3_reverse_step(frames_t.rots, pred_0.rots, t_now, t_next),
        r3_reverse_step(frames_t.trans, pred_0.trans, t_now, t_next, trans_normal),
    )
