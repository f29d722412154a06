"""Product SE(3) = SO(3) × R(3) diffusion: IGSO3 rotations on a linear sigma schedule,
translations on a cosine DDPM schedule.

Randomness is explicit: each noising function takes the standard normals it needs
(`*_from_normals`), and thin key-based wrappers draw them. That is what lets us replay the
reference's recorded draws exactly.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..geometry.rigid import (NORM_EPS, Rigid, antisymmetric_vector, axis_angle_to_rotation, masked_centroid,
                              quaternion_to_rotation, rotation_angle_between, safe_norm)

SO3_SIGMA_MAX = 1.5
# The rotation noise of the forward process: "reference" is the reference's angle |N(0,1)·σ|
# (a folded normal, which never approaches a uniform rotation); "igso3" draws the exact IGSO3(σ)
# angle by inverse CDF of its series density, and sampling then starts from uniform rotations.
ROTATION_NOISES = ("reference", "igso3")
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
# Exact IGSO3: series density, its CDF, and inverse-CDF sampling from a precomputed table
# ---------------------------------------------------------------------------------------------
#
# The isotropic Gaussian on SO(3) with parameter σ is the heat kernel at time σ²/2 (for small σ
# the rotation vector is ≈ N(0, σ² I₃)). Its angle ω ∈ [0, π] has the density
#
#   p(ω; σ) = (1 - cos ω)/π · Σ_l (2l+1) e^{-l(l+1)σ²/2} sin((l+½)ω) / sin(ω/2)
#           = (2/π) Σ_l (2l+1) e^{-l(l+1)σ²/2} sin(ω/2) sin((l+½)ω),
#
# (the expansion of FrameDiff, Yim et al. 2023, data/so3_diffuser.py; at σ → ∞ only l = 0 is left:
# the uniform-rotation angle density (1 - cos ω)/π). As 2 sin(ω/2) sin((l+½)ω) = cos(lω) -
# cos((l+1)ω), each term integrates in closed form, so the CDF is exact up to truncation:
#
#   F(ω; σ) = (1/π) Σ_l (2l+1) e^{-l(l+1)σ²/2} [sin(lω)/l - sin((l+1)ω)/(l+1)],  sin(0ω)/0 := ω.
#
# Sampling inverts F on a table of quantiles Q(u; σ)/σ over a log grid of σ and a uniform grid
# of u, interpolated bilinearly. Below the grid (σ < IGSO3_SIGMA_MIN) the angle distribution is
# the small-angle limit σ·χ₃ to O(σ²), so the lowest row is scaled by σ; above it (σ > 4) the
# density is uniform to ~1e-5 and the top row is used as is.

IGSO3_SIGMA_MIN = 0.02
IGSO3_SIGMA_MAX_GRID = 4.0
IGSO3_NUM_SIGMA = 160
IGSO3_NUM_U = 2049
_IGSO3_NUM_OMEGA = 4096


def _igso3_num_terms(sigma: float) -> int:
    # e^{-l(l+1)σ²/2} < e^{-50} beyond l = 10/σ.
    return int(min(5000, math.ceil(10.0 / sigma) + 2))


def igso3_angle_density(omega, sigma, num_terms=None):
    """p(ω; σ) of the IGSO3 rotation angle on [0, π] (numpy, float64; a scalar σ)."""
    omega = np.asarray(omega, np.float64)
    L = num_terms or _igso3_num_terms(float(sigma))
    l = np.arange(L, dtype=np.float64)
    coeff = (2 * l + 1) * np.exp(-l * (l + 1) * float(sigma) ** 2 / 2)
    terms = np.sin(np.multiply.outer(omega, l + 0.5)) * coeff
    return (2 / np.pi) * np.sin(omega / 2) * terms.sum(-1)


def igso3_angle_cdf(omega, sigma, num_terms=None):
    """F(ω; σ) = P(angle <= ω) of IGSO3(σ), in closed form term by term (numpy, float64)."""
    omega = np.asarray(omega, np.float64)
    L = num_terms or _igso3_num_terms(float(sigma))
    l = np.arange(L, dtype=np.float64)
    coeff = (2 * l + 1) * np.exp(-l * (l + 1) * float(sigma) ** 2 / 2)
    k = np.arange(L + 1, dtype=np.float64)
    # S_k = sin(kω)/k (S_0 = ω); term l is S_l - S_{l+1}.
    S = np.where(k > 0, np.sin(np.multiply.outer(omega, k)) / np.maximum(k, 1), omega[..., None])
    return ((S[..., :-1] - S[..., 1:]) * coeff).sum(-1) / np.pi


def uniform_rotation_angle_cdf(omega):
    """The angle CDF of a Haar-uniform rotation: (ω - sin ω)/π."""
    omega = np.asarray(omega, np.float64)
    return (omega - np.sin(omega)) / np.pi


def igso3_sigma_grid() -> np.ndarray:
    return np.geomspace(IGSO3_SIGMA_MIN, IGSO3_SIGMA_MAX_GRID, IGSO3_NUM_SIGMA)


# Where the table comes from when set (cli/compilation_cache.py: read back from disk beside the
# compiled programs, or computed and written there); this module stays pure and computes it
# itself otherwise. A source, not a table, so that nothing is read until a program needs it.
_table_source = None


def set_igso3_table_source(source) -> None:
    """Take the quantile table from `source()` (None: compute it here) at its first use."""
    global _table_source
    _table_source = source
    igso3_quantile_table.cache_clear()


@functools.lru_cache(maxsize=1)
def igso3_quantile_table() -> np.ndarray:
    """[IGSO3_NUM_SIGMA, IGSO3_NUM_U] quantiles Q(u; σ)/σ (float64), once per process: from the
    source set, else computed (1-4 s of numpy, paid at the first trace of a program that draws
    IGSO3 noise)."""
    table = _compute_igso3_quantile_table() if _table_source is None else np.asarray(_table_source())
    if table.shape != (IGSO3_NUM_SIGMA, IGSO3_NUM_U) or table.dtype != np.float64:
        raise ValueError(f"IGSO3 quantile table of shape {table.shape} and dtype {table.dtype}; "
                         f"expected {(IGSO3_NUM_SIGMA, IGSO3_NUM_U)} float64")
    return table


def _compute_igso3_quantile_table() -> np.ndarray:
    """Q(u; σ)/σ on the grid, by interpolating each σ's CDF series (igso3_angle_cdf) inverted."""
    u = np.linspace(0.0, 1.0, IGSO3_NUM_U)
    rows = []
    for sigma in igso3_sigma_grid():
        # The mass lies below ~8σ for small σ: put the ω grid where it is.
        hi = min(math.pi, 12.0 * sigma)
        omega = np.linspace(0.0, hi, _IGSO3_NUM_OMEGA)
        cdf = np.maximum.accumulate(np.clip(igso3_angle_cdf(omega, sigma), 0.0, 1.0))
        cdf = cdf / cdf[-1]
        # np.interp needs increasing abscissae: drop the flat (float-saturated) stretches.
        keep = np.concatenate([[True], np.diff(cdf) > 0])
        rows.append(np.interp(u, cdf[keep], omega[keep]) / sigma)
    return np.stack(rows)


def igso3_angle_from_uniform(sigma, u):
    """The IGSO3(σ) angle at quantile u ∈ [0, 1] (inverse CDF); σ and u broadcast. Jittable."""
    dtype = jnp.result_type(u, jnp.float32)
    table = jnp.asarray(igso3_quantile_table(), dtype)
    sigma = jnp.asarray(sigma, dtype)
    u = jnp.clip(jnp.asarray(u, dtype), 0.0, 1.0)
    sigma, u = jnp.broadcast_arrays(sigma, u)
    lo, hi = IGSO3_SIGMA_MIN, IGSO3_SIGMA_MAX_GRID
    s = jnp.clip(sigma, lo, hi)
    x = (jnp.log(s) - math.log(lo)) / (math.log(hi) - math.log(lo)) * (IGSO3_NUM_SIGMA - 1)
    i = jnp.clip(jnp.floor(x), 0, IGSO3_NUM_SIGMA - 2).astype(jnp.int32)
    wx = x - i
    y = u * (IGSO3_NUM_U - 1)
    j = jnp.clip(jnp.floor(y), 0, IGSO3_NUM_U - 2).astype(jnp.int32)
    wy = y - j
    q = ((1 - wx) * (1 - wy) * table[i, j] + (1 - wx) * wy * table[i, j + 1]
         + wx * (1 - wy) * table[i + 1, j] + wx * wy * table[i + 1, j + 1])
    # Q/σ is tabulated: below the grid the small-angle limit scales the lowest row by σ; above
    # it the (uniform) top row is the angle itself.
    return jnp.clip(jnp.minimum(sigma, hi) * q, 0.0, math.pi)


def igso3_exact_from_normals(sigma, omega_normal, axis_normal):
    """An exact IGSO3(σ) rotation: angle by inverse CDF at u = Φ(omega_normal) (Φ the standard
    normal CDF, so u ~ U[0, 1]), axis the direction of `axis_normal` (uniform on the sphere).

    It consumes the same normals as `igso3_from_normals`, so the recorded draws keep their shape.
    """
    u = jax.scipy.special.ndtr(omega_normal)
    omega = igso3_angle_from_uniform(sigma, u)
    axis = axis_normal / (safe_norm(axis_normal) + NORM_EPS)
    return axis_angle_to_rotation(axis * omega[..., None])


def uniform_rotation_from_normals(omega_normal, axis_normal):
    """A Haar-uniform rotation from four standard normals (the quaternion (ω, axis) normalised):
    the t = 1 prior of IGSO3 diffusion, which IGSO3(σ) approaches as σ grows."""
    return quaternion_to_rotation(jnp.concatenate([omega_normal[..., None], axis_normal], axis=-1))


# ---------------------------------------------------------------------------------------------
# SO(3): linear sigma schedule
# ---------------------------------------------------------------------------------------------


def so3_sigma(t, sigma_max=SO3_SIGMA_MAX):
    return t * sigma_max


def so3_forward_marginal(rots_0, t, omega_normal, axis_normal, sigma_max=SO3_SIGMA_MAX,
                         rotation_noise="reference"):
    """Noisy rotations R_t = R_noise @ R_0, R_noise ~ IGSO3(σ(t)). t broadcasts to rots' batch.

    rotation_noise "reference": the reference's angle |N(0,1)·σ|; "igso3": the exact IGSO3 angle.
    """
    if rotation_noise == "igso3":
        noise = igso3_exact_from_normals(so3_sigma(t, sigma_max), omega_normal, axis_normal)
    elif rotation_noise == "reference":
        noise = igso3_from_normals(so3_sigma(t, sigma_max), omega_normal, axis_normal)
    else:
        raise ValueError(f"rotation_noise must be one of {ROTATION_NOISES}, got {rotation_noise!r}")
    return noise @ rots_0


def so3_reverse_step(rots_t, pred_rots_0, t_now, t_next, sigma_max=SO3_SIGMA_MAX):
    """Move R_t towards the predicted R_0 along the geodesic by the fraction 1 - σ_next/σ_now.

    Deterministic, as in the reference. At σ_now < 1e-8 the prediction is returned as is.
    """
    sigma_now = t_now * sigma_max
    sigma_next = t_next * sigma_max
    interp = 1.0 - sigma_next / (sigma_now + 1e-8)
    angle, rel = rotation_angle_between(pred_rots_0, rots_t)
    axis = antisymmetric_vector(rel)
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


def r3_reverse_step(trans_t, pred_trans_0, t_now, t_next, normal, eta=None):
    """One reverse step of the translations from t_now to t_next < t_now.

    eta None: the reference's step, the DDIM mean from the implied noise plus
    sqrt(max(1 - ᾱ_next/ᾱ_now, 1e-8)) fresh noise when t_next > 0. That β is negative at every
    reverse step (ᾱ grows as t falls), so the noise is always the clamp's 1e-4: in effect DDIM.
    eta a number: DDIM(η) (Song et al. 2021, eq. 12) with the posterior standard deviation
    σ = η · sqrt((1 - ᾱ_next)/(1 - ᾱ_now)) · sqrt(1 - ᾱ_now/ᾱ_next): η = 0 is deterministic,
    η = 1 is DDPM's ancestral sampler; the last step (t_next = 0) adds no noise either way.
    """
    ab_now, ab_next = r3_alpha_bar(t_now), r3_alpha_bar(t_next)
    noise_est = (trans_t - jnp.sqrt(ab_now) * pred_trans_0) / (jnp.sqrt(1 - ab_now) + 1e-8)
    if eta is None:
        mean = jnp.sqrt(ab_next) * pred_trans_0 + jnp.sqrt(1 - ab_next) * noise_est
        beta = 1 - ab_next / ab_now
        noisy = mean + jnp.sqrt(jnp.maximum(beta, 1e-8)) * normal
        return jnp.where(t_next > 0, noisy, mean)
    var = eta**2 * (1 - ab_next) / (1 - ab_now) * (1 - ab_now / ab_next)
    var = jnp.clip(var, 0.0, 1 - ab_next)
    mean = jnp.sqrt(ab_next) * pred_trans_0 + jnp.sqrt(1 - ab_next - var) * noise_est
    return jnp.where(t_next > 0, mean + jnp.sqrt(var) * normal, mean)


# ---------------------------------------------------------------------------------------------
# SE(3)
# ---------------------------------------------------------------------------------------------


def se3_forward_marginal(frames: Rigid, t, noise: FrameNoise, sigma_max=SO3_SIGMA_MAX,
                         rotation_noise="reference") -> Rigid:
    """Noise clean frames [..., L] to time t [...] (one t per structure, shared by its residues)."""
    t_res = jnp.broadcast_to(jnp.asarray(t)[..., None], frames.trans.shape[:-1])
    rots = so3_forward_marginal(frames.rots, t_res, noise.rot_omega, noise.rot_axis, sigma_max,
                                rotation_noise)
    trans = r3_forward_marginal(frames.trans, t_res, noise.trans)
    return Rigid(rots, trans)


def se3_reverse_step(frames_t: Rigid, pred_0: Rigid, t_now, t_next, trans_normal,
                     sigma_max=SO3_SIGMA_MAX, eta=None) -> Rigid:
    return Rigid(
        so3_reverse_step(frames_t.rots, pred_0.rots, t_now, t_next, sigma_max),
        r3_reverse_step(frames_t.trans, pred_0.trans, t_now, t_next, trans_normal, eta),
    )


# ---------------------------------------------------------------------------------------------
# The diffusion space of translations: centred and scaled
# ---------------------------------------------------------------------------------------------


def to_diffusion_space(frames: Rigid, mask=None, center=False, scale=1.0) -> Rigid:
    """Frames [..., L] in Å -> the space translations are diffused in: the CA centroid over the
    residues in `mask` subtracted (if `center`; padding then stays at the origin), times `scale`.
    center=False, scale=1.0 returns the frames unchanged (the reference)."""
    trans = frames.trans
    if center:
        trans = trans - masked_centroid(trans, mask)[..., None, :]
        if mask is not None:
            trans = trans * mask.astype(trans.dtype)[..., None]
    if scale != 1.0:
        trans = trans * scale
    return Rigid(frames.rots, trans)


def from_diffusion_space(frames: Rigid, scale=1.0) -> Rigid:
    """Back to Å: translations divided by `scale` (the inverse of to_diffusion_space, up to the
    centring, which is not undone: the result is centred where the input was)."""
    if scale == 1.0:
        return frames
    return Rigid(frames.rots, frames.trans / scale)
